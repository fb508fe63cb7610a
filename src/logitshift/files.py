"""Writing outputs safely: atomic files and run folders that are never clobbered.

Every file is written to a temporary name in the same folder (a dot-file with
``.tmp`` in its name) and renamed into place, so a killed process leaves
either the old file or the new one, never a half-written one under the real
name. :func:`run_dir` removes such temporary files left by a killed run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import LogitShiftError


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes to a given path) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def run_dir(path: str | os.PathLike, force: bool = False, marker: str = "summary.json") -> Path:
    """Create an output folder; refuse to reuse one that holds a previous run unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LogitShiftError(f"--out {str(path)!r}: exists and is not a folder")
    if (path / marker).exists() and not force:
        raise LogitShiftError(f"--out {str(path)!r}: holds a previous run ({marker}); pass --force to overwrite it")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(".*.tmp*"):  # left by a killed writer: never a finished file
        stale.unlink(missing_ok=True)
    return path


def provenance() -> dict[str, Any]:
    """When and with what a run was made, for the record in every summary."""
    import platform
    from datetime import datetime, timezone

    import numpy
    import torch

    from . import __version__

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"logitshift": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
    }
