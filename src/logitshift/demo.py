"""``logitshift demo``: the paper's experiment end to end, on a real ImageNet model.

For each image and each class (its prediction, plus any ``--class``), one
forward pass gives the original and the shifted logits; four Grad-CAM maps
(original/shifted × pre-/post-softmax) come from that pass. Writes one 2×2
figure per (image, class) and ``summary.json`` with the equivalence figures
and, per map, ``target_mass`` and ``spearman_vs_original``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .attribution import GradCAM, forward_pass, normalize, predicted, upsample
from .classes import class_name, resolve_class
from .files import provenance, run_dir, write_json
from .images import DEFAULT_SAMPLES, batch, load_image
from .metrics import spearman, target_mass
from .models import get_layer, load_model
from .figures import paper_figure
from .shift import DEFAULT_STRENGTH, ShiftSetup, compare, layer_grid, shift_model
from .targets import parse_target

MAPS = ("original_logit", "original_prob", "shifted_logit", "shifted_prob")


@dataclass(kw_only=True)
class DemoConfig(ShiftSetup):
    out: str = "runs/demo"
    images: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLES))
    force: bool = False
    figures: bool = True
    progress: bool = True
    device: str = "auto"


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo and return the summary (also written to ``cfg.out/summary.json``)."""
    from tqdm import tqdm

    from .device import resolve_device

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    out = run_dir(cfg.out, cfg.force)
    loaded = load_model(cfg.model, cfg.weights)
    loaded.module.to(device)
    layer = cfg.layer or loaded.layer
    shift_layer = cfg.shift_layer or layer
    get_layer(loaded.module, layer)
    get_layer(loaded.module, shift_layer)
    extra = [resolve_class(c, loaded.num_classes) for c in cfg.classes]
    images = [load_image(spec, loaded.preprocess) for spec in cfg.images]
    x = batch(images).to(device)
    size = x.shape[-1]
    grid = layer_grid(loaded.module, layer, x)
    shift_grid = layer_grid(loaded.module, shift_layer, x)
    target = parse_target(cfg.region, size, shift_grid) if cfg.construction == "region" else None
    shifted = shift_model(
        loaded.module,
        shift_layer,
        cfg.construction,
        cfg.strength,
        target,
        check=x,
        tolerance=cfg.tolerance,
        head_dtype=torch.float64 if cfg.float64_head else None,
    )
    # The target at pixel resolution (for overlays) and on the Grad-CAM grid (for target_mass).
    target_px = F.interpolate(shifted.target_weights(*shift_grid).cpu()[None, None], size=(size, size), mode="nearest")[0, 0]
    weights = F.adaptive_avg_pool2d(target_px[None, None], grid)[0, 0]

    cam = GradCAM()
    p = forward_pass(shifted, x, [layer])
    top1 = predicted(p)
    probs = torch.softmax(p.logits["original"].detach(), dim=1)
    results = []
    jobs = [top1] + [torch.full_like(top1, c) for c in extra]
    bar = tqdm(total=len(jobs) * len(images), desc="demo", unit="map", disable=not cfg.progress, file=sys.stderr)
    for target_class in jobs:
        raw = {}
        for key in MAPS:
            variant, score = key.split("_")
            raw[key] = cam.from_pass(p, layer, target_class, score, variant)
        for i, im in enumerate(images):
            c = int(target_class[i])
            eq = compare(p.logits["original"][i : i + 1].detach(), p.logits["shifted"][i : i + 1].detach())
            row = {
                "image": im.name,
                "class": c,
                "class_name": class_name(c),
                "prob": float(probs[i, c]),
                "predicted": c == int(top1[i]),
                "max_abs_prob_diff": eq.max_abs_prob_diff,
                "top1_agree": eq.top1_agree == 1.0,
                "maps": {},
            }
            for key in MAPS:
                variant, score = key.split("_")
                reference = raw[f"original_{score}"][i : i + 1]
                row["maps"][key] = {
                    "target_mass": float(target_mass(raw[key][i : i + 1], weights)[0]),
                    "spearman_vs_original": float(spearman(raw[key][i : i + 1], reference)[0]),
                }
            if cfg.figures:
                name = f"{im.name}_{c}.png"
                heats = {k: normalize(upsample(raw[k][i : i + 1], size))[0] for k in MAPS}
                titles = {
                    k: f"{k.split('_')[0]} · {'pre' if k.endswith('logit') else 'post'}-softmax\n"
                    f"{class_name(c)}  p={float(probs[i, c]):.3f}  mass={row['maps'][k]['target_mass']:.2f}"
                    for k in MAPS
                }
                paper_figure(out / name, im.rgb, heats, titles, f"{im.name}: Grad-CAM at {layer}, {cfg.construction} shift at {shift_layer}", target_px.numpy())
                row["figure"] = name
            results.append(row)
            bar.update(1)
    bar.close()
    eq_all = compare(p.logits["original"].detach(), p.logits["shifted"].detach())
    summary = {
        "command": "demo",
        "model": loaded.name,
        "layer": layer,
        "shift_layer": shift_layer,
        "construction": cfg.construction,
        "strength": shifted.shift.strength,
        "default_strength": DEFAULT_STRENGTH[cfg.construction],
        "region": cfg.region if cfg.construction == "region" else "cell (0, 0) of the shift layer",
        "float64_head": cfg.float64_head,
        "tolerance": cfg.tolerance,
        "images": [im.name for im in images],
        "max_abs_prob_diff": eq_all.max_abs_prob_diff,
        "top1_agree": eq_all.top1_agree == 1.0,
        "max_abs_shift": eq_all.max_abs_shift,
        "results": results,
        "seconds": round(time.perf_counter() - start, 2),
        **provenance(),
    }
    write_json(Path(out) / "summary.json", summary)
    return summary


