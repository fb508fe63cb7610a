"""``logitshift demo``: flags → :class:`~logitshift.runs.demo.DemoConfig` → :func:`~logitshift.runs.demo.run_demo`."""

from __future__ import annotations

import argparse

from ..core.names import CAM_NAMES, DEFAULT_SAMPLES
from .flags import (
    alias,
    class_flags,
    force_flag,
    images_flag,
    method_value,
    methods_flag,
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
        "  logitshift demo --construction paper --methods hirescam --class maze --model efficientnet-lite2 --out runs/corner",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out_flag(p, "a folder; default runs/demo", default="runs/demo")
    model_flags(p)
    shift_flags(p)
    images_flag(p)
    methods_flag(
        p,
        ["gradcam"],
        f"gradcam; demo draws one CAM method: {', '.join(CAM_NAMES)}; hirescam or layercam show the paper's corner",
        CAM_NAMES,
    )
    alias(p, "--method", "methods", "--methods", type=method_value(CAM_NAMES), nargs=1)
    class_flags(p)
    force_flag(p)
    progress_flag(p)
    report_flag(p)
    save_maps_flag(p)
    p.set_defaults(func=run)
    return p


def one_cam(methods: list[str]) -> str:
    """demo's one method (a CAM method; argparse has normalised its name)."""
    from ..core.errors import LogitShiftError

    if len(methods) != 1:
        raise LogitShiftError(f"--methods {' '.join(methods)}: demo draws one CAM method's maps; give one of {', '.join(CAM_NAMES)}")
    return methods[0]


def run(args: argparse.Namespace) -> int:
    from ..report import write_report
    from ..runs.demo import DemoConfig, run_demo
    from ..shift.steer import chosen

    cfg = DemoConfig(
        **shift_setup(args),
        out=args.out,
        images=args.images or list(DEFAULT_SAMPLES),
        force=args.force,
        method=one_cam(args.methods),
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
