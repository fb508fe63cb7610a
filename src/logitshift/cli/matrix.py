"""``logitshift matrix``: flags → :class:`~logitshift.runs.matrix.MatrixConfig` → :func:`~logitshift.runs.matrix.run_matrix`."""

from __future__ import annotations

import argparse

from ..attribution import METHODS
from ..core.scores import SCORES
from ..report import write_report
from ..runs.matrix import DEFAULT_STEPS, MatrixConfig, run_matrix
from ..shift.model import parse_strength
from .flags import (
    force_flag,
    images_flag,
    int_at_least,
    model_flags,
    model_setup,
    out_flag,
    progress_flag,
    report_flag,
    save_maps_flag,
    target_flag,
)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "matrix",
        help="measure which (method, score) pairs a logit shift fools: table, JSON, figure",
        description="For every method × score: target mass and Spearman of the shifted model's map against the original's.",
        epilog="example:\n  logitshift matrix --out runs/matrix --target top-left --scores logit prob centered",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_flags(p)
    out_flag(p, "a folder; default runs/matrix", default="runs/matrix")
    target_flag(p)
    images_flag(p)
    p.add_argument("--methods", nargs="+", default=None, help=f"methods (default all: {', '.join(METHODS)})")
    p.add_argument("--scores", nargs="+", default=list(SCORES), help=f"scores (default all: {', '.join(SCORES)})")
    p.add_argument("--strength", default=None, help="'auto' or a number (default: 1 for the CAM term, 100 for the input term)")
    p.add_argument("--goal", type=float, default=0.5, help="target mass that counts as fooled (default 0.5)")
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        default=DEFAULT_STEPS,
        help=f"Integrated Gradients steps and SmoothGrad samples (default {DEFAULT_STEPS})",
    )
    p.add_argument("--no-figure", action="store_true", help="skip matrix.png")
    force_flag(p)
    report_flag(p)
    progress_flag(p)
    save_maps_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = MatrixConfig(
        out=args.out,
        **model_setup(args),
        target=args.target,
        images=args.images or [],
        methods=args.methods or [],
        scores=args.scores,
        strength=parse_strength(args.strength),
        goal=args.goal,
        steps=args.steps,
        force=args.force,
        figure=not args.no_figure,
        progress=not args.no_progress,
        device=args.device,
        save_maps=args.save_maps,
    )
    shown = [f"--model {cfg.model}", f"--target {cfg.target}"] + ([f"--images {' '.join(cfg.images)}"] if cfg.images else [])
    shown += [f"--methods {' '.join(cfg.methods)}"] if cfg.methods else []
    shown += [f"--scores {' '.join(cfg.scores)}"] + ([f"--strength {cfg.strength}"] if cfg.strength is not None else [])
    shown += [f"--steps {cfg.steps}"] if cfg.steps is not None else []
    summary = run_matrix(cfg, "logitshift matrix " + " ".join(shown))
    off = [r for r in summary["rows"] if not r["as_expected"]]
    print(
        f"{summary['finding']}\n"
        f"matrix.md, matrix.json{', matrix.png' if summary['figure'] else ''} in {args.out}: "
        f"{len(summary['rows']) - len(off)} of {len(summary['rows'])} cells as expected"
        + "".join(f"\n  not as expected: {r['method']} × {r['score']} ({r['verdict']})" for r in off)
        + f"\nmax |Δprob| {summary['max_abs_prob_diff']:.2e}, {summary['seconds']:.0f} s"
    )
    if args.report:
        print(f"report: {write_report(args.out)}")
    return 0
