"""``logitshift check``: flags → :class:`~logitshift.runs.check.CheckConfig` → :func:`~logitshift.runs.check.run_check`.

Exit codes: 0 every cell measured is immune, 1 any is fooled or moved, 2 an error.
"""

from __future__ import annotations

import argparse
import sys

from .flags import (
    alias,
    force_flag,
    images_flag,
    int_at_least,
    layer_flag,
    model_flags,
    out_flag,
    positive_float,
    progress_flag,
    steps_flag,
    target_flag,
    tolerance_flag,
)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "check",
        help="does an explainer, a target or a metric survive z + t(x)·1? (exit 0 immune, 1 fooled/moved, 2 error)",
        description=(
            "Run explainers on a model and on shifted twins built to steer their kind (gradient, cam, perturbation, "
            "propagation, metric), and give a verdict per cell: immune, fooled (steered into the target) or moved. "
            "EXPLAINER: a logitshift method (gradcam, gradcam@centered), LIBRARY/METHOD[@TARGET] of an adapter "
            "(pytorch-grad-cam/GradCAM@ClassifierOutputReST, captum/Occlusion, zennit/EpsilonPlus, quantus/PixelFlipping, "
            "deletion-insertion/deletion AUC@prob), or package.module:function with function(model, x, classes) -> maps. "
            "Exit codes: 0 all immune, 1 any fooled or moved, 2 error."
        ),
        epilog="examples:\n  logitshift check pytorch-grad-cam/GradCAM\n  logitshift check --library captum --images chelsea\n"
        "  logitshift check mypkg.explain:my_cam --kinds cam gradient\n"
        "  logitshift check --library shap lime --model breast-cancer-mlp --rows test:64 --target 'features:mean radius,worst area'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("explainers", nargs="*", metavar="EXPLAINER")
    p.add_argument("--library", nargs="+", default=[], help="check every explainer of these adapters ('all' for every one)")
    model_flags(p, layer=False, device=False)
    layer_flag(p, "for the CAM methods; default: the model's last feature map")
    images_flag(p, "default: chelsea", default=["chelsea"])
    p.add_argument(
        "--rows",
        default="test:64",
        help="a tabular --model's inputs: a CSV of raw rows, or test / test:N, its held-out rows (default test:64)",
    )
    target_flag(p)
    p.add_argument(
        "--kinds",
        nargs="+",
        default=None,
        choices=("gradient", "cam", "perturbation", "propagation", "metric"),
        help="twins to use (default: the explainer's kind; all map kinds for a user function)",
    )
    steps_flag(p)
    alias(p, "--samples", "steps", "--steps", type=int_at_least(1))
    p.add_argument(
        "--twin-strength",
        type=positive_float,
        default=None,
        help="one strength for every term of every twin (default: calibrated per kind; not --strength, whose auto rule is the other commands')",
    )
    alias(p, "--strength", "twin_strength", "--twin-strength", type=positive_float)
    tolerance_flag(p)
    p.add_argument(
        "--lm",
        default=None,
        metavar="MODEL",
        help="check language-model explainers instead (--library logitshift captum-llm dla inseq, or all) on MODEL: "
        "fortunes-gpt (trained here on first use), a local HF GPT-2/Llama folder, or gpt2/llama with --random-weights",
    )
    p.add_argument("--prompts", type=int_at_least(1), default=4, help="--lm: held-out prompts (default 4)")
    p.add_argument("--length", type=int_at_least(4), default=16, help="--lm: tokens per prompt (default 16)")
    out_flag(p, "a folder: also write check.json and check.md into it")
    force_flag(p)
    progress_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..conformance.table import rows
    from ..runs.check import CheckConfig, run_check

    cfg = CheckConfig(
        explainers=list(args.explainers),
        libraries=list(args.library),
        model=args.model,
        weights=args.weights,
        random_weights=args.random_weights,
        num_classes=args.num_classes,
        class_names=args.class_names,
        layer=args.layer,
        images=list(args.images),
        rows=args.rows,
        target=args.target,
        kinds=args.kinds,
        samples=args.steps,
        strength=args.twin_strength,
        tolerance=args.tolerance,
        out=args.out,
        force=args.force,
        progress=not args.no_progress,
        lm=args.lm,
        prompts=args.prompts,
        length=args.length,
        command_line="logitshift check " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "logitshift check",
    )
    checked = run_check(cfg)
    print(checked.finding)
    print("\n".join(rows(checked.cells)))
    if checked.out is not None:
        print(f"check.json, check.md in {checked.out}")
    sys.stdout.flush()
    return checked.code