# ----------------------------------------------------------------------------- command line


def add_command(subparsers) -> None:
    """Register ``logitshift demo``."""
    import argparse

    from .cli import model_flags, shift_flags

    demo = subparsers.add_parser(
        "demo",
        help="reproduce the paper: pre/post-softmax Grad-CAM of an original and a shifted model",
        description="Reproduce Lerma & Lucas (arXiv:2307.03305) on a real ImageNet model, offline.",
        epilog="example:\n  logitshift demo --out runs/demo --images chelsea coffee --class maze --construction paper",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    model_flags(demo)
    shift_flags(demo)
    demo.add_argument("--images", nargs="+", default=None, help="image files or sample names (default: chelsea coffee rocket astronaut)")
    demo.add_argument("--class", dest="classes", action="append", default=[], help="extra class to explain, by name or index (repeatable)")
    demo.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.add_argument("--report", action="store_true", help="also write report.html, one self-contained HTML page, into --out")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .images import DEFAULT_SAMPLES

    from .cli import shift_setup

    cfg = DemoConfig(
        **shift_setup(args),
        out=args.out,
        images=args.images or list(DEFAULT_SAMPLES),
        force=args.force,
        progress=not args.no_progress,
        device=args.device,
    )
    summary = run_demo(cfg)
    fooled = [r for r in summary["results"] if r["predicted"]]
    mass = sum(r["maps"]["shifted_logit"]["target_mass"] for r in fooled) / max(len(fooled), 1)
    before = sum(r["maps"]["original_logit"]["target_mass"] for r in fooled) / max(len(fooled), 1)
    print(
        f"{len(summary['results'])} figures and summary.json in {args.out}\n"
        f"max |Δprob| {summary['max_abs_prob_diff']:.2e}, top-1 agrees: {summary['top1_agree']}\n"
        f"pre-softmax Grad-CAM mass in the target: {before:.2f} (original) -> {mass:.2f} (shifted), "
        f"{summary['seconds']:.1f} s"
    )
    if getattr(args, "report", False):
        from .report import write_report

        print(f"report: {write_report(args.out)}")
    return 0


