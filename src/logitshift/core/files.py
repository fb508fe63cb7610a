"""Writing outputs safely: atomic files and run folders that are never clobbered.

Every file is written to a temporary name in the same folder (a dot-file with
``.tmp`` in its name) and renamed into place, so a killed process leaves
either the old file or the new one, never a half-written one under the real
name; it gets the permissions the umask gives a new file (``0o666 & ~umask``),
like any file the user creates. :func:`run_dir` removes such temporary files
left by a killed run. :class:`RunLock` keeps a second run out of a folder in use.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from .errors import LogitShiftError


def umask_mode() -> int:
    """The mode a new file gets under the current umask (``0o666 & ~umask``)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``data`` (bytes, text, or a function that writes to a given path) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.chmod(tmp, umask_mode())  # mkstemp makes it private (0o600)
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


def check_out(path: str | os.PathLike, force: bool = False, marker: str = "summary.json") -> Path:
    """Refuse an output folder that is a file, or holds a previous run (unless ``force``), without creating anything.

    Commands call it first, and :func:`run_dir` once their checks have passed: a refused run leaves no folder behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LogitShiftError(f"--out {str(path)!r}: exists and is not a folder")
    if (path / marker).exists() and not force:
        raise LogitShiftError(f"--out {str(path)!r}: holds a previous run ({marker}); pass --force to overwrite it")
    return path


def run_dir(path: str | os.PathLike, force: bool = False, marker: str = "summary.json") -> Path:
    """Create an output folder; refuse to reuse one that holds a previous run unless ``force``."""
    path = check_out(path, force, marker)
    path.mkdir(parents=True, exist_ok=True)
    RunLock(path).check()
    remove_temporaries(path)
    return path


def remove_temporaries(folder: Path) -> int:
    """Delete the temporary dot-files a killed writer left in ``folder`` and its ``plots/`` (never a finished file)."""
    n = 0
    for sub in (folder, folder / "plots"):
        if sub.is_dir():
            for stale in sub.glob(".*.tmp*"):
                stale.unlink(missing_ok=True)
                n += 1
    return n


#: descriptors of the run locks this process holds (see :func:`drop_inherited_locks`)
_HELD: set[int] = set()


def drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close its copies of the parent's run-lock descriptors.

    An ``flock`` belongs to the open file, which a fork shares: a worker that kept its copy would hold the run
    folder for seconds after its parent was killed, and a resume started at once would be refused. Closing a copy
    does not unlock the parent's (only the last close does)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``FOLDER/.logitshift.lock``, which holds the
    holder's pid and command line. The kernel drops the lock when the holder dies, so a killed run never
    leaves the folder locked (its DataLoader workers drop their copies: :func:`drop_inherited_locks`). A second
    run gets a one-line error naming the holder."""

    NAME = ".logitshift.lock"

    def __init__(self, folder: str | os.PathLike, what: str = "--out") -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.what = what
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return f"pid {text}" if text else "another process"

    def _refuse(self) -> LogitShiftError:
        return LogitShiftError(
            f"{self.what} {str(self.folder)!r}: in use by another run ({self._holder()}); wait for it to end or stop it first"
        )

    def acquire(self) -> RunLock:
        import fcntl
        import sys

        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse() from None
            try:  # the file may have been unlinked by the previous holder between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} ({' '.join(['logitshift', *sys.argv[1:]])[:200]})\n".encode("utf-8", "backslashreplace"))
        self.fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self.fd)  # closing drops the lock
                self.fd = None

    def check(self) -> None:
        """Refuse (one line) if another process holds the folder; takes nothing."""
        import fcntl

        if not self.path.exists():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse() from None
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def provenance() -> dict[str, Any]:
    """When and with what a run was made, for the record in every summary."""
    import platform
    from datetime import datetime

    import numpy
    import torch

    from .._version import __version__

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "logitshift": __version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "python": platform.python_version(),
        },
    }
