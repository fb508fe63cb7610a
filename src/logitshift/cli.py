"""The ``logitshift`` command line.

Exit codes: 0 success, 2 any failure (one line on stderr, no traceback;
``--debug`` shows it): a user error, an OS error (disk full, read-only
folder), running out of memory, or an unexpected exception. Commands with
verdicts document their own codes (``audit``: 1 = shifted, never a failure).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

from .errors import LogitShiftError

#: modules that contribute a sub-command through ``add_command(subparsers)``,
#: in the order ``--help`` lists them.
COMMAND_MODULES = ("demo", "export", "matrix", "audit", "evaluate", "report", "check")


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


def strength_value(text: str) -> float | str:
    """An argparse type: ``auto`` or a finite number > 0."""
    return "auto" if text == "auto" else positive_float(text)


def save_maps_flag(p: argparse.ArgumentParser) -> None:
    """``--save-maps FILE``: the raw maps as named arrays in one ``.npz`` (see :func:`logitshift.display.save_maps`)."""
    p.add_argument(
        "--save-maps",
        default=None,
        metavar="FILE",
        help="also write the raw maps to FILE (.npz; arrays maps, image, class, score, method, variant; numpy.load reads it)",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum`` (one-line error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {minimum}")
        return value

    return parse


def device_flag(p: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (every command that runs a model; resolved by :func:`logitshift.device.resolve_device`)."""
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run: auto (default: cuda if available), cpu or cuda"
    )


def model_flags(p: argparse.ArgumentParser) -> None:
    device_flag(p)
    p.add_argument(
        "--model",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (default), efficientnet-lite1 or -lite2 (real weights, offline), a torchvision name such as vgg19, or package.module:factory (found in the current folder too)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="local weights for --model: a state dict or training checkpoint (.pth, module. prefixes stripped) or .safetensors",
    )
    p.add_argument("--layer", default=None, help="dotted module name of the explanation layer (default: the model's last feature map)")
    p.add_argument(
        "--num-classes",
        type=int_at_least(2),
        default=None,
        help="torchvision model with a fine-tuned head of this many classes (weights from --weights)",
    )
    p.add_argument(
        "--classes",
        dest="class_names",
        default=None,
        metavar="FILE",
        help="names of the model's classes: one per line, or a JSON list (default: ImageNet names for ImageNet models, indices otherwise)",
    )


def shift_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe the shift of ``demo`` and ``evaluate``."""
    p.add_argument("--shift-layer", default=None, help="layer the shift reads (default: the explanation layer)")
    p.add_argument(
        "--construction",
        choices=("gate", "region", "paper"),
        default="gate",
        help="gate (default: works on every architecture), region, or paper (Lerma & Lucas's corner cell)",
    )
    p.add_argument(
        "--region",
        default="top-left",
        help="target of the shift: x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG",
    )
    p.add_argument(
        "--strength",
        type=strength_value,
        default=None,
        help="shift strength K, or 'auto' (default: auto for gate, chosen on the images; 1 for paper, 0.1 for region)",
    )
    p.add_argument(
        "--float64-head",
        action="store_true",
        default=None,
        help="add the shift in float64 (default: only when float32 would change probabilities)",
    )
    p.add_argument("--tolerance", type=positive_float, default=1e-5, help="largest max |Δprob| accepted (default 1e-5)")
    p.add_argument(
        "--goal",
        type=float,
        default=0.5,
        help="target mass the shifted logit maps must reach on the check images, or the run is refused (default 0.5; 0: measure any effect)",
    )


def shift_setup(args: argparse.Namespace) -> dict:
    """The :class:`logitshift.shift.ShiftSetup` fields from parsed ``model_flags`` + ``shift_flags`` (+ ``--classes``)."""
    keys = (
        "model",
        "weights",
        "num_classes",
        "class_names",
        "layer",
        "shift_layer",
        "construction",
        "region",
        "strength",
        "float64_head",
        "tolerance",
        "goal",
    )
    return {**{k: getattr(args, k) for k in keys}, "classes": list(getattr(args, "classes", None) or [])}


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> Parser:
    parser = Parser(prog="logitshift", description="Show, measure and remove the logit-shift blind spot of gradient explanations.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"logitshift {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"logitshift.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"logitshift.{module_name}":
                raise
            continue  # a command whose module is not part of this build
        if hasattr(module, "add_command"):
            module.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for commands that re-run themselves in a limited child (audit)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"logitshift {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # every failure is one line and exit 2 (for audit, 1 means "shifted")
        if args.debug:
            raise
        sys.stderr.write(f"logitshift {args.command}: error: {describe(exc)}\n")
        return 2


def describe(exc: BaseException) -> str:
    """One line for any exception: the user error's own message, else what failed and where."""
    if isinstance(exc, LogitShiftError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller --batch-size or fewer images may help)"
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        name = f"{str(exc.filename)!r}: " if exc.filename else ""
        return f"{name}{exc.strerror or type(exc).__name__}"
    text = " ".join(str(exc).split())[:300] or "no message"
    return f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
