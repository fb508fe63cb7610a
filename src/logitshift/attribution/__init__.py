"""Explanation methods, one file each over :mod:`.base`."""

from .base import Attribution, CamMethod, Pass, forward_pass, normalize, predicted, upsample
from .gradcam import GradCAM

METHODS: dict[str, type[Attribution]] = {cls.name: cls for cls in (GradCAM,)}


def get_method(name: str) -> Attribution:
    """An attribution method by name (see :data:`METHODS`)."""
    from ..errors import LogitShiftError

    if name not in METHODS:
        raise LogitShiftError(f"method {name!r}: unknown; expected one of {', '.join(METHODS)}")
    return METHODS[name]()


__all__ = ["Attribution", "CamMethod", "GradCAM", "METHODS", "Pass", "forward_pass", "get_method", "normalize", "predicted", "upsample"]
