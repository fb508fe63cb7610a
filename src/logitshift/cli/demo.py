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
    steps_flag,
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
    steps_flag(p)
    text = p.add_argument_group(
        "text classifiers (with --texts: --model is fortunes-bert by default or a HuggingFace folder; --target pos:A-B, a word or re:REGEX)"
    )
    text.add_argument(
        "--texts",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="explain these texts (strings, or .txt files with one text a line); --random-weights: a family (bert, distilbert, roberta) or a folder's config",
    )
    p.set_defaults(func=run)
    return p


def one_cam(methods: list[str]) -> str:
    """demo's one method (a CAM method; argparse has normalised its name)."""
    from ..core.errors import LogitShiftError

    if len(methods) != 1:
        raise LogitShiftError(f"--methods {' '.join(methods)}: demo draws one CAM method's maps; give one of {', '.join(CAM_NAMES)}")
    return methods[0]


def run_text(args: argparse.Namespace) -> int:
    """``demo --texts``: the token shift on a text classifier (:mod:`logitshift.runs.textdemo`)."""
    from ..core.text import TRAINED
    from ..runs.textdemo import TextDemoConfig, run_text_demo

    model = TRAINED if args.model == "efficientnet-lite0" else args.model
    target = "pos:1-2" if args.target == "top-left" else args.target
    out = "runs/demo-text" if args.out == "runs/demo" else args.out
    cfg = TextDemoConfig(
        model=model,
        random_weights=args.random_weights,
        texts=args.texts,
        target=target,
        strength=args.strength or "auto",
        steps=args.steps,
        out=out,
        force=args.force,
    )
    summary = run_text_demo(cfg)
    figures = sum(1 for r in summary["results"] if r["figure"])
    print(f"{summary['finding']}\n{figures} figures and summary.json in {out} ({summary['seconds']:.1f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.texts is not None:
        return run_text(args)
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
