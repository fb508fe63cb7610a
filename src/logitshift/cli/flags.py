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

from ..core.errors import LogitShiftError
from ..core.names import ATTENTION_NAMES, DEFAULT_MEMORY_BUDGET_GB, DEFAULT_STEPS, METHOD_NAMES, TOLERANCE, method_name

#: the shared flags and the help text each command's help starts with
SHARED = {
    "--model": "the model: efficientnet-lite0, -lite1 or -lite2 (real weights, offline), a torchvision name such as resnet50, "
    "or package.module:factory (found in the current folder too)",
    "--weights": "local weights for --model: a state dict or training checkpoint (.pth, module. prefixes stripped) or .safetensors",
    "--random-weights": "a torchvision or timm --model with random weights instead of trained ones (say so wherever you quote a figure)",
    "--num-classes": "the model has a fine-tuned head of this many classes (torchvision or timm --model; its weights from --weights)",
    "--classes": "names of the model's classes: one per line, or a JSON list (default: ImageNet names for ImageNet models, indices otherwise)",
    "--layer": "dotted module name of the layer the explanations are read at",
    "--target": "where the shift steers the explanations: x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG",
    "--images": "images: files, folders (searched recursively), @list files (one path or sample a line) or sample names",
    "--class": "a class to explain for every image, by name or index (repeatable; repeats collapse)",
    "--top-k": "explain each image's k most probable classes",
    "--labels": "each image's true label to explain: CSV/TSV lines path,label or one label a line in image order (label: name or index)",
    "--methods": f"attribution methods by name: {' '.join(METHOD_NAMES)} (spellings such as grad-cam++ are understood)",
    "--strength": "shift strength K of every term, or auto: per family, the strength 0.9 of the way from the weakest one that "
    "reaches --goal to the plateau of the target mass, on the check images (default: auto; with --construction paper 1, region 0.1)",
    "--goal": "target mass each steered method's logit map must reach on the check images (default 0.5): auto aims above it; "
    "demo, evaluate and attack refuse a shift that falls short (0: accept any), matrix calls such a cell changed, not fooled",
    "--tolerance": f"largest max |Δprob| a shifted model may have on the check images (default {TOLERANCE:g})",
    "--float64-head": "add the shift in float64 (default: only where float32 would change probabilities, on the check or stress inputs)",
    "--steps": f"Integrated Gradients steps and SmoothGrad samples (default {DEFAULT_STEPS})",
    "--memory-budget": "most memory, in GB, one chunk of Integrated Gradients or SmoothGrad points may take; fewer points per "
    f"chunk cost a little time (default {DEFAULT_MEMORY_BUDGET_GB:g})",
    "--out": "where the output goes",
    "--force": "overwrite what a previous run left in --out",
    "--report": "also write report.html, one self-contained HTML page, into --out",
    "--no-figures": "write no figures (the tables, JSON and summary only)",
    "--no-progress": "no progress bars (on a stderr that is not a terminal there are none anyway: one line per stage instead)",
    "--device": "where to run: auto (default: cuda if available), cpu or cuda",
    "--debug": "show the traceback of an error",
    "--version": "show the version and exit",
}

#: shared flags whose help is the same text, word for word, in every command (the others add what is particular
#: to the command after the shared words); --methods may add only its default
SAME_EVERYWHERE = frozenset(
    {
        "--random-weights",
        "--num-classes",
        "--classes",
        "--strength",
        "--goal",
        "--tolerance",
        "--float64-head",
        "--steps",
        "--memory-budget",
        "--no-figures",
        "--no-progress",
        "--force",
        "--report",
        "--device",
        "--debug",
        "--version",
    }
)


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


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1] (a share of a map's mass)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number from 0 to 1")
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


def model_flags(
    p: argparse.ArgumentParser, detail: str = "default efficientnet-lite0", *, layer: bool = True, device: bool = True, **kw: Any
) -> None:
    """``--model --weights --random-weights --num-classes --classes --layer --device``: a model to load by name,
    as every command that loads one does (``layer=False``: the command declares its own ``--layer``)."""
    model_flag(p, detail, **kw)
    weights_flag(p)
    p.add_argument("--random-weights", action="store_true", help=helptext("--random-weights"))
    p.add_argument("--num-classes", type=int_at_least(2), default=None, metavar="N", help=helptext("--num-classes"))
    p.add_argument("--classes", dest="class_names", default=None, metavar="FILE", help=helptext("--classes"))
    if layer:
        layer_flag(p)
    if device:
        device_flag(p)


def method_value(known: tuple[str, ...] = METHOD_NAMES + ATTENTION_NAMES) -> Callable[[str], str]:
    """An argparse type: a method's registered name from a common spelling (``grad-cam++`` → ``gradcampp``)."""

    def parse(text: str) -> str:
        try:
            return method_name(text, known)
        except LogitShiftError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def methods_flag(p: argparse.ArgumentParser, default: list[str] | None, shown: str, known: tuple[str, ...] | None = None) -> None:
    """``--methods NAME…``: attribution methods by name, spellings normalised as they are parsed."""
    p.add_argument(
        "--methods",
        nargs="+",
        type=method_value(known or METHOD_NAMES + ATTENTION_NAMES),
        default=default,
        metavar="METHOD",
        help=helptext("--methods", f"default: {shown}"),
    )


def steps_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int_at_least(1), default=DEFAULT_STEPS, metavar="N", help=helptext("--steps"))


def strength_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strength", type=strength_value, default=None, help=helptext("--strength"))


def goal_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--goal", type=fraction, default=0.5, help=helptext("--goal"))


def tolerance_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=positive_float, default=TOLERANCE, help=helptext("--tolerance"))


def float64_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--float64-head", action="store_true", default=None, help=helptext("--float64-head"))


def memory_budget_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-budget", type=positive_float, default=DEFAULT_MEMORY_BUDGET_GB, metavar="GB", help=helptext("--memory-budget"))


def figures_flag(p: argparse.ArgumentParser, *old: str) -> None:
    """``--no-figures`` (``old``: earlier spellings, hidden)."""
    p.add_argument("--no-figures", action="store_true", help=helptext("--no-figures"))
    for spelling in old:
        alias(p, spelling, "no_figures", "--no-figures", action="store_true")


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
    p.add_argument("--no-progress", action="store_true", help=helptext("--no-progress"))


def class_flags(p: argparse.ArgumentParser, top_k: int = 1, top_k_default: str = "default 1: the prediction") -> None:
    """``--class`` (repeatable, the same for every image), ``--top-k N`` and ``--labels FILE``: which classes to explain."""
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS", help=helptext("--class"))
    p.add_argument("--top-k", type=int_at_least(1), default=top_k, metavar="K", help=helptext("--top-k", top_k_default))
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
    strength_flag(p)
    goal_flag(p)
    float64_flag(p)
    tolerance_flag(p)


#: what ``model_flags`` parse, by the config field names every command's config shares
MODEL_FIELDS = ("model", "weights", "random_weights", "num_classes", "class_names", "layer")


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
