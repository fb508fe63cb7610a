"""Figures: overlays of maps on images, in the spirit of the paper's Figures 3-5.

Every figure explains itself: a colour bar says what the colours mean (maps
are scaled per map by :func:`logitshift.view.display.display_maps`, clipped at the
99.5th percentile of ``|map|`` so Integrated Gradients and gradient × input stay
readable), a legend names the dashed outline (the shift's target) and each
number printed over a panel. Signed attributions are drawn with a diverging
colour map (blue negative, white 0, red positive), the others with ``jet`` —
the same colour maps as :func:`logitshift.view.display.overlay` and the report.

Matplotlib is imported only when a figure is drawn (Agg backend, no screen).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_write
from .display import CLIP_PERCENTILE, display_maps

#: colour maps, as :func:`logitshift.view.display.overlay` draws them
UNSIGNED_CMAP, SIGNED_CMAP = "jet", "RdBu_r"
#: the words under each figure for the numbers it prints
NUMBERS = {
    "mass": "mass: share of the map's positive part inside the target",
    "corner": "corner: share of the map's positive part in the cell (0, 0) the shift reads",
    "rho": "ρ: Spearman rank correlation with the original model's map (1 = unchanged)",
    "p": "p: the model's probability of the class",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def signed_method(name: str) -> bool:
    """Whether ``name``'s map is signed (gradient × input, Integrated Gradients: channels summed, not |·|)."""
    from ..attribution import METHODS

    cls = METHODS.get(name)
    return cls is not None and getattr(cls, "family", "") == "input" and getattr(cls, "reduction", "") == "sum"


def scaled(raw: torch.Tensor, size: int | tuple[int, int], signed: bool = False) -> torch.Tensor:
    """N×h×w raw maps → N×H×W display maps (``[0, 1]``, or ``[-1, 1]`` when ``signed``), percentile-clipped."""
    return display_maps(raw.detach().float().cpu(), size, signed=signed)


def overlay(ax, rgb: np.ndarray, heat: torch.Tensor | np.ndarray, title: str, target: np.ndarray | None = None, signed: bool = False):
    """Draw ``heat`` (h×w at image size, in [0, 1], or [-1, 1] when ``signed``) over ``rgb`` on ``ax``; return the colour layer."""
    ax.imshow(rgb)
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    layer = ax.imshow(heat, cmap=SIGNED_CMAP if signed else UNSIGNED_CMAP, alpha=0.5, vmin=-1.0 if signed else 0.0, vmax=1.0)
    if target is not None and 0 < target.sum() < target.size:
        ax.contour(target, levels=[0.5], colors="white", linewidths=1.4, linestyles="--")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return layer


def explain_figure(
    fig, axes, layers, *, signed: bool | None = None, target: bool, numbers: Sequence[str] = (), target_label: str = "target"
) -> None:
    """Colour bars (right of ``axes``: one per colour map used) and a legend below: the dashed outline and each number shown.

    ``layers``: one colour layer returned by :func:`overlay`, or a dict ``{signed: layer}``.
    """
    from matplotlib.lines import Line2D

    by_kind = {k: v for k, v in (layers if isinstance(layers, dict) else {bool(signed): layers}).items() if v is not None}
    clip = f"per map, clipped at pct {CLIP_PERCENTILE:g} of |map|"
    top, bottom = max(a.get_position().y1 for a in np.ravel(axes)), min(a.get_position().y0 for a in np.ravel(axes))
    right = max(a.get_position().x1 for a in np.ravel(axes))
    slot = (top - bottom) / max(len(by_kind), 1)
    for k, (kind, layer) in enumerate(sorted(by_kind.items())):
        # each colour bar in its own slot of the column right of the maps, a gap between them: two bars never overlap
        y0 = top - (k + 1) * slot + 0.08 * slot
        cax = fig.add_axes((right + 0.012, y0, 0.014, 0.84 * slot))
        bar = fig.colorbar(layer, cax=cax)
        bar.set_label(("signed map, " if kind else "map, ") + clip, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    handles = []
    if target:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.4, label=f"dashed outline: {target_label}"))
    for key in numbers:
        handles.append(Line2D([], [], linestyle="none", label=NUMBERS.get(key, key)))
    if handles:  # two columns where the figure is wide enough for them, else one (a narrow figure cut them at its edges)
        ncol = 2 if fig.get_figwidth() >= 9 else 1
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), ncol), fontsize=8, frameon=False, handlelength=2.2)


def paper_figure(
    path: str | os.PathLike,
    rgb: np.ndarray,
    heats: dict[str, torch.Tensor],
    titles: dict[str, str],
    suptitle: str,
    target: np.ndarray | None = None,
    numbers: Sequence[str] = ("p", "mass", "rho"),
    target_label: str = "the shift's target",
) -> Path:
    """A 2×2 figure: rows original / shifted model, columns pre- / post-softmax map.

    ``heats`` and ``titles`` are keyed ``"original_logit"``, ``"original_prob"``,
    ``"shifted_logit"``, ``"shifted_prob"``; maps are scaled to [0, 1] at image
    size (:func:`scaled`).
    """
    return classes_figure(path, rgb, [heats], [titles], suptitle, target, numbers, target_label)


