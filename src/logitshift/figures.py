"""Figures: overlays of maps on images, in the spirit of the paper's Figures 3-5.

Matplotlib is imported only when a figure is drawn (Agg backend, no screen).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def overlay(ax, rgb: np.ndarray, heat: torch.Tensor | np.ndarray, title: str, target: np.ndarray | None = None) -> None:
    """Draw ``heat`` (h×w in [0, 1], already at image size) over ``rgb`` on ``ax``."""
    ax.imshow(rgb)
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    if target is not None and 0 < target.sum() < target.size:
        ax.contour(target, levels=[0.5], colors="white", linewidths=1.2, linestyles="--")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def paper_figure(
    path: str | os.PathLike,
    rgb: np.ndarray,
    heats: dict[str, torch.Tensor],
    titles: dict[str, str],
    suptitle: str,
    target: np.ndarray | None = None,
) -> Path:
    """A 2×2 figure: rows original / shifted model, columns pre- / post-softmax map.

    ``heats`` and ``titles`` are keyed ``"original_logit"``, ``"original_prob"``,
    ``"shifted_logit"``, ``"shifted_prob"``; maps are normalised, at image size.
    """
    return classes_figure(path, rgb, [heats], [titles], suptitle, target)


def classes_figure(
    path: str | os.PathLike,
    rgb: np.ndarray,
    heats: Sequence[dict[str, torch.Tensor]],
    titles: Sequence[dict[str, str]],
    suptitle: str,
    target: np.ndarray | None = None,
) -> Path:
    """The paper's Figures 3–5 for one image and several classes: a 2×(2·classes) figure.

    Rows: original / shifted model. For each class (``heats[i]``, keyed as in
    :func:`paper_figure`), two columns: pre-softmax (logit) and post-softmax
    (probability) map.
    """
    plt = _plt()
    cols = 2 * len(heats)
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols, 8.2), dpi=100, squeeze=False)
    for j, (maps, labels) in enumerate(zip(heats, titles)):
        for r, variant in enumerate(("original", "shifted")):
            for c, score in enumerate(("logit", "prob")):
                key = f"{variant}_{score}"
                overlay(axes[r, 2 * j + c], rgb, maps[key], labels[key], target)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out
