"""Gradient × input (Shrikumar et al., 2016).

Raw attribution (N×C×H×W): ``x ⊙ ∂s/∂x`` for the score ``s`` (see
:mod:`logitshift.core.scores`), as Captum's ``InputXGradient``. Map (N×H×W):
``Σ_c x_c · ∂s/∂x_c`` (signed; summed over channels so that, like the raw
values, the map's total is the first-order Taylor term ``x · ∇s``).

Example::

    >>> maps = GradientXInput().maps(model, x, target=torch.tensor([285]), score="logit")
"""

from __future__ import annotations

from .base import register
from .saliency import Saliency


@register
class GradientXInput(Saliency):
    name = "gradxinput"
    label = "gradient × input"
    reduction = "sum"

    def finish(self, x, total):
        return x * total
