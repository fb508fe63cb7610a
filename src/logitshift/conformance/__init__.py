"""Conformance: does an explainer, a target or a metric survive a logit shift ``z + t(x)·1``?

:func:`check` runs explainers (logitshift's own, peer-library adapters, or a
user's ``pkg.module:fn``) on a model and on shifted twins built to steer
their kind (:mod:`.constructions`), and gives a verdict per cell
(:mod:`.check`). The ``logitshift check`` command is :mod:`logitshift.runs.check`.
"""

from ..shift.twins import KINDS, PresenceShift, RampShift, twin
from .cells import Cell, adapter_explainers, check, context, exit_code, finding, verdict
from .explainer import (
    ADAPTERS,
    Context,
    Explainer,
    Memo,
    MissingLibrary,
    adapter,
    user_explainer,
)

__all__ = [
    "ADAPTERS",
    "KINDS",
    "Cell",
    "Context",
    "Explainer",
    "Memo",
    "MissingLibrary",
    "PresenceShift",
    "RampShift",
    "adapter",
    "adapter_explainers",
    "check",
    "context",
    "exit_code",
    "finding",
    "twin",
    "user_explainer",
    "verdict",
]
