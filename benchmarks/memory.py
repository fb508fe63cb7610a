"""Peak resident memory over a 500-image ``logitshift evaluate`` run.

Goal (issue 5): the peak RSS stays flat, within 5%, from image 100 to image
500, i.e. memory does not grow with the number of images evaluated.

1. Writes ``--images`` distinct JPEGs to a temporary folder: random crops
   (40–100% of the side), mirror flips and sizes of the 8 scikit-image samples.
2. Runs :func:`logitshift.runs.evaluate.run_evaluate` on them in this process
   (batch 16, 2 decoding workers, ``gradcam`` × ``logit``/``prob`` ×
   original/shifted, plus one extra class), recording after every committed
   batch the process's peak RSS (``VmHWM``) and current RSS (``VmRSS``) from
   ``/proc/self/status``, and the RSS of the decoding workers.
3. Prints the peak at image 100 and at image 500 and their ratio.

Models: the default EfficientNet-Lite0 and torchvision ``resnet18`` (random
weights, given to the command as ``__main__:resnet18_random``).

Run: ``.venv/bin/python benchmarks/memory.py [--models ...] [--images 500]``
(writes ``benchmarks/results/memory.md``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from logitshift.runs.evaluate import EvalConfig, run_evaluate  # noqa: E402


def resnet18_random():
    from logitshift.core.models import torchvision_model

    torch.manual_seed(0)
    return torchvision_model("resnet18", random_init=True)


MODELS = {"efficientnet-lite0": "efficientnet-lite0", "resnet18": "__main__:resnet18_random"}
GOAL = 1.05  # the most the peak may grow from image --from-image to the last


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    from logitshift.core.images import SAMPLES, sample_array

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(sample_array(s)) for s in SAMPLES]
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((int(rng.integers(240, 400)),) * 2)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"img{i:04d}.jpg", quality=90)


def status_kb(pid: int | str = "self") -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def reset_peak() -> None:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def children_rss_kb() -> int:
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in kids:
            try:
                total += status_kb(pid).get("VmRSS", 0)
            except OSError:
                pass
    return total


def measure(model: str, folder: Path, n: int, batch: int, workers: int) -> dict:
    trace: list[tuple[int, int, int, int]] = []  # images done, peak kB, rss kB, workers' rss kB

    def on_batch(done: int) -> None:
        s = status_kb()
        trace.append((done, s["VmHWM"], s["VmRSS"], children_rss_kb()))

    reset_peak()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        cfg = EvalConfig(
            images=[str(folder)],
            out=out,
            model=MODELS[model],
            methods=["gradcam"],
            scores=["logit", "prob"],
            classes=["646"],
            batch_size=batch,
            workers=workers,
            progress=True,
            plots=True,
            float64_head=True,  # random weights give large activations, so large |t|: keep the probabilities equal
            goal=0.0,  # memory, not the effect: never refused for a random model's weak effect
        )
        summary = run_evaluate(cfg, on_batch=on_batch)
        seconds = time.perf_counter() - start
    after = status_kb()

    def at(k: int) -> tuple[int, int, int, int]:
        return next(t for t in trace if t[0] >= k)

    return {"trace": trace, "seconds": seconds, "rows": summary["rows"], "final_peak": after["VmHWM"], "at": at}


def finding(peaks: dict[str, tuple[int, int]], first: int, last: int) -> str:
    """The benchmark's result in one paragraph, first in the page; ``peaks``: model → peak kB at images ``first`` and ``last``."""
    flat = sum(hi / lo <= GOAL for lo, hi in peaks.values())
    each = ", ".join(f"{m} {lo / 1024:.0f} → {hi / 1024:.0f} MiB (× {hi / lo:.3f})" for m, (lo, hi) in peaks.items())
    return (
        f"**Finding:** from image {first} to image {last} the peak resident set grows by at most × {GOAL:g} (the goal) on {flat} "
        f"of {len(peaks)} models: {each}."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--from-image", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "# Memory: peak resident set over a long `logitshift evaluate` run",
        "",
        f"`python benchmarks/memory.py {' '.join(sys.argv[1:])}`: {args.images} JPEGs (random crops / flips of the "
        f"samples), batch {args.batch_size}, {args.workers} decoding workers, gradcam × logit/prob × original/shifted "
        f"× (top-1 + class 646), region shift (top-left, float64 head), {args.threads} threads, torch {torch.__version__}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}. Peak = `VmHWM` of the main process after the batch that reaches that image.",
        "",
        f"| model | peak MiB at image {args.from_image} | peak MiB at image {args.images} | ratio | goal ≤ {GOAL:g} | "
        "RSS MiB at the end of the loop | workers' RSS MiB | peak after summary + plots | rows | seconds |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    peaks: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_images(folder, args.images)
        for model in args.models:
            r = measure(model, folder, args.images, args.batch_size, args.workers)
            _, lo, _, _ = r["at"](args.from_image)
            _, hi, rss, kids = r["trace"][-1]
            ratio = hi / lo
            peaks[model] = (lo, hi)
            lines.append(
                f"| {model} | {lo / 1024:.0f} | {hi / 1024:.0f} | {ratio:.3f} | {'✓' if ratio <= GOAL else '✗'} | "
                f"{rss / 1024:.0f} | {kids / 1024:.0f} | {r['final_peak'] / 1024:.0f} | {r['rows']} | {r['seconds']:.0f} |"
            )
            print(lines[-1], flush=True)
            steps = [t for t in r["trace"] if t[0] in (16, 32) or t[0] % 100 < args.batch_size]
            print("  images, peak MiB, RSS MiB: " + "; ".join(f"{d} {p / 1024:.0f} {s / 1024:.0f}" for d, p, s, _ in steps), flush=True)
    lines[2:2] = [finding(peaks, args.from_image, args.images), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