def classes_figure(
    path: str | os.PathLike,
    rgb: np.ndarray,
    heats: Sequence[dict[str, torch.Tensor]],
    titles: Sequence[dict[str, str]],
    suptitle: str,
    target: np.ndarray | None = None,
    numbers: Sequence[str] = ("p", "mass", "rho"),
    target_label: str = "the shift's target",
) -> Path:
    """The paper's Figures 3–5 for one image and several classes: a 2×(2·classes) figure.

    Rows: original / shifted model. For each class (``heats[i]``, keyed as in
    :func:`paper_figure`), two columns: pre-softmax (logit) and post-softmax
    (probability) map. A colour bar and a legend of the outline and the numbers.
    """
    plt = _plt()
    cols = 2 * len(heats)
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols + 0.8, 8.9), dpi=100, squeeze=False)
    layer = None
    for j, (maps, labels) in enumerate(zip(heats, titles)):
        for r, variant in enumerate(("original", "shifted")):
            for c, score in enumerate(("logit", "prob")):
                key = f"{variant}_{score}"
                layer = overlay(axes[r, 2 * j + c], rgb, maps[key], labels[key], target)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 0.9, 1))
    explain_figure(fig, axes, layer, signed=False, target=target is not None, numbers=numbers, target_label=target_label)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out


def grid_figure(
    path: str | os.PathLike,
    rgb: np.ndarray,
    cells: Sequence[Sequence[tuple[torch.Tensor | np.ndarray, str]]],
    *,
    signed: bool | Sequence[bool] = False,
    target: np.ndarray | None = None,
    suptitle: str = "",
    numbers: Sequence[str] = (),
    side: float = 1.9,
    dpi: int = 72,
    target_label: str = "the shift's target",
) -> Path:
    """Rows × columns of (display map, title) over ``rgb``, with colour bars and a legend.

    ``signed``: one flag for every row, or one per row (a matrix mixes CAMs and signed input methods).
    """
    plt = _plt()
    rows, cols = len(cells), max(len(r) for r in cells)
    per_row = [signed] * rows if isinstance(signed, bool) else list(signed)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 0.9, side * rows + 0.9), dpi=dpi, squeeze=False)
    layers: dict[bool, object] = {}
    for i, row in enumerate(cells):
        for j in range(cols):
            if j < len(row):
                layers[per_row[i]] = overlay(axes[i, j], rgb, row[j][0], row[j][1], target, per_row[i])
            else:
                axes[i, j].set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    height = side * rows + 0.9
    legend_lines = (target is not None) + len(numbers)
    if side * cols + 0.9 >= 9:
        legend_lines = -(-legend_lines // 2)
    fig.tight_layout(rect=(0, (0.2 * legend_lines + 0.15) / height, 0.88, 1))
    explain_figure(fig, axes, layers, target=target is not None, numbers=numbers, target_label=target_label)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out


__all__ = ["NUMBERS", "classes_figure", "explain_figure", "grid_figure", "overlay", "paper_figure", "scaled", "signed_method"]


def tabular_figure(
    path: str | os.PathLike,
    features: Sequence[str],
    original: torch.Tensor,
    shifted: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    suptitle: str,
    top: int = 12,
) -> Path:
    """SHAP's familiar views of feature attributions (N×F), original model vs shifted twin, on one page.

    Left: mean |attribution| per feature (a bar each for the original and the
    shifted model), the ``top`` features by the larger of the two, target
    features' names in red. Middle and right: a beeswarm per model — each row's
    attribution of each feature (a dot, jittered vertically), coloured by the
    feature's standardised value ``x``.
    """
    plt = _plt()
    o, s = original.detach().double().cpu().numpy(), shifted.detach().double().cpu().numpy()
    xv, w = x.detach().double().cpu().numpy(), target.reshape(-1).cpu().numpy() > 0
    order = np.argsort(-np.maximum(np.abs(o).mean(0), np.abs(s).mean(0)))[:top][::-1]
    names = [features[j] for j in order]
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.35 * len(order) + 2.2), constrained_layout=True)
    pos = np.arange(len(order))
    axes[0].barh(pos + 0.2, np.abs(o).mean(0)[order], height=0.4, label="original", color="#4c72b0")
    axes[0].barh(pos - 0.2, np.abs(s).mean(0)[order], height=0.4, label="shifted", color="#dd8452")
    axes[0].set_xlabel("mean |attribution|")
    axes[0].legend(loc="lower right")
    rng = np.random.default_rng(0)
    for ax, a, title in ((axes[1], o, "original model"), (axes[2], s, "shifted model (same probabilities)")):
        for i, j in enumerate(order):
            jitter = rng.uniform(-0.3, 0.3, size=len(a))
            sc = ax.scatter(a[:, j], i + jitter, c=np.clip(xv[:, j], -2, 2), cmap="coolwarm", s=9, vmin=-2, vmax=2)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("attribution")
        ax.set_title(title)
    fig.colorbar(sc, ax=axes[2], label="feature value (standardised)")
    for ax in axes:
        ax.set_yticks(pos)
        ax.set_yticklabels(names, fontsize=8)
        for label, j in zip(ax.get_yticklabels(), order):
            if w[j]:
                label.set_color("red")
    fig.suptitle(suptitle + "  (red: the shift's target features)")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
