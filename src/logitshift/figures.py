"""Figures: overlays of maps on images, in the spirit of the paper's Figures 3-5.

Matplotlib is imported only when a figure is drawn (Agg backend, no screen).
"""

from __future__ import annotations

import os
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
    """A 2×2 figure: rows original / shifted model, columns pre- / post-softmax Grad-CAM.

    ``heats`` and ``titles`` are keyed ``"original_logit"``, ``"original_prob"``,
    ``"shifted_logit"``, ``"shifted_prob"``; maps are normalised, at image size.
    """
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(7.2, 7.6), dpi=100)
    for r, variant in enumerate(("original", "shifted")):
        for c, score in enumerate(("logit", "prob")):
            key = f"{variant}_{score}"
            overlay(axes[r, c], rgb, heats[key], titles[key], target)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out
