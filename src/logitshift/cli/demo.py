"""``logitshift demo``: flags → :class:`~logitshift.runs.demo.DemoConfig` → :func:`~logitshift.runs.demo.run_demo`."""

from __future__ import annotations

import argparse

from ..attribution import CAM_METHODS
from ..core.images import DEFAULT_SAMPLES
from ..report import write_report
from ..runs.demo import DemoConfig, run_demo
from ..shift.steer import chosen
from .flags import (
    class_flags,
    force_flag,
    images_flag,
    model_flags,
    out_flag,
    progress_flag,
    report_flag,
    save_maps_flag,
    shift_flags,
    shift_setup,
)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="reproduce the paper: pre/post-softmax Grad-CAM of an original and a shifted model",
        description="Reproduce Lerma & Lucas (arXiv:2307.03305) on a real ImageNet model, offline.",
        epilog="examples:\n  logitshift demo --out runs/demo --images chelsea coffee --class maze --construction paper\n"
        "  logitshift demo --construction paper --method hirescam --class maze --model efficientnet-lite2 --out runs/corner",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out_flag(p, "a folder; default runs/demo", default="runs/demo")
    model_flags(p)
    shift_flags(p)
    images_flag(p)
    p.add_argument(
        "--method",
        default="gradcam",
        choices=CAM_METHODS,
        help="CAM method of the maps (default gradcam; hirescam or layercam show the paper's corner)",
    )
    class_flags(p)
    force_flag(p)
    progress_flag(p)
    report_flag(p)
    save_maps_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        **shift_setup(args),
        out=args.out,
        images=args.images or list(DEFAULT_SAMPLES),
        force=args.force,
        method=args.method,
        progress=not args.no_progress,
        device=args.device,
        save_maps=args.save_maps,
    )
    summary = run_demo(cfg)
    figures = len({r["figure"] for r in summary["results"] if r.get("figure")})
    print(
        f"{summary['finding']}\n{chosen(summary['steering'])}\n{figures} figures and summary.json in {args.out} ({summary['seconds']:.1f} s)"
    )
    if args.report:
        print(f"report: {write_report(args.out)}")
    return 0
