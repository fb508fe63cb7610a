"""Grad-CAM (Selvaraju et al., 2017).

``α_k = mean_ij ∂s/∂A_kij``, ``map = ReLU(Σ_k α_k A_k)``, for any score ``s``
(see :mod:`logitshift.core.scores`). Equal to Captum's ``LayerGradCam`` with
``relu_attributions=True`` and to pytorch-grad-cam's ``GradCAM`` before its
min-max scaling.

Example::

    >>> maps = GradCAM().maps(model, x, target=torch.tensor([285]), score="logit", layer="head")
"""

from __future__ import annotations

import torch

from .base import CamMethod, register


@register
class GradCAM(CamMethod):
    name = "gradcam"
    label = "Grad-CAM"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * act).sum(dim=1))
