"""The 1000 ImageNet class names, addressable by index or by name.

The names ship as package data (``data/imagenet_classes.json``, the list
torchvision uses), so nothing is fetched at run time.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from importlib import resources

from .errors import LogitShiftError


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The ImageNet-1k class names, index ``i`` is class ``i``."""
    text = resources.files("logitshift").joinpath("data/imagenet_classes.json").read_text()
    return tuple(json.loads(text))


def class_name(index: int, names: tuple[str, ...] | None = None) -> str:
    """Human-readable name of class ``index`` (``"class 17"`` when unnamed)."""
    names = imagenet_classes() if names is None else names
    return names[index] if 0 <= index < len(names) else f"class {index}"


def resolve_class(spec: str | int, num_classes: int = 1000, names: tuple[str, ...] | None = None) -> int:
    """Turn ``"maze"``, ``"soccer ball"``, ``"646"`` or ``646`` into a class index.

    Names match case-insensitively; a name that is not found raises an error
    that suggests the closest names.
    """
    names = imagenet_classes() if names is None else names
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num_classes:
            raise LogitShiftError(f"class {text!r}: index out of range, expected 0..{num_classes - 1}")
        return index
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3, cutoff=0.6)
    hint = ", ".join(repr(names[lowered.index(c)]) for c in close)
    raise LogitShiftError(
        f"class {text!r}: no such class name" + (f"; did you mean {hint}?" if hint else "; give a name or an index 0..999")
    )
