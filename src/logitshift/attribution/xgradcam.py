"""XGrad-CAM (Fu et al., 2020), exactly as pytorch-grad-cam 1.5.7 computes it.

With ``g = ∂s/∂A`` and ``ΣA_k = Σ_ij A_kij``::

    w_k = Σ_ij g_kij · A_kij / (ΣA_k + 1e-7)
    map = ReLU(Σ_k w_k A_k)

Equal to pytorch-grad-cam's ``XGradCAM`` before its min-max scaling and
upsampling, for any score ``s`` (see :mod:`logitshift.core.scores`).

Example::

    >>> maps = XGradCAM().maps(model, x, target=torch.tensor([285]), score="logit", layer="head")
"""

from __future__ import annotations

import torch

from .base import CamMethod, register

EPS = 1e-7  # pytorch-grad-cam's constant


@register
class XGradCAM(CamMethod):
    name = "xgradcam"
    label = "XGrad-CAM"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        sum_act = act.sum(dim=(2, 3), keepdim=True)
        weights = (grad * act / (sum_act + EPS)).sum(dim=(2, 3), keepdim=True)
        return torch.relu((weights * act).sum(dim=1))
