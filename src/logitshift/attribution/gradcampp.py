"""Grad-CAM++ (Chattopadhay et al., 2018), exactly as pytorch-grad-cam 1.5.7 computes it.

With ``g = ∂s/∂A`` (the first derivative of the score ``s``, not the
``exp(s)`` higher-order terms of the paper's Eq. 19) and ``ΣA_k = Σ_ij A_kij``::

    a_kij = g_kij² / (2·g_kij² + ΣA_k · g_kij³ + 1e-6)    (0 where g_kij = 0)
    w_k   = Σ_ij ReLU(g_kij) · a_kij
    map   = ReLU(Σ_k w_k A_k)

Equal to pytorch-grad-cam's ``GradCAMPlusPlus`` before its min-max scaling and
upsampling, for any score ``s`` (see :mod:`logitshift.core.scores`).

Example::

    >>> maps = GradCAMPlusPlus().maps(model, x, target=torch.tensor([285]), score="logit", layer="head")
"""

from __future__ import annotations

import torch

from .base import CamMethod, register

EPS = 1e-6  # pytorch-grad-cam's constant


@register
class GradCAMPlusPlus(CamMethod):
    name = "gradcampp"
    label = "Grad-CAM++"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2 = grad.pow(2)
        g3 = g2 * grad
        sum_act = act.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_act * g3 + EPS)
        aij = torch.where(grad != 0, aij, torch.zeros_like(aij))
        weights = (torch.relu(grad) * aij).sum(dim=(2, 3), keepdim=True)
        return torch.relu((weights * act).sum(dim=1))
