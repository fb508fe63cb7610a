"""The shifted model: ``z' = z + t(x)·1``, same predictions, steered gradients.

:class:`ShiftedModel` is an ordinary ``nn.Module`` that wraps a classifier and
adds one input-dependent scalar ``t`` to every logit. ``t`` is computed from
the activation ``A`` (N×C×H×W) of one layer of the classifier, captured inside
the same forward pass. Softmax ignores ``t``, so probabilities and predictions
are those of the original model; the gradient of every logit gains ``∇t``.

Constructions (``A_k`` is channel k, the grid has H·W cells):

* ``paper`` (Lerma & Lucas, arXiv:2307.03305): ``t = K · Σ_k A[k, 0, 0]``.
  At the Grad-CAM layer it adds ``K/(HW)`` to every channel weight, so for
  large K the logit Grad-CAM tends to ``Σ_k A_k``, whatever the class.
* ``region``: for target weights ``w`` over the grid, ``a_R`` the
  ``w``-weighted mean activation vector and ``a_N`` the ``(1-w)``-weighted
  mean of the rest, ``t = K · HW/2 · (‖a_R‖² − ‖a_N‖²)``. Grad-CAM's channel
  weights gain ``K (a_R − a_N)``, so the map tends to
  ``ReLU(Σ_k (a_Rk − a_Nk) A_k)``: high on the target, zero elsewhere.

Example::

    >>> shifted = shift_model(loaded.module, "head", "region", strength=0.1,
    ...                       target=parse_target("top-left"), check=x)
    >>> torch.allclose(shifted(x).softmax(-1), loaded.module(x).softmax(-1), atol=1e-5)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import LogitShiftError
from .models import get_layer
from .targets import Target

CONSTRUCTIONS = ("paper", "region")
DEFAULT_STRENGTH = {"paper": 1.0, "region": 0.1}
TOLERANCE = 1e-5


class PaperShift(nn.Module):
    """``t = K · Σ_k A[k, r, c]`` (the paper's construction, cell (0, 0) by default)."""

    def __init__(self, strength: float, cell: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.strength = float(strength)
        self.cell = (int(cell[0]), int(cell[1]))

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        r, c = self.cell
        return self.strength * act[:, :, r, c].sum(dim=1)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        mask = torch.zeros(h, w)
        mask[self.cell] = 1.0
        return mask


class RegionShift(nn.Module):
    """``t = K · HW/2 · (‖a_R‖² − ‖a_N‖²)`` for grid weights ``w`` (a buffer)."""

    def __init__(self, strength: float, weights: torch.Tensor) -> None:
        super().__init__()
        if weights.dim() != 2 or not (0 < float(weights.sum()) < weights.numel()):
            raise LogitShiftError("region: the target must cover some but not all cells of the layer's grid")
        self.strength = float(strength)
        self.register_buffer("weights", weights.detach().float().clone())

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(act.dtype)
        hw = w.numel()
        a_r = (act * w).sum(dim=(2, 3)) / w.sum()
        a_n = (act * (1 - w)).sum(dim=(2, 3)) / (1 - w).sum()
        return self.strength * hw / 2 * (a_r.pow(2).sum(dim=1) - a_n.pow(2).sum(dim=1))

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return self.weights.clone()


INPUT = "input"  # the layer name that means "the model's input tensor"


class ShiftedModel(nn.Module):
    """A classifier whose logits are shifted by ``t = Σ_i shift_i(A_i)``.

    Each term reads the activation ``A_i`` of one layer of the base classifier
    (named in the base's module tree), or the input itself (layer ``"input"``),
    all captured in the same forward pass. ``ShiftedModel(base, "head",
    RegionShift(...))`` is the one-term form; ``ShiftedModel(base, {"head":
    s1, "input": s2})`` combines terms (e.g. to steer CAMs and input
    gradients at once). ``head_dtype=torch.float64`` adds the shift in double
    precision (and returns float64 logits), which keeps probabilities equal
    for large ``|t|``.
    """

    def __init__(
        self,
        base: nn.Module,
        layer: str | dict[str, nn.Module],
        shift: nn.Module | None = None,
        head_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        terms = dict(layer) if isinstance(layer, dict) else {layer: shift}
        if not terms or any(s is None for s in terms.values()):
            raise LogitShiftError("shifted model: needs at least one (layer, shift) term")
        for name in terms:
            if name != INPUT:
                get_layer(base, name)  # fail early on an unknown name
        self.base = base
        self.layers = list(terms)
        self.shifts = nn.ModuleList(terms.values())
        self.head_dtype = head_dtype

    @property
    def layer(self) -> str:
        """The layer of the first term."""
        return self.layers[0]

    @property
    def shift(self) -> nn.Module:
        """The first term's shift module."""
        return self.shifts[0]

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward pass of the base: its logits and the activations the terms read."""
        acts: dict[str, torch.Tensor] = {INPUT: x}
        handles = [
            self.base.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out))
            for name in self.layers
            if name != INPUT
        ]
        try:
            z = self.base(x)
        finally:
            for h in handles:
                h.remove()
        return z, acts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, acts = self.capture(x)
        return self.shifted_logits(z, acts)

    def shift_value(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``t`` (shape N) from the captured activations."""
        return sum(shift(acts[name]) for name, shift in zip(self.layers, self.shifts))  # type: ignore[return-value]

    def shifted_logits(self, logits: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The shifted logits from the original logits and the captured activations."""
        t = self.shift_value(acts)
        if self.head_dtype is not None:
            logits, t = logits.to(self.head_dtype), t.to(self.head_dtype)
        return logits + t[:, None]

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        """Where the first term steers the explanation, as weights on an h×w grid."""
        return self.shift.target_weights(h, w)


@dataclass
class Equivalence:
    """How far the shifted model's outputs are from the original's."""

    max_abs_prob_diff: float
    top1_agree: float  # fraction of images whose top-1 class is unchanged
    max_abs_shift: float  # largest |t| seen

    def ok(self, tolerance: float = TOLERANCE) -> bool:
        return self.max_abs_prob_diff <= tolerance and self.top1_agree == 1.0


def compare(z: torch.Tensor, z_shifted: torch.Tensor) -> Equivalence:
    """Compare probabilities as a user computes them: ``softmax`` of each model's output."""
    p = torch.softmax(z, dim=1).double()
    q = torch.softmax(z_shifted, dim=1).double()
    t = (z_shifted.double() - z.double()).mean(dim=1)
    agree = (p.argmax(1) == q.argmax(1)).double().mean()
    return Equivalence(float((p - q).abs().max()), float(agree), float(t.abs().max()))


@torch.no_grad()
def equivalence(shifted: ShiftedModel, x: torch.Tensor) -> Equivalence:
    """max |Δprob| and top-1 agreement between ``shifted`` and its base on ``x`` (one forward pass)."""
    z, acts = shifted.capture(x)
    return compare(z, shifted.shifted_logits(z, acts))


def layer_grid(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int]:
    """The H×W grid of ``layer`` for inputs shaped like ``x``."""
    shapes: list[tuple[int, ...]] = []
    handle = get_layer(model, layer).register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    if len(shapes[-1]) != 4:
        raise LogitShiftError(f"layer {layer!r}: outputs shape {shapes[-1]}, expected a spatial map N×C×H×W")
    return shapes[-1][2], shapes[-1][3]


def shift_model(
    model: nn.Module,
    layer: str,
    construction: str = "region",
    strength: float | None = None,
    target: Target | None = None,
    check: torch.Tensor | None = None,
    tolerance: float = TOLERANCE,
    head_dtype: torch.dtype | None = None,
) -> ShiftedModel:
    """Build a shifted model and refuse it if it is not equivalent on ``check``.

    ``check`` is a batch of model inputs; the build fails with the measured
    max |Δprob| when it exceeds ``tolerance`` or a top-1 class changes.
    """
    if construction not in CONSTRUCTIONS:
        raise LogitShiftError(f"construction {construction!r}: unknown; expected one of {', '.join(CONSTRUCTIONS)}")
    strength = DEFAULT_STRENGTH[construction] if strength is None else float(strength)
    if not strength == strength or strength in (float("inf"), float("-inf")):
        raise LogitShiftError(f"strength {strength!r}: expected a finite number")
    if construction == "paper":
        shift: nn.Module = PaperShift(strength)
    else:
        if target is None:
            raise LogitShiftError("construction 'region': needs a target region (--region)")
        size = check.shape[-1] if check is not None else target.size
        grid = layer_grid(model, layer, check if check is not None else torch.zeros(1, 3, size, size))
        shift = RegionShift(strength, target.weights(*grid))
    shifted = ShiftedModel(model, layer, shift, head_dtype)
    if check is not None:
        eq = equivalence(shifted, check)
        if not eq.ok(tolerance):
            raise LogitShiftError(
                f"strength {strength:g}: shifted model changes probabilities by up to {eq.max_abs_prob_diff:.2e} "
                f"(top-1 agreement {eq.top1_agree:.2f}, |t| up to {eq.max_abs_shift:.3g}), over the tolerance {tolerance:g}; "
                "use a smaller strength or a float64 head (--float64-head)"
            )
    return shifted
