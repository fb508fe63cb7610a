"""The command line's one vocabulary: each shared flag is spelled, parsed and explained the same way in every command.

``SHARED`` holds the first words of each shared flag's help; a command may add
what is particular to it (its default, what it writes) after them, never
change them. Old spellings stay as hidden aliases (:func:`alias`) so that
scripts keep working; ``--help`` names the canonical one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

#: the shared flags and the help text each command's help starts with
SHARED = {
    "--model": "the model: efficientnet-lite0, -lite1 or -lite2 (real weights, offline), a torchvision name such as resnet50, "
    "or package.module:factory (found in the current folder too)",
    "--weights": "local weights for --model: a state dict or training checkpoint (.pth, module. prefixes stripped) or .safetensors",
    "--layer": "dotted module name of the layer the explanations are read at",
    "--target": "where the shift steers the explanations: x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG",
    "--images": "images: files, folders (searched recursively), @list files (one path or sample a line) or sample names",
    "--class": "a class to explain for every image, by name or index (repeatable; repeats collapse)",
    "--top-k": "explain each image's k most probable classes",
    "--labels": "each image's true label to explain: CSV/TSV lines path,label or one label a line in image order (label: name or index)",
    "--out": "where the output goes",
    "--force": "overwrite what a previous run left in --out",
    "--report": "also write report.html, one self-contained HTML page, into --out",
    "--device": "where to run: auto (default: cuda if available), cpu or cuda",
    "--debug": "show the traceback of an error",
    "--version": "show the version and exit",
}


def helptext(flag: str, detail: str = "") -> str:
    """The shared help of ``flag``, then what is particular to this command."""
    return SHARED[flag] + (f" ({detail})" if detail else "")


def alias(p: argparse.ArgumentParser, old: str, dest: str, canonical: str, **kw: Any) -> None:
    """An old spelling that keeps working but is not listed; ``canonical`` names the flag to use."""
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS, **kw)
    p.epilog = (p.epilog or "") + f"\n{old} is an old spelling of {canonical}."


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
    """``--save-maps FILE``: the raw maps as named arrays in one ``.npz`` (see :func:`logitshift.view.display.save_maps`)."""
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


# ----------------------------------------------------------------------------- the shared flags


def common_flags(p: argparse.ArgumentParser, version: str) -> None:
    """``--debug`` and ``--version``, accepted after the sub-command too (``--debug`` keeps a value given before it)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=helptext("--debug"))
    p.add_argument("--version", action="version", version=f"logitshift {version}", help=helptext("--version"))


def device_flag(p: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (resolved by :func:`logitshift.core.device.resolve_device`)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=helptext("--device"))


def model_flag(p: argparse.ArgumentParser, detail: str = "default efficientnet-lite0", **kw: Any) -> None:
    kw.setdefault("default", "efficientnet-lite0")
    p.add_argument("--model", help=helptext("--model", detail), **kw)


def weights_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help=helptext("--weights"))


def layer_flag(p: argparse.ArgumentParser, detail: str = "default: the model's last feature map", **kw: Any) -> None:
    p.add_argument("--layer", default=None, help=helptext("--layer", detail), **kw)


def model_flags(p: argparse.ArgumentParser) -> None:
    """``--model --weights --layer --num-classes --classes --device``: a model to load by name, as every model command does."""
    model_flag(p)
    weights_flag(p)
    layer_flag(p)
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
    device_flag(p)


def target_flag(p: argparse.ArgumentParser, detail: str = "default top-left", **kw: Any) -> None:
    kw.setdefault("default", "top-left")
    p.add_argument("--target", help=helptext("--target", detail), **kw)


def images_flag(p: argparse.ArgumentParser, detail: str = "default: chelsea coffee rocket astronaut", **kw: Any) -> None:
    kw.setdefault("default", None)
    p.add_argument("--images", nargs="+", metavar="IMAGE", help=helptext("--images", detail), **kw)


def out_flag(p: argparse.ArgumentParser, detail: str, **kw: Any) -> None:
    kw.setdefault("default", None)
    p.add_argument("--out", help=helptext("--out", detail), **kw)


def force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help=helptext("--force"))


def report_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", action="store_true", help=helptext("--report"))


def progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def class_flags(p: argparse.ArgumentParser) -> None:
    """``--class`` (repeatable, the same for every image), ``--top-k N`` and ``--labels FILE``: which classes to explain."""
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS", help=helptext("--class"))
    p.add_argument("--top-k", type=int_at_least(1), default=1, metavar="K", help=helptext("--top-k", "default 1: the prediction"))
    p.add_argument("--labels", default=None, metavar="FILE", help=helptext("--labels"))


def shift_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe the shift of ``demo`` and ``evaluate``."""
    target_flag(p, "default top-left; with --construction paper: cell (0, 0) of the shift layer")
    alias(p, "--region", "target", "--target")
    p.add_argument("--shift-layer", default=None, help="layer the shift reads (default: the explanation layer)")
    p.add_argument(
        "--construction",
        choices=("gate", "region", "paper"),
        default="gate",
        help="gate (default: works on every architecture), region, or paper (Lerma & Lucas's corner cell)",
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


#: what ``model_flags`` parse, by the config field names every command's config shares
MODEL_FIELDS = ("model", "weights", "num_classes", "class_names", "layer")


def model_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields from parsed ``model_flags``: which model, its weights, classes and explanation layer."""
    return {k: getattr(args, k) for k in MODEL_FIELDS}


def shift_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`logitshift.shift.model.ShiftSetup` fields from parsed ``model_flags`` + ``shift_flags`` + ``class_flags``."""
    keys = (
        *MODEL_FIELDS,
        "shift_layer",
        "construction",
        "strength",
        "float64_head",
        "tolerance",
        "goal",
    )
    return {
        **{k: getattr(args, k) for k in keys},
        "region": args.target,
        "classes": list(getattr(args, "classes", None) or []),
        "top_k": getattr(args, "top_k", 1),
        "labels": getattr(args, "labels", None),
    }
