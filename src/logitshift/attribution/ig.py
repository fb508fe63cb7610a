"""Integrated Gradients (Sundararajan et al., 2017).

For a baseline ``b`` and the score ``s`` (see :mod:`logitshift.core.scores`)::

    IG(x) = (x − b) ⊙ ∫₀¹ ∂s/∂x (b + α(x − b)) dα
          ≈ (x − b) ⊙ Σ_k w_k · ∂s/∂x (b + α_k (x − b))

with Gauss–Legendre quadrature on ``steps`` nodes, ``α_k = (1 + u_k)/2`` and
``w_k = v_k/2`` for the Legendre nodes/weights ``(u_k, v_k)`` on [−1, 1]:
Captum's default (``method="gausslegendre"``), so results compare with
Captum's ``IntegratedGradients`` for the same ``n_steps``. Raw attribution:
N×C×H×W as above. Map (N×H×W): ``Σ_c IG_c`` (signed; by completeness the
map's total approaches ``s(x) − s(b)``).

All ``steps × N`` interpolated inputs go through the model in chunks of
``batch_size`` rows (one forward and one backward per chunk).

Example::

    >>> ig = IntegratedGradients(steps=32, baseline=0.0)
    >>> maps = ig.maps(model, x, target=torch.tensor([285]), score="logit")
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import LogitShiftError
from ..core.names import DEFAULT_MEMORY_BUDGET_GB
from .base import InputMethod, register


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``α_k`` in (0, 1) and weights ``w_k`` (summing to 1) of Gauss–Legendre quadrature on [0, 1]."""
    u, v = np.polynomial.legendre.leggauss(steps)
    return torch.tensor(0.5 * (1 + u)).float(), torch.tensor(0.5 * v).float()


@register
class IntegratedGradients(InputMethod):
    """``baseline``: a number (a constant image; 0 is the black image of a [0, 1] input, the grey one of a
    mean-centred input) or a tensor broadcastable to the input (C×H×W, or N×C×H×W)."""

    name = "ig"
    label = "Integrated Gradients"

    def __init__(
        self,
        steps: int = 50,
        baseline: float | torch.Tensor = 0.0,
        batch_size: int = 32,
        memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB,
    ) -> None:
        super().__init__(batch_size, memory_budget)
        if int(steps) < 1:
            raise LogitShiftError(f"steps {steps!r}: expected a positive integer")
        self.steps = int(steps)
        self.baseline = baseline

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        b = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        try:
            return b.expand_as(x)
        except RuntimeError:
            raise LogitShiftError(
                f"baseline: shape {tuple(b.shape)}, expected a number or a shape broadcastable to {tuple(x.shape)}"
            ) from None

    def rows(self, n: int) -> int:
        return self.steps * n

    def points(self, x, bar=True):
        n = x.shape[0]
        b = self.baseline_for(x)
        alphas, weights = (t.to(x.device) for t in gauss_legendre(self.steps))
        # row r = (step r // n, image r % n), as Captum orders them
        for lo, hi in self.chunks(self.steps * n, bar):
            rows = torch.arange(lo, hi, device=x.device)
            k, i = rows // n, rows % n
            a = alphas[k].view(-1, *([1] * (x.dim() - 1)))
            yield i, b[i] + a * (x[i] - b[i]), weights[k].to(x.dtype)

    def finish(self, x, total):
        return total * (x - self.baseline_for(x))
