"""The conformance table as Markdown: the finding first, then one row per cell, grouped by library."""

from __future__ import annotations

from collections.abc import Sequence

from .cells import Cell, finding


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def rows(cells: list[Cell]) -> list[str]:
    lines = [
        "| library | method | target / score | twin | max \\|Δp\\| | share (honest) | Spearman / change | verdict | why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c.change is not None:
            stat = f"Δ {_f(c.change, '{:.2g}')}"
        else:
            stat = f"ρ {_f(c.spearman, '{:.3f}')}"
        verdict = f"**{c.verdict}**"
        why = c.reason.replace("|", "\\|")
        lines.append(
            f"| {c.library} | {c.method} | {c.target} | {c.construction or c.kind} | {_f(c.max_dp, '{:.1e}')} | "
            f"{_f(c.share)} ({_f(c.share_honest)}) | {stat if c.verdict != 'n/a' else '–'} | {verdict} | {why} |"
        )
    return lines


def markdown(title: str, cells: list[Cell], notes: Sequence[str] = ()) -> str:
    """A section: title, finding, notes, table."""
    return "\n".join([f"## {title}", "", finding(cells), "", *notes, *([""] if notes else []), *rows(cells), ""]) + "\n"


__all__ = ["markdown", "rows"]
