"""Token heat as coloured text: one line of boxed tokens per map, the colour the token's attribution.

Each row is scaled by its own largest ``|value|`` (the number printed at its left is that scale's share
on the target, see ``NUMBERS`` in :mod:`logitshift.view.figures`). Signed maps (gradient × input, IG)
use the diverging ``RdBu_r`` (blue negative, white 0, red positive), unsigned ones (saliency) white to red.
Target tokens get a black outline. Matplotlib is imported only when a figure is drawn (Agg backend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.files import atomic_write
from .figures import _plt

#: characters per line before a row of tokens wraps
WRAP = 90


@dataclass
class TokenRow:
    """One map drawn as text: a label, one value per token, whether the values are signed, the number shown."""

    label: str
    values: np.ndarray
    signed: bool
    note: str = ""


def _layout(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(line, column) of each token, wrapping at :data:`WRAP` characters."""
    out, line, col = [], 0, 0
    for tok in tokens:
        width = len(tok) + 1
        if col and col + width > WRAP:
            line, col = line + 1, 0
        out.append((line, col))
        col += width
    return out


def token_figure(path: str | os.PathLike, tokens: Sequence[str], rows: Sequence[TokenRow], target: np.ndarray, title: str) -> str:
    """Draw every row's heat over ``tokens`` (``target``: 0/1 per token, outlined) into a PNG at ``path``."""
    plt = _plt()
    from matplotlib import colormaps

    place = _layout(tokens)
    lines = place[-1][0] + 1
    height = 0.5 + len(rows) * (0.32 * lines + 0.35)
    fig = plt.figure(figsize=(12, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, WRAP + 24)
    ax.set_ylim(height, 0)
    ax.text(1, 0.3, title, fontsize=9, va="center", weight="bold")
    y = 0.7
    for row in rows:
        v = np.asarray(row.values, dtype=float)
        scale = float(np.abs(v).max()) or 1.0
        cmap = colormaps["RdBu_r"] if row.signed else colormaps["Reds"]
        ax.text(1, y + 0.1, row.label, fontsize=7.5, va="top")
        if row.note:
            ax.text(1, y + 0.3, row.note, fontsize=7, va="top", color="0.3")
        for tok, (line, col), val, tgt in zip(tokens, place, v, target):
            level = 0.5 + 0.5 * val / scale if row.signed else abs(val) / scale
            ax.text(
                23 + col,
                y + 0.1 + 0.32 * line,
                tok,
                fontsize=7.5,
                family="monospace",
                va="top",
                color="white" if abs(level - (0.5 if row.signed else 0.0)) > (0.35 if row.signed else 0.7) else "black",
                bbox={"facecolor": cmap(level), "edgecolor": "black" if tgt else "none", "linewidth": 1.0, "pad": 1.2},
            )
        y += 0.32 * lines + 0.35
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return str(path)
