"""``logitshift evaluate``: flags → :class:`~logitshift.runs.evaluate.EvalConfig` → :func:`~logitshift.runs.evaluate.run_evaluate`."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.errors import LogitShiftError
from .flags import (
    alias,
    class_flags,
    figures_flag,
    force_flag,
    images_flag,
    int_at_least,
    memory_budget_flag,
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
    positive_int, count = int_at_least(1), int_at_least(0)
    p = sub.add_parser(
        "evaluate",
        help="explain an original and a shifted model over many images; one row of metrics per map, resumable",
        description=(
            "Evaluate explanations of an original and a shifted model over a dataset. One row per (image, class, "
            "method, score, variant) goes to OUT/results.sqlite, one transaction per batch: a killed run continues "
            "with --resume. Runs under torchrun --nproc_per_node N as well (images are sharded across ranks)."
        ),
        epilog=(
            "examples:\n"
            "  logitshift evaluate --images photos/ @list.txt chelsea --methods gradcam --scores logit prob --out runs/eval\n"
            "  logitshift evaluate --images photos/ --out runs/eval --resume\n"
            "  torchrun --nproc_per_node 2 -m logitshift.cli evaluate --images photos/ --out runs/eval\n"
            "IMAGE given without --images is an old spelling of --images."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images_arg", nargs="*", metavar="IMAGE", help=argparse.SUPPRESS)
    images_flag(p, "required", default=[])
    alias(p, "--list", "lists", "--images @FILE", action="append", default=[])
    methods_flag(p, ["gradcam"], "gradcam")
    steps_flag(p)
    memory_budget_flag(p)
    alias(p, "--ig-steps", "ig_steps", "--steps (for Integrated Gradients only)", type=positive_int, default=None)
    alias(p, "--smoothgrad-samples", "smoothgrad_samples", "--steps (for SmoothGrad only)", type=positive_int, default=None)
    p.add_argument("--scores", nargs="+", default=["logit", "prob"], help="scores to explain (default logit prob)")
    out_flag(p, "a folder; default runs/evaluate", default="runs/evaluate")
    model_flags(p)
    shift_flags(p)
    class_flags(p)
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=count, default=2, help="image-decoding worker processes (default 2; 0 decodes in the main process)")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory layout for the model and batches (faster on CPU; see benchmarks/results/forward.md)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out (skips the images it finished)")
    force_flag(p)
    report_flag(p)
    figures_flag(p, "--no-plots")
    progress_flag(p)
    save_maps_flag(p)
    p.set_defaults(func=run)
    return p


def method_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--steps`` and ``--memory-budget`` for both sampling methods; ``--ig-steps`` / ``--smoothgrad-samples`` for one of them."""
    from ..attribution import sampling_options

    options = sampling_options(args.steps, args.memory_budget)
    if args.ig_steps:
        options["ig"]["steps"] = args.ig_steps
    if args.smoothgrad_samples:
        options["smoothgrad"]["samples"] = args.smoothgrad_samples
    return options


def _named(summary: dict[str, Any], most: int = 5) -> str:
    """``: a.jpg, b.png`` — the unreadable images by name (the policy of every command: skipped and named)."""
    names = [b["image"] for b in summary.get("bad_images") or []]
    return (": " + ", ".join(names[:most]) + (f" and {len(names) - most} more (summary.md)" if len(names) > most else "")) if names else ""


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report
    from ..runs.evaluate import EvalConfig, run_evaluate
    from ..shift.steer import chosen

    images = list(args.images_arg) + list(args.images)
    if not images and not args.lists:
        raise LogitShiftError("--images: none given (expected image files, folders, @list files or sample names)")
    if args.resume and args.force:
        raise LogitShiftError("--resume and --force: choose one (continue the previous run, or delete it)")
    cfg = EvalConfig(
        images=images,
        method_options=method_options(args),
        lists=list(args.lists),
        out=args.out,
        methods=list(args.methods),
        scores=list(args.scores),
        **shift_setup(args),
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        save_maps=args.save_maps,
        channels_last=args.channels_last,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        plots=not args.no_figures,
    )
    summary = run_evaluate(cfg)
    if summary is not None:
        im, eq = summary["images"], summary["equivalence"]
        print(
            f"{summary['finding']}\n"
            f"{summary['rows']} rows for {im['evaluated']} images ({im['bad']} unreadable{_named(summary)}) in {args.out}: "
            f"results.sqlite, rows.csv, summary.json, summary.md{f', maps in {args.save_maps}' if args.save_maps else ''}\n"
            f"{chosen(summary['steering'])}\n"
            f"max |Δprob| {_number(eq['max_abs_prob_diff'], '.1e')}, top-1 agreement {_number(eq['top1_agree'], '.3f')}, "
            f"{summary['seconds']:.1f} s"
        )
        if args.report:
            print(f"report: {write_report(args.out)}")
    return 0
