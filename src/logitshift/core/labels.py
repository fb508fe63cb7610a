"""Per-image true labels (``--labels FILE``): which class to explain for each image.

Two forms, one label a line, a label being a class name or an index
(:func:`~logitshift.core.classes.resolve_class`):

* **CSV / TSV** (a ``.csv`` / ``.tsv`` file, or lines holding a comma or a
  tab): ``path,label``. A path is matched to the images by the file it names
  (relative to the labels file's folder, else to the current folder), else by
  a sample name, an image's name or its file name. A header line
  (``path,label``) and rows naming images not being explained are skipped;
  an image without a row is an error.
* **one label a line**, in the order of the images (``--images`` as listed,
  folders in sorted order): as many labels as images.

Blank lines and ``#`` comments are skipped in both. Any other problem is one
:class:`~logitshift.core.errors.LogitShiftError` naming the file and line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from .classes import resolve_class
from .errors import LogitShiftError
from .images import Item, storable

HEADER_PATHS = ("path", "image", "file", "filename", "name")


def read_labels(path: str | os.PathLike, items: Sequence[Item], num_classes: int, names: Sequence[str] | None = None) -> dict[str, int]:
    """The class index of every item (by :attr:`Item.key`) from the labels file at ``path``."""
    where = f"--labels {str(path)!r}"
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LogitShiftError(f"{where}: cannot be read ({type(exc).__name__}); expected a UTF-8 text file") from exc
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise LogitShiftError(f"{where}: no labels found")

    def label(n: int, value: str) -> int:
        try:
            return resolve_class(value, num_classes, names)
        except LogitShiftError as exc:
            raise LogitShiftError(f"{where} line {n}: {exc}") from None

    delimited = p.suffix.lower() in (".csv", ".tsv") or any("\t" in line or "," in line for _, line in lines)
    if not delimited:
        if len(lines) != len(items):
            raise LogitShiftError(
                f"{where}: {len(lines)} labels for {len(items)} images; one label a line, in image order "
                "(or path,label lines to match them by file)"
            )
        return {it.key: label(n, line) for it, (n, line) in zip(items, lines)}

    tab = p.suffix.lower() == ".tsv" or ("\t" in lines[0][1] and p.suffix.lower() != ".csv")
    match = _matcher(items, p.parent)
    found: dict[str, int] = {}
    for index, (n, line) in enumerate(lines):
        row = next(csv.reader([line], delimiter="\t" if tab else ","))
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise LogitShiftError(f"{where} line {n}: expected path{'<tab>' if tab else ','}label, got {line[:80]!r}")
        image, value = row[0].strip(), row[1].strip()
        if index == 0 and image.lower() in HEADER_PATHS and value.lower() in ("label", "class", "target"):
            continue
        key = match(image)
        if key is not None:
            found[key] = label(n, value)
    missing = [it for it in items if it.key not in found]
    if missing:
        raise LogitShiftError(
            f"{where}: no label for image {missing[0].spec!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return found


def _matcher(items: Sequence[Item], base: Path):
    """``path text → item key`` (None: not one of the items): by file, then by sample, name or file name (when unique)."""
    keys = {it.key for it in items}
    by_name: dict[str, list[str]] = {}
    for it in items:
        for alias in {it.name, Path(it.spec).name, it.spec}:
            by_name.setdefault(alias, []).append(it.key)

    def match(text: str) -> str | None:
        for folder in (base, Path.cwd()):
            candidate = Path(text) if Path(text).is_absolute() else folder / text
            if candidate.exists():
                key = storable(str(candidate.resolve()))
                if key in keys:
                    return key
        if f"sample:{text}" in keys:
            return f"sample:{text}"
        hits = set(by_name.get(text, ()))
        return hits.pop() if len(hits) == 1 else None

    return match


__all__ = ["read_labels"]
