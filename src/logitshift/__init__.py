"""logitshift: the logit-shift blind spot of gradient explanations, shown, measured and removed.

A classifier's logits ``z`` can be replaced by ``z + t(x)·1``: every prediction
and probability stays the same, every gradient of a logit changes. See
Lerma & Lucas, "A Vulnerability of Attribution Methods Using Pre-Softmax
Scores", arXiv:2307.03305.

    >>> import logitshift as ls
    >>> m = ls.load_model()                                   # EfficientNet-Lite0, offline
    >>> x = ls.batch([ls.load_image("chelsea", m.preprocess)])
    >>> shifted = ls.shift_model(m.module, m.layer, "region", 0.1, ls.parse_target("top-left"), check=x)
    >>> maps = ls.GradCAM().maps(shifted, x, target=torch.tensor([285]), score="logit",
    ...                          variant="shifted", layer=m.layer)
    >>> steered = ls.steer(m, "top-left", methods=["gradcampp", "saliency"], strength="auto", check=x)
    >>> ls.audit_model(shifted, x).verdict                    # 'shifted'
    >>> shown = ls.display_maps(maps, x.shape[-1])            # input size, in [0, 1]
    >>> ls.save_maps("maps.npz", maps, image=["chelsea"], **{"class": [285]}, score=["logit"],
    ...              method=["gradcam"], variant=["shifted"])

Text classifiers (a BERT trained here on Debian's fortunes; HuggingFace folders; random configs)::

    >>> tm = ls.load_text_model("fortunes-bert")
    >>> ids = tm.encode(["The computer is down again."])
    >>> shifted = ls.steer_tokens(tm, "pos:1-2", ids)          # or a word, or "re:REGEX"
    >>> out = ls.token_maps(shifted, tm, ids, ["ig"], ["logit", "prob"], ("original", "shifted"))
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import _moved
from ._version import __version__ as __version__

#: each public name and the module it lives in: imported on first use, so that ``import logitshift`` (and the
#: command line's ``--help``) does not import torch (issue 30)
_HOMES = {
    "METHODS": "attribution",
    "GradCAM": "attribution",
    "forward_pass": "attribution",
    "get_method": "attribution",
    "normalize": "attribution",
    "upsample": "attribution",
    "AuditResult": "audit.verdict",
    "audit_model": "audit.verdict",
    "class_name": "core.classes",
    "imagenet_classes": "core.classes",
    "resolve_class": "core.classes",
    "LogitShiftError": "core.errors",
    "SAMPLES": "core.images",
    "batch": "core.images",
    "load_image": "core.images",
    "spearman": "core.metrics",
    "target_mass": "core.metrics",
    "LoadedModel": "core.models",
    "default_layer": "core.models",
    "get_layer": "core.models",
    "load_model": "core.models",
    "IMMUNE": "core.scores",
    "SCORES": "core.scores",
    "score": "core.scores",
    "Target": "core.targets",
    "parse_target": "core.targets",
    "Equivalence": "shift.model",
    "ShiftedModel": "shift.model",
    "equivalence": "shift.model",
    "load_shifted": "shift.save",
    "shift_model": "shift.steer",
    "steer": "shift.steer",
    "display_maps": "view.display",
    "load_maps": "view.display",
    "overlay": "view.display",
    "save_maps": "view.display",
    "token_maps": "attribution.tokens",
    "load_text_model": "core.text",
    "steer_tokens": "shift.tokens",
    "token_effect": "shift.tokens",
    "weights_only": "shift.textweights",
}

if TYPE_CHECKING:  # the eager imports, for type checkers and editors
    from .attribution import METHODS, GradCAM, forward_pass, get_method, normalize, upsample
    from .attribution.tokens import token_maps
    from .audit.verdict import AuditResult, audit_model
    from .core.classes import class_name, imagenet_classes, resolve_class
    from .core.errors import LogitShiftError
    from .core.images import SAMPLES, batch, load_image
    from .core.metrics import spearman, target_mass
    from .core.models import LoadedModel, default_layer, get_layer, load_model
    from .core.scores import IMMUNE, SCORES, score
    from .core.targets import Target, parse_target
    from .core.text import load_text_model
    from .shift.model import Equivalence, ShiftedModel, equivalence
    from .shift.save import load_shifted
    from .shift.steer import shift_model, steer
    from .shift.textweights import weights_only
    from .shift.tokens import steer_tokens, token_effect
    from .view.display import display_maps, load_maps, overlay, save_maps


def __getattr__(name: str) -> Any:
    """A public name on first use: ``logitshift.steer`` imports :mod:`logitshift.shift.steer` then."""
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AuditResult",
    "audit_model",
    "GradCAM",
    "IMMUNE",
    "METHODS",
    "SAMPLES",
    "SCORES",
    "Equivalence",
    "LoadedModel",
    "LogitShiftError",
    "ShiftedModel",
    "Target",
    "batch",
    "class_name",
    "default_layer",
    "equivalence",
    "forward_pass",
    "get_layer",
    "get_method",
    "imagenet_classes",
    "load_image",
    "load_model",
    "normalize",
    "parse_target",
    "resolve_class",
    "score",
    "display_maps",
    "overlay",
    "save_maps",
    "load_maps",
    "shift_model",
    "spearman",
    "steer",
    "load_shifted",
    "load_text_model",
    "steer_tokens",
    "token_effect",
    "token_maps",
    "weights_only",
    "target_mass",
    "upsample",
]

_moved.install()  # old import paths, deprecated: see _moved.py
