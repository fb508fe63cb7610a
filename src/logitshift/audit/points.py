"""The inputs explanation methods feed the model, besides the image itself: where the audit looks too.

A shift ``t(x)`` that is zero on the audited images and on along the inputs a
method evaluates the model at fools that method while every statistic taken
on the images equals the honest model's. So the audit adds, to the images, the
points each method family feeds the model with its default settings:

* ``ig`` (Integrated Gradients): a point ``b + α·(x − b)`` of the straight path
  from the baseline ``b`` (:class:`~logitshift.attribution.IntegratedGradients`'
  default, 0), ``α`` one of its Gauss–Legendre nodes (default ``steps``),
  drawn with the audit's seed;
* ``smoothgrad``: a noisy copy ``x + σ·ε``, ``σ = noise·(max x − min x)``
  (:class:`~logitshift.attribution.SmoothGrad`'s default noise 0.15);
* ``occlusion`` (Captum's ``Occlusion``, feature ablation): ``x`` with one
  square window (a quarter of the side) set to the baseline 0, at a drawn place;
* ``scorecam`` (Score-CAM): ``x ⊙ ‖A_k‖`` with ``A_k`` one channel of the last
  audited layer, upsampled and scaled to [0, 1] (the channel with the largest
  mean activation, as Score-CAM's strongest masks).

One point per image, the families in turn, and at least one per family:
``max(N, 4)`` points for ``N`` images. Each point is explained for the class
its image is explained for (the method explains that image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: The method families whose inputs are added, in turn.
FAMILIES = ("ig", "smoothgrad", "occlusion", "scorecam")


@dataclass
class Points:
    """Inputs a method feeds the model: the rows, the image each comes from, and a label per row."""

    x: torch.Tensor  # P×(image shape)
    source: list[int]  # the audited image each point belongs to
    labels: list[str]  # e.g. "ig α=0.31", "smoothgrad σ=0.3"

    def __len__(self) -> int:
        return len(self.source)


def _ig_point(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    from ..attribution import IntegratedGradients
    from ..attribution.ig import gauss_legendre

    ig = IntegratedGradients()
    alphas, _ = gauss_legendre(ig.steps)
    alpha = float(alphas[int(torch.randint(len(alphas), (1,), generator=gen))])
    b = ig.baseline_for(x[None])[0]
    return b + alpha * (x - b), f"ig α={alpha:.2f}"


def _smoothgrad_point(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    from ..attribution import SmoothGrad

    sigma = float(SmoothGrad().sigmas(x[None])[0])
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
    return x + sigma * eps, f"smoothgrad σ={sigma:.2g}"


def _occlusion_point(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    h, w = x.shape[-2:]
    side_h, side_w = max(1, h // 4), max(1, w // 4)
    top = int(torch.randint(h - side_h + 1, (1,), generator=gen))
    left = int(torch.randint(w - side_w + 1, (1,), generator=gen))
    out = x.clone()
    out[..., top : top + side_h, left : left + side_w] = 0
    return out, f"occlusion at ({top},{left})"


def _scorecam_point(x: torch.Tensor, act: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    if act is None:  # no spatial layer: the image itself scaled by its own brightness ranks, as a mask would
        mask = x.abs().mean(dim=0, keepdim=True)
        k = -1
    else:
        k = int(act.mean(dim=(1, 2)).argmax())
        mask = F.interpolate(act[k][None, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0].to(x.dtype)
    lo, hi = mask.min(), mask.max()
    mask = (mask - lo) / (hi - lo) if hi > lo else torch.ones_like(mask)
    return x * mask, f"scorecam channel {k}"


def method_points(model: nn.Module, x: torch.Tensor, layer: str | None, seed: int = 0, families: Sequence[str] = FAMILIES) -> Points:
    """``max(N, len(families))`` points: point ``j`` is family ``j mod F``'s input for image ``j mod N``."""
    families = tuple(families)
    if not families:
        return Points(x[:0], [], [])
    gen = torch.Generator().manual_seed(seed + 7919)
    acts = _activations(model, x, layer) if "scorecam" in families else None
    rows, source, labels = [], [], []
    for j in range(max(len(x), len(families))):
        family, i = families[j % len(families)], j % len(x)
        with torch.no_grad():
            if family == "ig":
                point, label = _ig_point(x[i], gen)
            elif family == "smoothgrad":
                point, label = _smoothgrad_point(x[i], gen)
            elif family == "occlusion":
                point, label = _occlusion_point(x[i], gen)
            else:
                point, label = _scorecam_point(x[i], None if acts is None else acts[i])
        rows.append(point.detach())
        source.append(i)
        labels.append(label)
    return Points(torch.stack(rows), source, labels)


def _activations(model: nn.Module, x: torch.Tensor, layer: str | None) -> torch.Tensor | None:
    """The N×C×H×W activation of ``layer`` on ``x`` (None without a layer or a 4-D output)."""
    if layer is None:
        return None
    from ..core.capture import gridded

    acts = []
    for i in range(len(x)):  # image by image: an exported program may take a fixed batch size of 1
        with torch.no_grad(), gridded([(layer, model.get_submodule(layer))], x.shape[-2:], leaf=False) as grids:
            model(x[i : i + 1])
        act = grids.get(layer)
        if not (isinstance(act, torch.Tensor) and act.dim() == 4):
            return None
        acts.append(act.detach())
    return torch.cat(acts)
