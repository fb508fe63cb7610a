"""A run folder as the report sees it: its typed record (if whole), figures, stores, and what is missing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import LogitShiftError
from ..core.files import RUN_STAMP
from ..core.parts import RecordError
from ..runs.records import RECORDS, Record, read_record
from ..runs.store import snapshot
from .kit import IMAGE_SUFFIXES, STORE_SUFFIXES, names, rel

#: the files the commands write their record to (demo and evaluate: summary.json; matrix: matrix.json; audit: audit.json)
SUMMARY_FILES = tuple(dict.fromkeys(t.FILE for t in RECORDS.values()))


@dataclass
class Run:
    """What a run folder holds, and what is missing from it."""

    path: Path
    record: Record | None = None
    notes: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    stores: list[Path] = field(default_factory=list)
    markdown: list[Path] = field(default_factory=list)
    summary_name: str = "summary.json"
    #: what could be learnt without a record: the configuration an evaluate store records
    inferred: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str | None:
        if self.record is not None:
            return self.record.command
        return str(self.inferred["command"]) if self.inferred.get("command") else None


def walk(path: Path, depth: int = 3, root: Path | None = None) -> Iterable[Path]:
    """Files under ``path`` (not hidden folders, not links leading out of ``root``), ``depth`` folders deep."""
    root = root or path.resolve()
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            if depth > 0 and not entry.name.startswith("."):
                yield from walk(entry, depth - 1, root)
        elif entry.is_file() and entry.resolve().is_relative_to(root):
            yield entry


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read ``run_dir``: its record (if any and if whole), figures, stores and tables.

    Raises :class:`LogitShiftError` when the folder does not exist or holds
    nothing a report could show.
    """
    path = Path(run_dir)
    if not path.exists():
        raise LogitShiftError(
            f"RUN_DIR {str(path)!r}: no such folder; expected a folder written by logitshift demo, matrix, audit or evaluate"
        )
    if not path.is_dir():
        raise LogitShiftError(f"RUN_DIR {str(path)!r}: not a folder; expected a run folder (the --out of a logitshift command)")
    run = Run(path=path)
    _read_summary(run, path)
    _list_files(run, path)
    if run.record is None and run.stores:
        try:
            config = snapshot(run.stores[0])[0]
        except LogitShiftError:
            config = None
        run.inferred = {"command": "evaluate", **config} if config else {}
        run.notes.append(
            f"the results store {rel(run.stores[0], path)} holds what was finished; `logitshift evaluate ... --resume` continues the run"
        )
    if (
        run.record is None
        and not any((path / n).is_file() for n in SUMMARY_FILES)
        and not run.stores
        and (not run.images or not (path / RUN_STAMP).exists())
    ):
        raise LogitShiftError(
            f"RUN_DIR {str(path)!r}: holds no logitshift run (neither summary.json nor a results store nor a run's figures); "
            "expected the --out folder of logitshift demo, matrix, audit or evaluate"
        )
    return run


def _read_summary(run: Run, path: Path) -> None:
    """The run's record from its summary file (the first of :data:`SUMMARY_FILES` there), or a note saying why there is none."""
    summary_path = next((path / n for n in SUMMARY_FILES if (path / n).is_file()), None)
    if summary_path is None:
        run.notes.append(
            "summary.json is missing: the run did not finish (or this is not a logitshift run folder). Showing the files found; the numbers are not available."
        )
        return
    run.summary_name = summary_path.name
    try:
        loaded = json.loads(summary_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        run.notes.append(
            f"{summary_path.name} is not valid JSON ({exc}); the run was probably interrupted while writing it. Showing the files found."
        )
        return
    try:
        run.record = read_record(loaded, summary_path.name)
    except RecordError as exc:
        run.notes.append(f"{exc}; showing the files found.")


def _list_files(run: Run, path: Path) -> None:
    """The run's figures, stores and Markdown tables; a note for files an interrupted write left half-written."""
    partial = []
    for f in walk(path):
        if f.name.startswith("."):
            if ".tmp" in f.name:
                partial.append(f.relative_to(path).as_posix())
            continue
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            run.images.append(f)
        elif suffix in STORE_SUFFIXES:
            run.stores.append(f)
        elif suffix == ".md":
            run.markdown.append(f)
    if partial:
        run.notes.append(f"{len(partial)} partly written file(s) left by an interrupted write: " + names(partial))
