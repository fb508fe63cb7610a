"""How long the command line takes to answer before any work: ``--help``, ``--version`` (issue 30).

Goal: ``logitshift --help``, ``logitshift demo --help`` and ``logitshift --version``
each take less than a third of ``python -c "import torch"`` on the same machine,
because the command line parses its flags before importing torch and friends.

Each command runs ``--repeat`` times (default 5) as a fresh process, interleaved
(one of each per round, so that a busy spell hits every command alike); the
median wall-clock time of each is compared with the median of the torch import.
The load average before and after is recorded (the machine is shared).

Run: ``.venv/bin/python benchmarks/startup.py [--repeat 5]`` (writes ``benchmarks/results/startup.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1 / 3  # the most a command may take, as a fraction of the torch import

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "logitshift --help": [sys.executable, "-m", "logitshift", "--help"],
    "logitshift demo --help": [sys.executable, "-m", "logitshift", "demo", "--help"],
    "logitshift --version": [sys.executable, "-m", "logitshift", "--version"],
}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/startup.md"))
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for argv in COMMANDS.values():  # warm the file cache once, not timed
        timed(argv, env)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            times[name].append(timed(argv, env))
    load_after = os.getloadavg()
    median = {name: statistics.median(t) for name, t in times.items()}
    torch_s = median['python -c "import torch"']
    rows = []
    for name, t in times.items():
        ratio = median[name] / torch_s
        ok = "" if name.startswith("python") else ("✓" if ratio < GOAL else "✗")
        rows.append(f"| `{name}` | {median[name]:.3f} | {min(t):.3f} | {max(t):.3f} | {ratio:.3f} | {ok} |")
    worst = max(median[n] / torch_s for n in COMMANDS if not n.startswith("python"))
    import torch

    text = (
        "# Startup: how long the command line takes to answer\n\n"
        f"The slowest of `logitshift --help`, `logitshift demo --help`, `logitshift --version` takes {worst:.3f}× "
        f'the time of `python -c "import torch"` ({torch_s:.2f} s), goal < {GOAL:.3f}: '
        f"{'met' if worst < GOAL else 'NOT met'}.\n\n"
        f"`python benchmarks/startup.py --repeat {args.repeat}`: each command a fresh process, {args.repeat} rounds interleaved, "
        f"median wall-clock seconds; torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), load average {load_before[0]:.2f} before and {load_after[0]:.2f} after, "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        "| command | median s | min s | max s | × torch import | goal < 1/3 |\n|---|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
