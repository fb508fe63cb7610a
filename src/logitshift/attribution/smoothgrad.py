"""SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

For the score ``s`` (see :mod:`logitshift.core.scores`), ``samples`` = n and
``ε_j ~ N(0, σ²)``::

    SG(x) = (1/n) Σ_j ∂s/∂x (x + ε_j)

Raw attribution: N×C×H×W as above (signed, as Captum's
``NoiseTunnel(Saliency).attribute(nt_type="smoothgrad", abs=False)``). Map
(N×H×W): ``max_c |SG_c|``, the same reduction as :mod:`.saliency`.

Noise: ``σ = noise · (max x_i − min x_i)`` per image (Smilkov et al.'s noise
level, default 0.15), or the absolute ``stdev`` when given (Captum's
``stdevs``). Drawn from a ``torch.Generator`` seeded with ``seed``: the same
seed gives the same maps. Noise is drawn as a stream over rows
``(image i, sample j)`` in image-major order, chunk by chunk; on the CPU this is
bit-identical to Captum's single ``torch.normal`` draw after
``torch.manual_seed(seed)`` whenever each chunk holds a multiple of 16 values
(always true for 3×224×224 inputs; the CPU sampler works in blocks of 16).

All ``samples × N`` noisy inputs go through the model in chunks of
``batch_size`` rows (one forward and one backward per chunk).

Example::

    >>> sg = SmoothGrad(samples=25, noise=0.15, seed=0)
    >>> maps = sg.maps(model, x, target=torch.tensor([285]), score="logit")
"""

from __future__ import annotations

import torch

from ..core.errors import LogitShiftError
from ..core.names import DEFAULT_MEMORY_BUDGET_GB
from .base import InputMethod, register


@register
class SmoothGrad(InputMethod):
    name = "smoothgrad"
    label = "SmoothGrad"
    reduction = "maxabs"

    def __init__(
        self,
        samples: int = 50,
        noise: float = 0.15,
        stdev: float | None = None,
        seed: int = 0,
        batch_size: int = 32,
        memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB,
    ) -> None:
        super().__init__(batch_size, memory_budget)
        if int(samples) < 1:
            raise LogitShiftError(f"samples {samples!r}: expected a positive integer")
        if not noise >= 0 or (stdev is not None and not stdev >= 0):
            raise LogitShiftError(f"noise {noise!r} / stdev {stdev!r}: expected non-negative numbers")
        self.samples = int(samples)
        self.noise = float(noise)
        self.stdev = None if stdev is None else float(stdev)
        self.seed = int(seed)

    def sigmas(self, x: torch.Tensor) -> torch.Tensor:
        """The noise standard deviation of each image (shape N)."""
        if self.stdev is not None:
            return torch.full((x.shape[0],), self.stdev, dtype=x.dtype, device=x.device)
        flat = x.detach().flatten(1)
        return self.noise * (flat.amax(dim=1) - flat.amin(dim=1))

    def rows(self, n: int) -> int:
        return n * self.samples

    def points(self, x, bar=True):
        m = self.samples
        sigma = self.sigmas(x)
        gen = torch.Generator().manual_seed(self.seed)  # CPU stream, whatever the device
        # row r = (image r // m, sample r % m), as Captum orders them
        for lo, hi in self.chunks(x.shape[0] * m, bar):
            i = torch.arange(lo, hi, device=x.device) // m
            eps = torch.randn((hi - lo, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)
            yield i, x[i] + eps * sigma[i].view(-1, *([1] * (x.dim() - 1))), torch.ones(hi - lo, dtype=x.dtype, device=x.device)

    def finish(self, x, total):
        return total / self.samples
