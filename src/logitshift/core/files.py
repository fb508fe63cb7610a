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
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        # mkstemp makes it private (0o600), and a writer such as safetensors' save_file may have made a file of its
        # own: the finished file gets the umask's mode, as any new file
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


#: the folders a command writes into, or removes with ``--force``, inside its run folder
SUBFOLDERS = ("plots", "parts", "maps", "samples")


def refuse_links(folder: str | os.PathLike, what: str = "--out") -> None:
    """Refuse (one line) a run folder that is a symbolic link, or holds one: among its entries, or those of its
    :data:`SUBFOLDERS`. A link planted there (``OUT/.logitshift.lock``, ``OUT/plots``) would make a run write into,
    truncate or delete what it points to."""
    folder = Path(folder)
    if not folder.is_symlink() and not folder.is_dir():
        return
    links = [folder] if folder.is_symlink() else []
    if not links:
        for entry in os.scandir(folder):
            if entry.is_symlink():
                links.append(Path(entry.path))
            elif entry.name in SUBFOLDERS and entry.is_dir(follow_symlinks=False):
                links += [Path(e.path) for e in os.scandir(entry.path) if e.is_symlink()]
    if links:
        link = links[0]
        raise LogitShiftError(
            f"{what} {str(folder)!r}: {repr(str(link.relative_to(folder))) if link != folder else 'the folder'} is a symbolic link "
            f"(to {os.readlink(link)!r}); a run never writes or deletes through one: remove it, or give the folder it points to"
        )


def check_out(path: str | os.PathLike, force: bool = False, marker: str = "summary.json") -> Path:
    """Refuse an output folder that is a file, a symbolic link or holds one (:func:`refuse_links`), or holds a
    previous run (unless ``force``), without creating anything.

    Commands call it first, and :func:`run_dir` once their checks have passed: a refused run leaves no folder behind.
    """
    path = Path(path)
    refuse_links(path)
    if path.exists() and not path.is_dir():
        raise LogitShiftError(f"--out {str(path)!r}: exists and is not a folder")
    if (path / marker).exists() and not force:
        raise LogitShiftError(f"--out {str(path)!r}: holds a previous run ({marker}); pass --force to overwrite it")
    return path


#: the empty file every command leaves in its run folder first: ``logitshift report`` knows a run folder by it
#: (or by a record or a results store) even when the run was killed before it wrote its record
RUN_STAMP = ".logitshift-run"


def run_dir(path: str | os.PathLike, force: bool = False, marker: str = "summary.json") -> Path:
    """Create an output folder, stamped as a run folder (:data:`RUN_STAMP`); refuse to reuse one that holds a
    previous run unless ``force``."""
    path = check_out(path, force, marker)
    path.mkdir(parents=True, exist_ok=True)
    RunLock(path).check()
    remove_temporaries(path)
    (path / RUN_STAMP).touch()
    return path


def remove_temporaries(folder: Path) -> int:
    """Delete the temporary dot-files a killed writer left in ``folder`` and its ``plots/`` (never a finished file)."""
    n = 0
    for sub in (folder, folder / "plots"):
        if sub.is_dir() and not sub.is_symlink():
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

    def _open(self, flags: int) -> int:
        """The lock file, never through a symbolic link (``O_NOFOLLOW``), and only if it is a regular file."""
        import stat

        try:
            fd = os.open(self.path, flags | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o666)
        except OSError as exc:
            if self.path.is_symlink():
                raise LogitShiftError(
                    f"{self.what} {str(self.folder)!r}: {self.NAME} is a symbolic link (to {os.readlink(self.path)!r}); "
                    "a run never writes through one: remove it"
                ) from None
            raise LogitShiftError(f"{self.what} {str(self.folder)!r}: {self.NAME} cannot be opened ({exc.strerror or exc})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LogitShiftError(f"{self.what} {str(self.folder)!r}: {self.NAME} is not a regular file; remove it")
        return fd

    def acquire(self) -> RunLock:
        import fcntl
        import sys

        self.folder.mkdir(parents=True, exist_ok=True)
        refuse_links(self.folder, self.what)
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
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

        if not self.path.exists() and not self.path.is_symlink():
            return
        fd = self._open(os.O_RDONLY)
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


def import_object(spec: str, what: str = "model") -> Any:
    """The object a ``package.module:name`` spec names, imported because the user named it; the current folder is
    searched too, as ``python -m`` would (a console script's ``sys.path`` starts at its own bin folder instead).

    ``what`` names the spec in the one-line error (``model``, ``explainer``)."""
    import importlib
    import sys

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise LogitShiftError(f"{what} {spec!r}: expected package.module:name")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LogitShiftError(f"{what} {spec!r}: cannot import {attr!r} from {module_name!r} ({exc})") from exc
