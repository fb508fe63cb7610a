"""The words and defaults the command line shows before torch is imported (issue 30: ``--help`` answers at once).

Torch-free on purpose: ``logitshift --help`` builds every command's parser from
these, and the modules that use them import them from here (their one home).
The method names mirror the registry of :mod:`logitshift.attribution` (a test
holds them equal).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from .errors import LogitShiftError

DEFAULT_MODEL = "efficientnet-lite0"
#: the sample images of the commands' default run (scikit-image ships them; no download)
DEFAULT_SAMPLES = ("chelsea", "coffee", "rocket", "astronaut")

#: the scores a map explains (see :mod:`logitshift.core.scores`), and the ones a logit shift cannot move
SCORES = ("logit", "prob", "logprob", "centered", "contrast")
IMMUNE = ("prob", "logprob", "centered", "contrast")

#: the registered methods by family, in the order tables and figures list them
CAM_NAMES = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam")
INPUT_NAMES = ("saliency", "gradxinput", "ig", "smoothgrad")
ATTENTION_NAMES = ("rollout", "attngrad")
METHOD_NAMES = CAM_NAMES + INPUT_NAMES
#: the method families the audit measures: every CAM method, then saliency and gradient × input
AUDITED_NAMES = (*CAM_NAMES, "saliency", "gradxinput")

#: largest max |Δprob| a shifted model may have against the original
TOLERANCE = 1e-5
#: Integrated Gradients steps and SmoothGrad samples of every command (the shift's effect on them does not
#: depend on the count; docs/matrix.md). 16 keeps the default matrix under a minute on 2 CPU cores.
DEFAULT_STEPS = 16
#: size budget of a report's embedded figures, in MB
DEFAULT_MAX_MB = 24.0

# audit (see docs/audit.md for the calibration)
#: κ above which a model is called shifted
THRESHOLD = 3.0
DEFAULT_PROBES = 4
DEFAULT_MAX_LAYERS = 8
DEFAULT_MAX_IMAGES = 8
DEFAULT_MEMORY_GB = 8.0  # a model file is audited in a child with this budget beyond its interpreter (sandbox.py)
DEFAULT_CPU_SECONDS = 3600
#: the classes per image the audit explains by default (top-k): users explain more than the prediction (issue 25)
DEFAULT_TOP_K = 2
#: the most memory one chunk of Integrated Gradients / SmoothGrad points may take (``--memory-budget``; see attribution/engine.py)
DEFAULT_MEMORY_BUDGET_GB = 0.5

#: common spellings of the methods' names (lower case, as typed): each to its registered name
METHOD_ALIASES = {
    "grad-cam": "gradcam",
    "grad_cam": "gradcam",
    "gradcam++": "gradcampp",
    "grad-cam++": "gradcampp",
    "gradcamplusplus": "gradcampp",
    "gradcam-pp": "gradcampp",
    "grad-campp": "gradcampp",
    "xgrad-cam": "xgradcam",
    "hires-cam": "hirescam",
    "hirescam++": "hirescam",
    "layer-cam": "layercam",
    "gradient": "saliency",
    "gradients": "saliency",
    "vanilla-gradient": "saliency",
    "gradient-x-input": "gradxinput",
    "gradient*input": "gradxinput",
    "gradientxinput": "gradxinput",
    "input-x-gradient": "gradxinput",
    "inputxgradient": "gradxinput",
    "integrated-gradients": "ig",
    "integratedgradients": "ig",
    "integrated_gradients": "ig",
    "smooth-grad": "smoothgrad",
    "noisetunnel": "smoothgrad",
    "attention-rollout": "rollout",
}


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Choices close to ``word``: first those that hold it as a whole word, then as the start of a word, then anywhere
    (each by length), then by edit distance (:func:`difflib.get_close_matches`).

    ``--class cat`` suggests "tiger cat" and "Persian cat" before "crate": a word inside a name is what a person
    means by a short word.
    """
    key = word.lower().strip()
    if not key:
        return []
    pool = list(dict.fromkeys(choices))
    lowered = {c: c.lower() for c in pool}

    def tier(c: str) -> int:
        parts = re.split(r"[\s_\-/,]+", lowered[c])
        return 0 if key in parts else 1 if any(p.startswith(key) for p in parts) else 2

    inside = sorted((c for c in pool if key in lowered[c] or (len(lowered[c]) > 2 and lowered[c] in key)), key=lambda c: (tier(c), len(c)))
    close = difflib.get_close_matches(key, list(lowered.values()), n=n, cutoff=0.6)
    by_lower = {v: c for c, v in lowered.items()}
    out = list(dict.fromkeys([*inside, *(by_lower[c] for c in close)]))
    return out[:n]


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` (empty when nothing is close), for the end of a one-line error."""
    close = did_you_mean(word, choices)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def method_name(name: str, known: Iterable[str] = METHOD_NAMES + ATTENTION_NAMES) -> str:
    """The registered name of a method as typed (``Grad-CAM++`` → ``gradcampp``), a one-line error naming what is close."""
    known = tuple(known)
    key = name.strip().lower()
    key = METHOD_ALIASES.get(key, METHOD_ALIASES.get(key.replace(" ", "-"), key))
    if key in known:
        return key
    raise LogitShiftError(f"method {name!r}: unknown; expected one of {', '.join(known)}{suggestion(name, known)}")
