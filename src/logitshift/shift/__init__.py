"""The shift: every term ``t(x)``, the shifted model ``z + t(x)·1``, how it is aimed and saved.

``model`` (the terms and :class:`ShiftedModel`), ``steer`` (the one front door: plan, search,
build, check), ``twins`` (the conformance twins), ``save`` (describe / rebuild / export a
shifted model).
"""

from .model import Equivalence, ShiftedModel, compare, equivalence

__all__ = ["Equivalence", "ShiftedModel", "compare", "equivalence"]
