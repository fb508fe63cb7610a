"""Vanilla gradient, "saliency" (Simonyan et al., 2013).

Raw attribution (:meth:`Saliency.attribute`, N×C×H×W): the signed gradient
``∂s/∂x`` of the score ``s`` (see :mod:`logitshift.core.scores`). Map
(:meth:`~.base.InputMethod.maps`, N×H×W): ``max_c |∂s/∂x_c|``, Simonyan et
al.'s channel reduction. Captum's ``Saliency`` returns ``|∂s/∂x|`` with its
default ``abs=True`` and ``∂s/∂x`` with ``abs=False``.

Example::

    >>> grads = Saliency().attribute(model, x, target=torch.tensor([285]), score="logit")   # N×3×224×224
    >>> maps = Saliency().maps(model, x, target=torch.tensor([285]), score="logit")         # N×224×224
"""

from __future__ import annotations

from .base import InputMethod, register


@register
class Saliency(InputMethod):
    name = "saliency"
    label = "saliency"
    reduction = "maxabs"
