"""HiResCAM (Draelos & Carin, 2020), as pytorch-grad-cam 1.5.7 computes it.

The element-wise product of gradient and activation, summed over channels::

    map_ij = ReLU(Σ_k ∂s/∂A_kij · A_kij)

Unlike Grad-CAM, no spatial averaging of the gradient: for a model that ends
in global average pooling and a linear layer, and ``s`` = a logit, the map
sums (before the ReLU) exactly to the score minus the bias. Equal to pytorch-grad-cam's
``HiResCAM`` before its min-max scaling and upsampling.

Example::

    >>> maps = HiResCAM().maps(model, x, target=torch.tensor([285]), score="logit", layer="head")
"""

from __future__ import annotations

import torch

from .base import CamMethod, register


@register
class HiResCAM(CamMethod):
    name = "hirescam"
    label = "HiResCAM"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return torch.relu((grad * act).sum(dim=1))
