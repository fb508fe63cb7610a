"""LayerCAM (Jiang et al., 2021), as pytorch-grad-cam 1.5.7 computes it.

Positive gradients weight each activation element::

    map_ij = ReLU(Σ_k ReLU(∂s/∂A_kij) · A_kij)

Equal to pytorch-grad-cam's ``LayerCAM`` before its min-max scaling and
upsampling, for any score ``s`` (see :mod:`logitshift.core.scores`).

Example::

    >>> maps = LayerCAM().maps(model, x, target=torch.tensor([285]), score="logit", layer="head")
"""

from __future__ import annotations

import torch

from .base import CamMethod, register


@register
class LayerCAM(CamMethod):
    name = "layercam"
    label = "LayerCAM"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return torch.relu((torch.relu(grad) * act).sum(dim=1))
