"""Peak resident memory and time of the default ``logitshift matrix`` (four samples), against the commit before issue 30.

Goal (issue 30): the default matrix peaks at ≤ 1.5 GB resident and takes ≤ 1.1× the time of
commit 6f4866e, where Integrated Gradients and SmoothGrad points went through the model in
chunks of 32 rows (sized for speed only); now a chunk holds what ``--memory-budget`` allows
(:func:`logitshift.attribution.base.chunk_rows`).

Each run is a fresh child under GNU ``/usr/bin/time -v`` (peak RSS = "Maximum resident set
size"; wall clock; CPU = user + sys, which a busy shared machine disturbs less than wall clock),
interleaved base/new for ``--repeat`` rounds. Runs:

* ``base``: commit 6f4866e (``git worktree add /tmp/base-cli 6f4866e``, on ``PYTHONPATH``),
  ``run_matrix(MatrixConfig(...))`` with its defaults (fixed strengths CAM 1 / input 100);
* ``new, same strengths``: this checkout, the same call and the same strengths (``strength=None``):
  the memory budget's effect alone;
* ``new, command default`` (``--with-default``): ``logitshift matrix`` as a user types it now
  (strength auto, 0.9 of the way to the plateau: more work than the base).

Run: ``.venv/bin/python benchmarks/matrix_memory.py [--repeat 1] [--with-default]``
(writes ``benchmarks/results/matrix_memory.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "6f4866e"
BASE_TREE = Path("/tmp/base-cli")
GOAL_GB, GOAL_TIME = 1.5, 1.1

CALL = (
    "import sys; from logitshift.runs.matrix import MatrixConfig, run_matrix; "
    "run_matrix(MatrixConfig(out=sys.argv[1], force=True, progress=False, device='cpu', strength=None))"
)


def base_tree() -> Path:
    if not (BASE_TREE / "src" / "logitshift").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(BASE_TREE), BASE_COMMIT], check=True)
    return BASE_TREE


def timed(argv: list[str], src: Path) -> dict[str, float]:
    """Peak RSS (GB), wall and CPU seconds of one child run."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["/usr/bin/time", "-v", *argv, str(Path(tmp) / "run")], env=env, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        raise SystemExit(f"{argv}: exit {proc.returncode}\n{proc.stderr[-2000:]}")

    def field(name: str) -> str:
        m = re.search(rf"{re.escape(name)}: (.+)", proc.stderr)
        assert m, name
        return m.group(1).strip()

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return {"peak_gb": int(field("Maximum resident set size (kbytes)")) / 2**20, "wall_s": seconds, "cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--with-default", action="store_true", help="also time `logitshift matrix` with today's default strength (auto)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/matrix_memory.md"))
    args = ap.parse_args()
    python = sys.executable
    runs = {
        f"base {BASE_COMMIT}": ([python, "-c", CALL], base_tree() / "src"),
        "new, same strengths": ([python, "-c", CALL], ROOT / "src"),
    }
    if args.with_default:
        runs["new, command default (auto)"] = (
            [python, "-m", "logitshift", "matrix", "--no-progress", "--device", "cpu", "--force", "--out"],
            ROOT / "src",
        )
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, (argv, src) in runs.items():
            results[name].append(timed(argv, src))
            print(name, results[name][-1], flush=True)
    load_after = os.getloadavg()
    best = {name: {k: min(r[k] for r in rs) for k in ("peak_gb", "wall_s", "cpu_s")} for name, rs in results.items()}
    base = best[f"base {BASE_COMMIT}"]
    new = best["new, same strengths"]
    ok_mem, ok_cpu, ok_wall = (
        new["peak_gb"] <= GOAL_GB,
        new["cpu_s"] <= GOAL_TIME * base["cpu_s"],
        new["wall_s"] <= GOAL_TIME * base["wall_s"],
    )
    rows = [
        f"| {name} | {b['peak_gb']:.2f} | {b['wall_s']:.0f} | {b['cpu_s']:.0f} | {b['wall_s'] / base['wall_s']:.2f} | {b['cpu_s'] / base['cpu_s']:.2f} |"
        for name, b in best.items()
    ]
    import torch

    from logitshift.core.names import DEFAULT_MEMORY_BUDGET_GB

    text = (
        "# Memory: peak resident set of the default `logitshift matrix`\n\n"
        f"The default matrix (four samples, same strengths) peaks at {new['peak_gb']:.2f} GB resident against {base['peak_gb']:.2f} GB "
        f"at {BASE_COMMIT} (goal ≤ {GOAL_GB} GB: {'met' if ok_mem else 'NOT met'}), in {new['cpu_s'] / base['cpu_s']:.2f}× the CPU time "
        f"and {new['wall_s'] / base['wall_s']:.2f}× the wall-clock time (goal ≤ {GOAL_TIME}×: "
        f"{'met' if ok_cpu else 'NOT met'} in CPU time, {'met' if ok_wall else 'NOT met'} in wall-clock time).\n\n"
        f"`python benchmarks/matrix_memory.py --repeat {args.repeat}{' --with-default' if args.with_default else ''}`: each run a fresh "
        f"child under GNU time, runs interleaved, best of {args.repeat}; default --memory-budget {DEFAULT_MEMORY_BUDGET_GB:g} GB; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other jobs: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        f"(wall-clock times are disturbed by the load; CPU time less so), {time.strftime('%Y-%m-%d %H:%M')}.\n\n"
        "| run | peak RSS GB | wall s | CPU s | wall × base | CPU × base |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
