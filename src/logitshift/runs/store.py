"""The results store of ``logitshift evaluate``: one SQLite file in WAL mode.

Why SQLite (WAL) rather than append-only Parquet parts:

* **Killed at any instant, nothing half-written.** Each batch is one
  transaction: its metric rows *and* the marks that say its images are done
  are committed together or not at all. A process killed with SIGKILL
  mid-batch leaves the file as of the last commit; SQLite rolls the torn
  transaction back when the file is next opened. Parquet parts would need the
  same guarantee rebuilt by hand (temporary part, rename, a manifest of which
  images each part covers).
* **No duplicates, enforced by the file itself.** ``rows`` has a UNIQUE key on
  the row identity ``(image, class, method, score, variant)``; a second
  insert of the same row is an error, not a silent duplicate. Resuming skips
  the images marked done, so it adds exactly the rows that are missing: no
  duplicates and no gaps.
* **In the standard library**, readable while it is being written (WAL lets
  readers see the last commit without blocking the writer: a progress poller,
  a report of a run in progress), one file to copy, and queried with SQL.
  Parquet needs pyarrow and a merge step to read a consistent whole.

``synchronous=NORMAL`` in WAL mode: a committed batch survives the process
being killed (the OS holds the write); after a power cut the last few
batches may be rolled back, never corrupted, and a resume recomputes them.

Under ``torchrun`` every rank writes a store of its own
(``parts/rank-R.sqlite``) and rank 0 merges them into the main store with
:meth:`Store.merge` (one transaction; ``INSERT OR IGNORE``, so a merge
interrupted after its commit but before the parts are deleted is harmless).

Tables::

    meta(key PRIMARY KEY, value)            the run's configuration (JSON)
    images(image PRIMARY KEY, name, status 'done'|'bad', reason, rank)
    rows(image, name, class, is_top1, method, score, variant,
         target_mass, spearman_vs_original, max_abs_prob_diff, prob, top1,
         UNIQUE(image, class, method, score, variant))

Example::

    >>> with Store("runs/eval/results.sqlite") as st:
    ...     st.commit_batch(rows, done=["/data/a.png"], bad=[("/data/b.png", "b", "empty file")])
    ...     len(st.rows())
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import LogitShiftError

#: the columns of a result row, in order, with their SQL types.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "TEXT NOT NULL"),  # the image's identity: absolute path, or sample:NAME
    ("name", "TEXT NOT NULL"),  # a short display name (file stem or sample name)
    ("class", "INTEGER NOT NULL"),  # the explained class
    ("is_top1", "INTEGER NOT NULL"),  # 1 if the class is the original model's top-1 for this image
    ("method", "TEXT NOT NULL"),
    ("score", "TEXT NOT NULL"),
    ("variant", "TEXT NOT NULL"),  # original | shifted
    ("target_mass", "REAL"),  # share of the map's positive mass inside the shift's target
    ("spearman_vs_original", "REAL"),  # rank correlation with the original model's map (same class/method/score)
    ("max_abs_prob_diff", "REAL"),  # max_j |p_j - p'_j| between the two models, for this image
    ("prob", "REAL"),  # this variant's probability of the class
    ("top1", "INTEGER"),  # this variant's top-1 class
)
FIELDS = tuple(name for name, _ in COLUMNS)
KEY = ("image", "class", "method", "score", "variant")


def _q(name: str) -> str:
    return f'"{name}"'


SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS images (image TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "status TEXT NOT NULL CHECK (status IN ('done', 'bad')), reason TEXT, rank INTEGER)",
    "CREATE TABLE IF NOT EXISTS rows ("
    + ", ".join(f"{_q(n)} {t}" for n, t in COLUMNS)
    + ", UNIQUE ("
    + ", ".join(_q(k) for k in KEY)
    + "))",
]


class Store:
    """A results store (a SQLite file in WAL mode); also a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
            with self.transaction():
                for statement in SCHEMA:
                    self.conn.execute(statement)
        except sqlite3.DatabaseError as exc:  # not a database, corrupt, read-only, locked
            raise LogitShiftError(
                f"store {str(self.path)!r}: not a usable SQLite results store ({exc}); move it away, or start over with --force"
            ) from None

    # -- plumbing
    def transaction(self):
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- configuration
    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # -- writing
    def commit_batch(
        self,
        rows: Iterable[dict[str, Any]],
        done: Sequence[tuple[str, str]] = (),
        bad: Sequence[tuple[str, str, str]] = (),
        rank: int = 0,
    ) -> None:
        """Write one batch in one transaction: its rows, its done images ``(image, name)``,
        its bad images ``(image, name, reason)``."""
        placeholders = ", ".join("?" for _ in FIELDS)
        with self.transaction():
            self.conn.executemany(
                f"INSERT INTO rows ({', '.join(_q(f) for f in FIELDS)}) VALUES ({placeholders})",
                [tuple(r[f] for f in FIELDS) for r in rows],
            )
            self.conn.executemany(
                "INSERT INTO images (image, name, status, reason, rank) VALUES (?, ?, 'done', NULL, ?)",
                [(image, name, rank) for image, name in done],
            )
            self.conn.executemany(
                "INSERT INTO images (image, name, status, reason, rank) VALUES (?, ?, 'bad', ?, ?)",
                [(image, name, reason, rank) for image, name, reason in bad],
            )

    def merge(self, parts: Sequence[str | os.PathLike]) -> int:
        """Copy the rows and image marks of other stores into this one (one transaction).

        Returns the number of rows added. Rows already present are kept (a row is
        a pure function of its key and the run's configuration).
        """
        before = self.count()
        cols = ", ".join(_q(f) for f in FIELDS)
        for i, part in enumerate(parts):
            self.conn.execute(f"ATTACH DATABASE ? AS part{i}", (str(part),))
        try:
            with self.transaction():
                for i in range(len(parts)):
                    self.conn.execute(f"INSERT OR IGNORE INTO rows ({cols}) SELECT {cols} FROM part{i}.rows")
                    self.conn.execute(
                        f"INSERT OR IGNORE INTO images (image, name, status, reason, rank) "
                        f"SELECT image, name, status, reason, rank FROM part{i}.images"
                    )
        finally:
            for i in range(len(parts)):
                self.conn.execute(f"DETACH DATABASE part{i}")
        return self.count() - before

    # -- reading
    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])

    def finished(self) -> set[str]:
        """Images already handled (evaluated or recorded as bad)."""
        return {r[0] for r in self.conn.execute("SELECT image FROM images")}

    def images(self, status: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT image, name, status, reason, rank FROM images"
        args: tuple = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        cur = self.conn.execute(query + " ORDER BY image", args)
        return [dict(zip(("image", "name", "status", "reason", "rank"), r)) for r in cur]

    def rows(self) -> list[dict[str, Any]]:
        """All rows, ordered by their key."""
        order = ", ".join(_q(k) for k in KEY)
        cur = self.conn.execute(f"SELECT {', '.join(_q(f) for f in FIELDS)} FROM rows ORDER BY {order}")
        return [dict(zip(FIELDS, r)) for r in cur]


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on an exception)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_exc) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def remove(path: str | os.PathLike) -> None:
    """Delete a store file with its WAL and shared-memory companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def snapshot(path: str | os.PathLike) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """Read-only view of a store as of its last commit: (configuration, images, rows).

    Opens the file with ``mode=ro`` (nothing is created or changed), so it reads
    the store of a run in progress or killed. Raises :class:`LogitShiftError`
    when the file is not a results store.
    """
    from ..core.errors import LogitShiftError

    p = Path(path)
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
            config = json.loads(row[0]) if row else None
            images = [
                dict(zip(("image", "name", "status", "reason", "rank"), r))
                for r in con.execute("SELECT image, name, status, reason, rank FROM images ORDER BY image")
            ]
            order = ", ".join(_q(k) for k in KEY)
            rows = [dict(zip(FIELDS, r)) for r in con.execute(f"SELECT {', '.join(_q(f) for f in FIELDS)} FROM rows ORDER BY {order}")]
        finally:
            con.close()
    except (sqlite3.Error, ValueError) as exc:
        raise LogitShiftError(f"results store {p.name!r}: cannot be read ({exc})") from None
    return (config if isinstance(config, dict) else None), images, rows
