"""``logitshift matrix``: flags → :class:`~logitshift.runs.matrix.MatrixConfig` → :func:`~logitshift.runs.matrix.run_matrix`."""

from __future__ import annotations

import argparse

from ..core.names import METHOD_NAMES, SCORES
from .flags import (
    figures_flag,
    force_flag,
    goal_flag,
    images_flag,
    memory_budget_flag,
    methods_flag,
    model_flags,
    model_setup,
    out_flag,
    progress_flag,
    report_flag,
    save_maps_flag,
    steps_flag,
    strength_flag,
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
    methods_flag(p, None, "every method", METHOD_NAMES)
    p.add_argument("--scores", nargs="+", default=list(SCORES), help=f"scores (default all: {', '.join(SCORES)})")
    strength_flag(p)
    goal_flag(p)
    steps_flag(p)
    memory_budget_flag(p)
    figures_flag(p, "--no-figure")
    force_flag(p)
    report_flag(p)
    progress_flag(p)
    save_maps_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import write_report
    from ..runs.matrix import MatrixConfig, run_matrix

    cfg = MatrixConfig(
        out=args.out,
        **model_setup(args),
        target=args.target,
        images=args.images or [],
        methods=args.methods or [],
        scores=args.scores,
        strength=args.strength or "auto",
        goal=args.goal,
        steps=args.steps,
        memory_budget=args.memory_budget,
        force=args.force,
        figure=not args.no_figures,
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
