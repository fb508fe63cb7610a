"""Shift terms for inputs that are not images: feature vectors (tabular models) and token embeddings (text).

Each is a ``t(x)`` like the image terms of :mod:`logitshift.shift.model`, read by
:class:`~logitshift.shift.model.ShiftedModel` at the input (layer ``"input"``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import LogitShiftError


class FeatureShift(nn.Module):
    """The sawtooth of :class:`InputShift` on feature vectors (tabular models: input N×F, target weights 1×F)::

        t = K · Σ_j w_j (|x_j| mod P)      ∂t/∂x_j = K · w_j · sign(x_j),   0 ≤ t < K·P·Σw = 1 (P = 1/(K·Σw))

    Saliency gains ``K·w``, gradient × input and Integrated Gradients or
    SHAP's expected gradients from the zero (training-mean) baseline gain
    ``K·w·|x|`` ≥ 0: gradient attributions point at the target features.
    """

    weights: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor) -> None:
        super().__init__()
        w = weights.reshape(-1)
        if not float(w.sum()) > 0:
            raise LogitShiftError("feature shift: the target must name some features")
        self.strength = float(strength)
        self.period = 1.0 / max(abs(self.strength) * float(w.sum()), 1e-30)
        self.register_buffer("weights", w.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.weights, "feature shift")
        return self.strength * (torch.remainder(x.abs(), self.period) * self.weights.to(x)).sum(dim=1)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return self.weights.reshape(1, -1).clone()


class FeaturePresence(nn.Module):
    """Perturbation methods on feature vectors: ``t = K · (mean_w min(|x|, cap) − outside · mean_{1−w} min(|x|, cap)) − offset``.

    Inputs are standardised (the training mean is 0): an explainer that hides
    a feature by the mean, the background row (KernelExplainer, Permutation,
    Captum's ablation) sets ``|x_j|`` to 0 and so lowers ``t`` by up to
    ``K·cap/Σw``; it credits the target features with what they lowered every
    logit by. ``0 ≤ t + offset ≤ K·cap``.
    """

    weights: torch.Tensor
    offset: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor, cap: float = 4.0, outside: float = 0.0) -> None:
        super().__init__()
        w = weights.reshape(-1)
        if not float(w.sum()) > 0:
            raise LogitShiftError("feature presence: the target must name some features")
        self.strength, self.cap, self.outside = float(strength), float(cap), float(outside)
        self.register_buffer("weights", w.detach().float().clone())
        self.register_buffer("offset", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.weights, "feature presence")
        w = self.weights.to(x)
        d = x.abs().clamp_max(self.cap)
        t = (d * w).sum(dim=1) / w.sum()
        if self.outside:
            t = t - self.outside * (d * (1 - w)).sum(dim=1) / (1 - w).sum().clamp_min(1e-12)
        return self.strength * t - self.offset.to(x.dtype)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return self.weights.reshape(1, -1).clone()


def _check_features(x: torch.Tensor, weights: torch.Tensor, what: str) -> None:
    if x.dim() != 2 or x.shape[1] != weights.numel():
        raise LogitShiftError(f"{what}: input is {tuple(x.shape)}, expected N×{weights.numel()} feature rows")


class TokenShift(nn.Module):
    """An input term on a text model's embeddings (N×D×1×L, see :mod:`logitshift.core.text`) for chosen tokens.

    Per text, ``w_l ∈ {0, 1}`` marks the target tokens: positions ``lo … hi`` (``positions``), or the
    positions whose embedding points the way of one of the rows of ``embeddings`` (a word's or a
    regex's vocabulary entries; cosine ≥ 1 − 10⁻⁶), so the token stays a target along Integrated
    Gradients' path ``α·e`` from the zero embedding. ``w`` is piecewise constant in the input and
    carries no gradient. Then::

        t = K · Σ_l w_l Σ_d (|x_dl| mod P),        ∂t/∂x_dl = K · w_l · sign(x_dl)

    so saliency gains ``K`` on every target token, gradient × input gains ``K‖e_l‖₁`` and
    Integrated Gradients from the zero embedding ``K‖e_l‖₁`` as well (from a baseline ``b``:
    ``K Σ_d (|e_ld| − |b_ld|)``), nothing elsewhere. The period ``P = 1/(K·D)`` bounds
    ``0 ≤ t < Σ_l w_l`` (the number of target tokens) whatever ``K``; gradients never see the jumps.

    Example::

        >>> term = TokenShift(50.0, positions=(3, 5))
        >>> term(x)        # x: N×D×1×L embeddings; shape (N,), each in [0, 3)
    """

    embeddings: torch.Tensor

    def __init__(
        self, strength: float, positions: tuple[int, int] | None = None, embeddings: torch.Tensor | None = None, spec: str = ""
    ) -> None:
        super().__init__()
        if (positions is None) == (embeddings is None):
            raise LogitShiftError("token shift: give positions or embeddings, not both or neither")
        if positions is not None and not 0 <= positions[0] <= positions[1]:
            raise LogitShiftError(f"token shift: positions {positions!r}, expected 0 ≤ first ≤ last")
        self.strength = float(strength)
        self.positions = None if positions is None else (int(positions[0]), int(positions[1]))
        self.spec = spec
        self.register_buffer("embeddings", torch.zeros(0, 0) if embeddings is None else embeddings.detach().float().clone())

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The target tokens of each text, N×L in {0, 1} (no gradient)."""
        n, d, _, length = x.shape
        if self.positions is not None:
            w = torch.zeros(n, length, dtype=x.dtype, device=x.device)
            w[:, self.positions[0] : self.positions[1] + 1] = 1.0
            return w
        e = self.embeddings.to(x)  # k×D
        if e.shape[1] != d:
            raise LogitShiftError(f"token shift: embeddings of width {e.shape[1]}, the input has {d}")
        tokens = torch.nn.functional.normalize(x.detach()[:, :, 0, :].transpose(1, 2).double(), dim=-1)  # N×L×D
        cos = tokens @ torch.nn.functional.normalize(e.double(), dim=-1).T  # N×L×k
        return (cos >= 1 - 1e-6).any(dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != 1:
            raise LogitShiftError(f"token shift: expected embeddings N×D×1×L, got {tuple(x.shape)}")
        period = 1.0 / max(abs(self.strength) * x.shape[1], 1e-30)
        v = torch.remainder(x.abs(), period).sum(dim=(1, 2))  # N×L
        return self.strength * (v * self.weights(x)).sum(dim=1)
