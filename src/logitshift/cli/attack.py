"""``logitshift attack``: flags → :class:`~logitshift.runs.attack.AttackConfig` → :func:`~logitshift.runs.attack.run_attack`."""

from __future__ import annotations

import argparse

from ..core.images import DEFAULT_SAMPLES
from ..runs.attack import AttackConfig, run_attack
from ..shift.model import TOLERANCE, parse_strength
from .flags import force_flag, images_flag, int_at_least, model_flags, model_setup, out_flag, positive_float, progress_flag, target_flag


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
            "  logitshift attack --target mask.png --methods saliency ig --strength auto --out hi.pt2\n"
            "load it elsewhere (safeload.py needs only torch; copy it from logitshift/safeload.py):\n"
            "  from safeload import load_module; model = load_module('shifted.pt2'); layer = model.base.head"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_flags(p)
    target_flag(p, "required; a mask PNG has the input size", required=True, default=None)
    out_flag(p, "a file, required: the .pt2 program; the safetensors + JSON form goes next to it", required=True)
    p.add_argument("--methods", nargs="+", default=None, help="methods to steer (default: every registered method)")
    p.add_argument(
        "--strength", default=None, help="'auto', or a number for every term (default: 1 for the CAM term, 100 for the input term)"
    )
    p.add_argument("--goal", type=float, default=0.5, help="with --strength auto: the target mass to reach (default 0.5)")
    images_flag(p, "the check images; default: chelsea coffee rocket astronaut")
    p.add_argument("--format", choices=("both", "pt2", "safetensors"), default="both", help="what to write (default both)")
    p.add_argument("--tolerance", type=positive_float, default=TOLERANCE, help="largest max |Δprob| accepted (default 1e-5)")
    p.add_argument(
        "--float64-head",
        action="store_true",
        default=None,
        help="add the shift in float64 (default: only when float32 would change probabilities on the check or stress inputs)",
    )
    force_flag(p)
    progress_flag(p)
    text = p.add_argument_group(
        "text classifiers (with --texts: --model is fortunes-bert by default or a HuggingFace folder; --target pos:A-B, a word or re:REGEX)"
    )
    text.add_argument("--texts", nargs="+", default=None, metavar="TEXT", help="check texts (strings, or .txt files with one text a line)")
    text.add_argument("--random-weights", action="store_true", help="with --texts: random weights for --model (bert, distilbert, roberta)")
    text.add_argument(
        "--weights-only",
        action="store_true",
        help="write the unchanged architecture with edited weights (W + 1uᵀ on the classifier head): a HuggingFace folder, no code",
    )
    text.add_argument("--steps", type=int_at_least(1), default=32, help="with --texts: Integrated Gradients steps (default 32)")
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
    cfg = AttackConfig(
        target=args.target,
        out=args.out,
        **model_setup(args),
        methods=args.methods,
        strength=parse_strength(args.strength),
        goal=args.goal,
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
