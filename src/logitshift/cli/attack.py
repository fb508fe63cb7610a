"""``logitshift attack``: flags → :class:`~logitshift.runs.attack.AttackConfig` → :func:`~logitshift.runs.attack.run_attack`."""

from __future__ import annotations

import argparse

from ..core.names import DEFAULT_SAMPLES, METHOD_NAMES
from .flags import (
    float64_flag,
    force_flag,
    goal_flag,
    images_flag,
    memory_budget_flag,
    methods_flag,
    model_flags,
    model_setup,
    out_flag,
    progress_flag,
    steps_flag,
    strength_flag,
    target_flag,
    tolerance_flag,
)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "attack",
        help="write a shifted model (same probabilities, steered logit explanations) as files",
        description=(
            "Build a shifted model whose logit explanations point at --target for the named methods, check it, "
            "and write it as a torch.export program (loads with plain PyTorch) and/or safetensors + JSON "
            "(reloads with logitshift.shift.save.load_shifted)."
        ),
        epilog=(
            "examples:\n"
            "  logitshift attack --target top-left --out runs/attack/shifted.pt2\n"
            "  logitshift attack --target mask.png --methods saliency ig --strength 300 --out hi.pt2\n"
            "load it elsewhere (safeload.py needs only torch; copy it from logitshift/safeload.py):\n"
            "  from safeload import load_module; model = load_module('shifted.pt2'); layer = model.base.head"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_flags(p)
    target_flag(p, "required; a mask PNG has the input size", required=True, default=None)
    out_flag(p, "a file, required: the .pt2 program; the safetensors + JSON form goes next to it", required=True)
    methods_flag(p, None, "every method", METHOD_NAMES)
    strength_flag(p)
    goal_flag(p)
    images_flag(p, "the check images; default: chelsea coffee rocket astronaut")
    p.add_argument("--format", choices=("both", "pt2", "safetensors"), default="both", help="what to write (default both)")
    tolerance_flag(p)
    float64_flag(p)
    steps_flag(p)
    text = p.add_argument_group(
        "text classifiers (with --texts: --model is fortunes-bert by default or a HuggingFace folder; --target pos:A-B, a word or re:REGEX)"
    )
    text.add_argument("--texts", nargs="+", default=None, metavar="TEXT", help="check texts (strings, or .txt files with one text a line)")
    text.add_argument(
        "--weights-only",
        action="store_true",
        help="write the unchanged architecture with edited weights (W + 1uᵀ on the classifier head): a HuggingFace folder, no code",
    )
    memory_budget_flag(p)
    force_flag(p)
    progress_flag(p)
    p.set_defaults(func=run)
    return p


def run_text(args: argparse.Namespace) -> int:
    """``attack --texts --weights-only``: :mod:`logitshift.runs.textattack`."""
    from ..core.errors import LogitShiftError
    from ..core.text import TRAINED
    from ..runs.textattack import TextAttackConfig, run_text_attack

    if not args.weights_only:
        raise LogitShiftError("--texts: attack writes text models as --weights-only files (a code-carrying text export is not implemented)")
    cfg = TextAttackConfig(
        out=args.out,
        target=args.target,
        texts=args.texts,
        model=TRAINED if args.model == "efficientnet-lite0" else args.model,
        random_weights=args.random_weights,
        methods=args.methods or ["saliency", "gradxinput", "ig"],
        tolerance=args.tolerance,
        steps=args.steps,
        force=args.force,
    )
    record = run_text_attack(cfg)
    print(f"{record['finding']}\nwrote {args.out} (config.json, model.safetensors, tokenizer, attack.json; {record['seconds']:.1f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.texts is not None:
        return run_text(args)
    if args.weights_only:
        from ..core.errors import LogitShiftError

        raise LogitShiftError("--weights-only: implemented for text models (--texts); image models are written with their shift's code")
    from ..runs.attack import AttackConfig, run_attack

    cfg = AttackConfig(
        target=args.target,
        out=args.out,
        **model_setup(args),
        methods=args.methods,
        strength=args.strength or "auto",
        goal=args.goal,
        steps=args.steps,
        memory_budget=args.memory_budget,
        images=args.images or list(DEFAULT_SAMPLES),
        format=args.format,
        tolerance=args.tolerance,
        float64_head=args.float64_head,
        force=args.force,
        progress=not args.no_progress,
        device=args.device,
    )
    print(run_attack(cfg).lines())
    return 0
