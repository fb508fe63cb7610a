"""The 1000 ImageNet class names, addressable by index or by name.

The names ship as package data (``data/imagenet_classes.json``, the list
torchvision uses), so nothing is fetched at run time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import LogitShiftError
from .names import suggestion


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The ImageNet-1k class names, index ``i`` is class ``i``."""
    text = resources.files("logitshift").joinpath("data/imagenet_classes.json").read_text()
    return tuple(json.loads(text))


def load_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a file: a JSON list (or ``{"0": name, …}``), or one name per line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LogitShiftError(
            f"class names {str(path)!r}: cannot be read ({exc.__class__.__name__}); expected a UTF-8 text or JSON file"
        ) from exc
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LogitShiftError(f"class names {str(path)!r}: invalid JSON ({exc.msg}, line {exc.lineno})") from exc
        if isinstance(data, dict):
            try:
                data = [data[k] for k in sorted(data, key=int)]
            except (ValueError, TypeError):
                raise LogitShiftError(f"class names {str(path)!r}: a JSON object must map indices 0..C-1 to names") from None
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise LogitShiftError(f"class names {str(path)!r}: expected a JSON list of names")
        names = [n.strip() for n in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise LogitShiftError(f"class names {str(path)!r}: no names found")
    return tuple(names)


def class_name(index: int, names: Sequence[str] | None = None) -> str:
    """Human-readable name of class ``index`` (``"class 17"`` when unnamed).

    ``names=None`` means the ImageNet names; an empty sequence means the model's
    classes have none.
    """
    names = imagenet_classes() if names is None else names
    return names[index] if 0 <= index < len(names) else f"class {index}"


def resolve_class(spec: str | int, num_classes: int = 1000, names: Sequence[str] | None = None) -> int:
    """Turn ``"maze"``, ``"soccer ball"``, ``"646"`` or ``646`` into a class index.

    Names match case-insensitively; a name that is not found raises an error
    that suggests the closest names. ``names=None`` means the ImageNet names; an
    empty sequence (a model whose classes have no names) accepts indices only.
    """
    names = imagenet_classes() if names is None else tuple(names)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < num_classes:
            raise LogitShiftError(f"class {text!r}: index out of range, expected 0..{num_classes - 1}")
        return index
    if not names:
        raise LogitShiftError(
            f"class {text!r}: this model's {num_classes} classes have no names; give an index 0..{num_classes - 1} "
            "or name them with --classes FILE"
        )
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    hint = suggestion(text, names)  # names that contain the word first ("cat": tabby cat, Egyptian cat), then close spellings
    raise LogitShiftError(f"class {text!r}: no such class name" + (hint or f"; give a name or an index 0..{num_classes - 1}"))
