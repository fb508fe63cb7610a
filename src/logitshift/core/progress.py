"""Progress on stderr: a tqdm bar on a terminal, one line per stage elsewhere (issue 30: no ``\\r`` in a log file).

Every long stage of the library reports through :func:`bar` (nothing below ``cli/`` prints
anything else). On a terminal it is tqdm's bar; on a stderr that is not a terminal (a log file,
a pipe, CI) it is :class:`StageLines`: one line when the stage ends, with its count and time,
written once however often the stage is closed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


class StageLines:
    """tqdm's small interface (``update``, ``set_postfix_str``, ``close``, iteration) that writes one line per stage."""

    def __init__(
        self, iterable: Iterable | None = None, *, desc: str = "", total: float | None = None, unit: str = "it", initial: float = 0
    ) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = initial
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> StageLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        of = f"/{self.total:g}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        sys.stderr.write(f"{self.desc}: {self.n:g}{of} {self.unit} in {time.perf_counter() - self.start:.1f} s{extra}\n")
        sys.stderr.flush()


def bar(
    iterable: Iterable | None = None, *, desc: str, enabled: bool = True, unit: str = "it", total: float | None = None, **kw: Any
) -> Any:
    """A progress bar for one stage: tqdm on a terminal, :class:`StageLines` otherwise, nothing when not ``enabled``."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return StageLines(iterable, desc=desc, total=total, unit=unit, initial=kw.get("initial", 0))
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, file=sys.stderr, **kw)
