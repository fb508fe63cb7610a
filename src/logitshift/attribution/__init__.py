"""Explanation methods, one file each over :mod:`.base`.

CAM family (maps on a spatial layer's grid): ``gradcam``, ``gradcampp``,
``xgradcam``, ``hirescam``, ``layercam``. Input family (maps on the input
pixels): ``saliency``, ``gradxinput``, ``ig``, ``smoothgrad``. Each works on a
batch, for any score of :mod:`logitshift.core.scores` and either variant
(``"original"`` / ``"shifted"``) of a :class:`~logitshift.shift.model.ShiftedModel`.
Attention family (a ViT's attention, :data:`ATTENTION_METHODS`): ``rollout``
(reads no score: immune to the shift), ``attngrad`` (gradient-weighted: not).
"""

from ..core.errors import LogitShiftError
from ..core.names import DEFAULT_MEMORY_BUDGET_GB, method_name

# The registry: each method file registers its class with @register when imported here,
# in this order (the order tables and figures list methods in). A new method is one file
# with @register plus its module name on one of these lines.
# isort: off
from . import gradcam, gradcampp, xgradcam, hirescam, layercam  # noqa: F401  CAM family
from . import saliency, gradxinput, ig, smoothgrad  # noqa: F401  input family

# isort: on
from .attngrad import AttentionGradient
from .base import (
    METHODS,
    AttentionMethod,
    Attribution,
    CamMethod,
    InputMethod,
    Pass,
    as_targets,
    forward_pass,
    normalize,
    predicted,
    upsample,
)
from .gradcam import GradCAM
from .gradcampp import GradCAMPlusPlus
from .gradxinput import GradientXInput
from .hirescam import HiResCAM
from .ig import IntegratedGradients
from .layercam import LayerCAM
from .rollout import AttentionRollout
from .saliency import Saliency
from .smoothgrad import SmoothGrad
from .xgradcam import XGradCAM

#: methods on a ViT's attention (family "attention"): not in METHODS, whose every method runs on any
#: model (the commands' defaults); get_method finds them by name.
ATTENTION_METHODS: dict[str, type[Attribution]] = {cls.name: cls for cls in (AttentionRollout, AttentionGradient)}
METHOD_LABELS: dict[str, str] = {n: c.label or n for n, c in {**METHODS, **ATTENTION_METHODS}.items()}
CAM_METHODS = tuple(n for n, c in METHODS.items() if c.family == "cam")
INPUT_METHODS = tuple(n for n, c in METHODS.items() if c.family == "input")


def sampling_options(steps: int | None = None, memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB) -> dict[str, dict]:
    """:func:`get_method` options of the sampling methods, as every command sets them: ``steps`` Integrated Gradients
    steps and SmoothGrad samples (``None``: their own), and the GB one chunk of their points may take (``None``: no cap)."""
    count = {} if steps is None else {"steps": steps}
    return {
        "ig": {**count, "memory_budget": memory_budget},
        "smoothgrad": {**({"samples": steps} if steps is not None else {}), "memory_budget": memory_budget},
    }


def get_method(name: str, **options) -> Attribution:
    """An attribution method by name (see :data:`METHODS`), with its options (e.g. ``steps=32`` for ``ig``).

    >>> get_method("ig", steps=16)
    IntegratedGradients(batch_size=32, steps=16, baseline=0.0)
    """
    known = {**METHODS, **ATTENTION_METHODS}
    name = method_name(name, known)  # Grad-CAM++ → gradcampp; an unknown name says what is close
    try:
        return known[name](**options)
    except TypeError:
        raise LogitShiftError(f"method {name!r}: options {', '.join(options)} not understood") from None


__all__ = [
    "ATTENTION_METHODS",
    "AttentionGradient",
    "AttentionMethod",
    "AttentionRollout",
    "Attribution",
    "CAM_METHODS",
    "CamMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientXInput",
    "HiResCAM",
    "INPUT_METHODS",
    "InputMethod",
    "IntegratedGradients",
    "LayerCAM",
    "METHODS",
    "METHOD_LABELS",
    "Pass",
    "Saliency",
    "SmoothGrad",
    "XGradCAM",
    "as_targets",
    "forward_pass",
    "get_method",
    "sampling_options",
    "normalize",
    "predicted",
    "upsample",
]
