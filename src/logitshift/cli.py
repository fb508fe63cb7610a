"""The ``logitshift`` command line.

Exit codes: 0 success, 2 a user error (one line on stderr, no traceback;
``--debug`` shows it). Commands with verdicts document their own codes.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence

from .errors import LogitShiftError

EXAMPLES = {
    "demo": "example:\n  logitshift demo --out runs/demo --images chelsea coffee --class maze --construction paper",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number > 0")
    return value


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet-lite0", help="efficientnet-lite0 (default, offline), a torchvision name such as vgg19, or package.module:factory")
    p.add_argument("--weights", default=None, help="local weights file (.pth or .safetensors) for --model")
    p.add_argument("--layer", default=None, help="dotted module name of the explanation layer (default: the model's last feature map)")


def build_parser() -> Parser:
    parser = Parser(prog="logitshift", description="Show, measure and remove the logit-shift blind spot of gradient explanations.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser(
        "demo",
        help="reproduce the paper: pre/post-softmax Grad-CAM of an original and a shifted model",
        description="Reproduce Lerma & Lucas (arXiv:2307.03305) on a real ImageNet model, offline.",
        epilog=EXAMPLES["demo"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    _model_flags(demo)
    demo.add_argument("--shift-layer", default=None, help="layer the shift reads (default: the explanation layer)")
    demo.add_argument("--construction", choices=("paper", "region"), default="region")
    demo.add_argument("--region", default="top-left", help="target of the region shift: x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG")
    demo.add_argument("--strength", type=positive_float, default=None, help="shift strength K (default 1 for paper, 0.1 for region)")
    demo.add_argument("--images", nargs="+", default=None, help="image files or sample names (default: chelsea coffee rocket astronaut)")
    demo.add_argument("--class", dest="classes", action="append", default=[], help="extra class to explain, by name or index (repeatable)")
    demo.add_argument("--float64-head", action="store_true", help="add the shift in float64 (keeps probabilities equal for large strengths)")
    demo.add_argument("--tolerance", type=positive_float, default=1e-5, help="largest max |Δprob| accepted (default 1e-5)")
    demo.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo
    from .images import DEFAULT_SAMPLES

    cfg = DemoConfig(
        out=args.out,
        model=args.model,
        weights=args.weights,
        layer=args.layer,
        shift_layer=args.shift_layer,
        construction=args.construction,
        region=args.region,
        strength=args.strength,
        images=args.images or list(DEFAULT_SAMPLES),
        classes=args.classes,
        float64_head=args.float64_head,
        tolerance=args.tolerance,
        force=args.force,
        progress=not args.no_progress,
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except LogitShiftError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"logitshift {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"logitshift {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
