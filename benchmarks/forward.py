"""Beyond the eager floor on CPU: channels_last and torch.compile (inductor) at dataset scale.

Two workloads on EfficientNet-Lite0 (real weights), ``--images`` images
(default 208: 13 batches of 16, as ``logitshift evaluate`` runs them):

* **forward**: one no-grad forward per batch (the floor under every method);
* **evaluate batch**: what ``evaluate`` runs per batch by default —
  :func:`logitshift.attribution.engine.explain` of Grad-CAM × (logit, prob) × (original,
  shifted) on the region-shifted model: one forward + one backward to the layer.

Configurations: eager (the default), ``channels_last`` (model and input in
NHWC memory format), and ``torch.compile`` (inductor) of the base model. The
batches of the configurations are interleaved (batch 1 of each, then batch 2
…), so load on a shared machine hits them alike. Reported: images/s including
the first call (compile time and all), steady-state images/s (batches after
the first), and the compile time itself. Written to
``benchmarks/results/forward.md``.

Run: ``.venv/bin/python benchmarks/forward.py [--images 208] [--threads 2] [--note "under load"]``
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from logitshift.attribution import GradCAM  # noqa: E402
from logitshift.attribution.engine import explain  # noqa: E402
from logitshift.core.capture import layer_grid  # noqa: E402
from logitshift.core.images import SAMPLES, load_image  # noqa: E402
from logitshift.core.models import load_model  # noqa: E402
from logitshift.core.targets import parse_target  # noqa: E402
from logitshift.shift.steer import shift_model  # noqa: E402


def dataset(loaded, n: int) -> torch.Tensor:
    base = [load_image(s, loaded.preprocess).tensor for s in SAMPLES]
    xs = base + [t.flip(-1) for t in base]
    while len(xs) < n:
        xs = xs + [t.roll(len(xs) % 17, dims=-1) for t in xs]
    return torch.stack(xs[:n])


def finding(speeds: list[dict], images: int) -> str:
    """The benchmark's result in one paragraph, first in the page: each configuration against eager, per workload.

    ``speeds``: ``work``, ``config``, images/s ``whole`` (first batch included) and ``steady`` (after it), the seconds of
    a steady batch ``batch_s`` and the first batch's ``first_extra`` seconds, one per measured workload × configuration.
    A configuration's first-batch cost is named where it exceeds a steady batch's time (compile, not noise).
    """
    eager = {s["work"]: s for s in speeds if s["config"] == "eager"}
    others = [s for s in speeds if s["config"] != "eager" and s["work"] in eager]
    if not others:
        return "**Finding:** no configuration could be compared with eager."
    configs = list(dict.fromkeys(s["config"] for s in others))

    def against_eager(key: str) -> str:
        return ", ".join(
            " and ".join(f"{s[key] / eager[s['work']][key]:.2f} × ({s['work']})" for s in others if s["config"] == c) + f" with {c}"
            for c in configs
        )

    def extra(c: str) -> str:
        return " and ".join(f"{s['first_extra']:.1f}" for s in others if s["config"] == c) + " s"

    costly = [c for c in configs if any(s["first_extra"] > s["batch_s"] for s in others if s["config"] == c)]
    upfront = ", ".join(f"{c} {extra(c)}" for c in costly)
    return (
        f"**Finding:** against eager, steady images/s (after batch 1) is {against_eager('steady')}; over the whole {images} "
        f"images, the first batch included, {against_eager('whole')}" + (f" (the first batch's extra time: {upfront})." if upfront else ".")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=208)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["eager", "channels_last", "compile"])
    ap.add_argument("--workloads", nargs="+", default=["forward", "evaluate batch"])
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forward.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    x_all = None
    models = {}
    for cfg in args.configs:
        loaded = load_model()
        if x_all is None:
            x_all = dataset(loaded, args.images)
        module = loaded.module.eval()
        if cfg == "channels_last":
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        fwd = torch.compile(module) if cfg == "compile" else module
        target = parse_target("top-left", 224, layer_grid(loaded.module, loaded.layer, x_all[:1]))
        shifted = shift_model(module, loaded.layer, "region", 0.1, target)
        models[cfg] = (fwd, shifted, loaded.layer)
    batches = [x_all[i : i + args.batch_size] for i in range(0, args.images, args.batch_size)]

    def run(cfg: str, work: str, x: torch.Tensor) -> None:
        fwd, shifted, layer = models[cfg]
        if cfg == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        if work == "forward":
            with torch.no_grad():
                fwd(x)
        else:
            if cfg == "compile":
                # the engine's hooks and the shift head around a compiled trunk
                shifted.base = fwd
                try:
                    explain(shifted, x, "_orig_mod." + layer, [GradCAM()], ["logit", "prob"], ("original", "shifted"))
                finally:
                    shifted.base = fwd._orig_mod
            else:
                explain(shifted, x, layer, [GradCAM()], ["logit", "prob"], ("original", "shifted"))

    rows: list[str] = []
    speeds: list[dict] = []  # one per measured workload × configuration, for the finding

    def write() -> None:
        lines = [
            "# Beyond the eager floor: channels_last and torch.compile on CPU",
            "",
            finding(speeds, args.images),
            "",
            f"`python benchmarks/forward.py {' '.join(sys.argv[1:])}`: EfficientNet-Lite0, {args.images} images of 224×224 in "
            f"batches of {args.batch_size}, torch {torch.__version__}, {args.threads} threads, CPU "
            f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}; configurations interleaved batch by batch."
            + (f" **{args.note}**." if args.note else ""),
            "",
            "| workload | configuration | images/s, whole run (compile included) | images/s, steady (after batch 1) | steady vs eager | first batch's extra seconds (compile) |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
        text = "\n".join(lines)
        print(text, flush=True)
        Path(args.out).write_text(text)

    for work in args.workloads:
        times: dict[str, list[float]] = {c: [] for c in args.configs}
        failed: dict[str, str] = {}
        for b in batches:
            for cfg in args.configs:
                if cfg in failed:
                    continue
                t = time.perf_counter()
                try:
                    run(cfg, work, b)
                except Exception as exc:  # noqa: BLE001 - report what does not work
                    failed[cfg] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                    continue
                times[cfg].append(time.perf_counter() - t)
            print(f"{work}: batch {len(times[args.configs[0]])}/{len(batches)}", file=sys.stderr, flush=True)
        for cfg in args.configs:
            if cfg in failed:
                rows.append(f"| {work} | {cfg} | failed: {failed[cfg]} | | | |")
                continue
            ts = times[cfg]
            total = sum(ts)
            steady = len(batches[1:]) and sum(len(b) for b in batches[1:]) / sum(ts[1:])
            eager_steady = (
                sum(len(b) for b in batches[1:]) / sum(times["eager"][1:]) if "eager" in times and times["eager"] else float("nan")
            )
            batch_s = sum(ts[1:]) / len(ts[1:])
            first_extra = ts[0] - batch_s
            speeds.append(
                {
                    "work": work,
                    "config": cfg,
                    "whole": args.images / total,
                    "steady": steady,
                    "batch_s": batch_s,
                    "first_extra": first_extra,
                }
            )
            rows.append(f"| {work} | {cfg} | {args.images / total:.1f} | {steady:.1f} | {steady / eager_steady:.2f} | {first_extra:.1f} |")
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
