"""A loaded classifier (:class:`LoadedModel`), how its inputs are made (:class:`Preprocess`), and the check that
its logits on a batch are finite and vary (:func:`check_outputs`).

Apart from :mod:`logitshift.core.models` so that every loader (models, tabular) builds on it without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import LogitShiftError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image in [0, 1] becomes a model input.

    Resize the shorter side to ``resize``, centre-crop ``size``×``size``, then
    ``(x - mean) / std`` per channel.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


#: logits that differ by no more than this (relative to 1 + their largest magnitude) across images do not vary
CONSTANT_LOGITS = 1e-6


def check_outputs(what: str, x: torch.Tensor, logits: torch.Tensor, ending: str = "") -> None:
    """Refuse, in one line naming ``what`` and the likely cause: inputs ``x`` or ``logits`` that are not finite,
    and logits that do not vary across the images: ``max_{i,c} |z_ic − z_0c| ≤`` :data:`CONSTANT_LOGITS` ``·
    (1 + max |z|)`` over two images or more (a zero or untrained classifier head: every logit-gradient map of such a
    model is zero, so nothing can be explained, steered or audited). ``ending`` is added to each message."""
    n = len(x)
    bad_x = int((~torch.isfinite(x.reshape(n, -1))).any(1).sum()) if n else 0
    if bad_x:
        raise LogitShiftError(f"{what}: {bad_x} of the {n} images hold NaN or infinite values once preprocessed (a std of 0?){ending}")
    z = logits.detach().reshape(len(logits), -1).double()
    bad_z = int((~torch.isfinite(z)).any(1).sum())
    if bad_z:
        raise LogitShiftError(f"{what}: its logits are NaN or infinite on {bad_z} of the {len(z)} images{ending}")
    if len(z) > 1:
        spread = float((z - z[:1]).abs().max())
        if spread <= CONSTANT_LOGITS * (1.0 + float(z.abs().max())):
            raise LogitShiftError(
                f"{what}: its logits do not vary across the {len(z)} images (largest difference {spread:.2g}): a zero or "
                f"untrained classifier head (a torchvision model built with weights=None?), whose every gradient map is zero{ending}"
            )


@dataclass
class LoadedModel:
    """A classifier ready to explain."""

    module: nn.Module
    name: str
    layer: str
    preprocess: Preprocess = field(default_factory=Preprocess)
    num_classes: int = 1000
    #: one name per class (index i names class i); empty when the model's classes have no names,
    #: so they are shown and addressed by index. Only ImageNet models get the ImageNet names.
    class_names: tuple[str, ...] = ()
