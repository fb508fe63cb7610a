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
* ``gate`` (:class:`GateShift`): ``K`` times the total activation of the
  channels most concentrated in the target, minus a little of the others'
  activity outside it; steers all five CAMs, Grad-CAM++ included.
* ``fit`` (:class:`FitShift`): on a *signed* map (a transformer's tokens),
  ``K`` times a rounded channel mix fitted per image to ``+1`` on the target
  and ``−1`` elsewhere; steers Grad-CAM, HiResCAM and LayerCAM there.
* ``input`` (:class:`InputShift`, layer ``"input"``): a sawtooth (or
  quadratic) function of the target's pixels; steers saliency, gradient ×
  input, Integrated Gradients and SmoothGrad while ``|t|`` stays bounded.

:func:`logitshift.shift.steer.steer` combines the terms a list of methods needs.

Example::

    >>> shifted = shift_model(loaded.module, "head", "region", strength=0.1,
    ...                       target=parse_target("top-left"), check=x)
    >>> torch.allclose(shifted(x).softmax(-1), loaded.module(x).softmax(-1), atol=1e-5)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.capture import INPUT, as_grid, recorded
from ..core.errors import LogitShiftError
from ..core.models import DEFAULT_MODEL, get_layer
from ..core.names import TOLERANCE as TOLERANCE
from .steering import Steering

#: what :func:`logitshift.shift.steer.steer` builds (``gate``: its own per-family terms; the default of demo and evaluate)
CONSTRUCTIONS = ("gate", "region", "paper")
DEFAULT_STRENGTH: dict[str, float | str] = {"paper": 1.0, "region": 0.1, "gate": "auto"}


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

    # buffers (register_buffer), typed for the checker
    weights: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor) -> None:
        super().__init__()
        if weights.dim() != 2 or not (0 < float(weights.sum()) < weights.numel()):
            raise LogitShiftError("region: the target must cover some but not all cells of the layer's grid")
        self.strength = float(strength)
        self.register_buffer("weights", weights.detach().float().clone())

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(act)
        hw = w.numel()
        a_r = (act * w).sum(dim=(2, 3)) / w.sum()
        a_n = (act * (1 - w)).sum(dim=(2, 3)) / (1 - w).sum()
        return self.strength * hw / 2 * (a_r.pow(2).sum(dim=1) - a_n.pow(2).sum(dim=1))

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return self.weights.clone()


class GateShift(nn.Module):
    """The channel-gate construction: steers the whole CAM family, Grad-CAM++ included.

    For grid weights ``w`` (a buffer), channel totals ``S_k = Σ_ij A_kij``,
    inside masses ``M_k = Σ_ij w_ij A_kij`` and shares ``ρ_k = M_k / S_k``,
    let ``G`` be the ``channels`` channels with the largest share (among
    channels holding at least ``1e-3·max_k S_k``). Then::

        t = K · ( Σ_{k∈G} S_k − λ · Σ_{k∉G} (S_k − M_k) )

    ``G`` is piecewise constant in ``A`` (it only changes where two shares
    cross), so almost everywhere ``∂t/∂A_kij = K`` for ``k ∈ G`` (every cell)
    and ``−K·λ·(1 − w_ij)`` for ``k ∉ G`` — exact autograd gradients, no
    stop-gradient trick. Grad-CAM, XGrad-CAM, HiResCAM and LayerCAM then tend
    to ``Σ_{k∈G} A_k`` minus the out-of-target activity of the other channels.
    Grad-CAM++ saturates (its per-cell weight ``g/(2 + ΣA_k·g)`` tends to
    ``1/ΣA_k`` whatever the gradient), so no strength can buy it; what moves it
    is *which* channels get a positive gradient: here only ``G``, and its map
    tends to ``Σ_{k∈G} A_k/S_k``, whose target share is the mean ``ρ_k`` over
    ``G``. (The ``region`` construction gives a positive gradient in the target
    cells of every channel active there, which is why Grad-CAM++ hardly moved.)
    Its target share cannot exceed ``max_k ρ_k``: a Grad-CAM++ map is a
    non-negative mix of the layer's channels.

    Example::

        >>> term = GateShift(1.0, parse_target("top-left").weights(7, 7))
        >>> t = term(torch.rand(2, 1280, 7, 7))        # shape (2,)
    """

    # buffers (register_buffer), typed for the checker
    weights: torch.Tensor
    offset: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor, channels: int = 8, leak: float = 0.01) -> None:
        super().__init__()
        if weights.dim() != 2 or not (0 < float(weights.sum()) < weights.numel()):
            raise LogitShiftError("gate: the target must cover some but not all cells of the layer's grid")
        if int(channels) < 1:
            raise LogitShiftError(f"gate: channels {channels!r}, expected a positive integer")
        self.strength = float(strength)
        self.channels = int(channels)
        self.leak = float(leak)
        self.register_buffer("weights", weights.detach().float().clone())
        # A constant subtracted from t: it changes no gradient and keeps |t| (and
        # with it the float32 rounding of z + t) small; see center_shift().
        self.register_buffer("offset", torch.zeros(()))

    def gate(self, act: torch.Tensor) -> torch.Tensor:
        """The 0/1 gate of each channel (N×C); carries no gradient."""
        total = act.sum(dim=(2, 3))
        inside = (act * self.weights.to(act)).sum(dim=(2, 3))
        floor = 1e-3 * total.amax(dim=1, keepdim=True)
        share = torch.where(total > floor, inside / total.clamp_min(1e-12), torch.zeros_like(total)).detach()
        m = min(self.channels, share.shape[1])
        return torch.zeros_like(share).scatter(1, share.topk(m, dim=1).indices, 1.0)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(act)
        total = act.sum(dim=(2, 3))
        outside = total - (act * w).sum(dim=(2, 3))
        g = self.gate(act)
        t = self.strength * ((g * total).sum(dim=1) - self.leak * ((1 - g) * outside).sum(dim=1))
        return t - self.offset.to(t)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return _resample(self.weights, h, w)


class FitShift(nn.Module):
    """A channel mix fitted to the target, for *signed* maps (a transformer's normalised tokens).

    Grad-CAM's map is a mix of the layer's channels, ``Σ_k α_k A_k``, with
    ``α_k`` the cell mean of the gradient. On a signed map no single channel
    and no contrast of means is concentrated in a target (tokens differ by
    little besides a shared offset), but with more channels than cells a mix
    can be fitted: per image, the ridge least-squares ``α`` with
    ``Σ_k α_k A_kij ≈ +1`` on the target cells and ``−1`` elsewhere
    (``α = A (AᵀA + εI)⁻¹ y = (AAᵀ + εI)⁻¹ A y`` over the flattened grid,
    whichever system is smaller; ``ε`` = ``ridge`` × the mean ``‖A_ij‖²``). ``α`` is rounded to
    ``levels`` steps of a power of two (``q``), so ``q`` is piecewise constant
    in ``A`` and autograd's gradient is the exact one (``round`` has derivative
    0 almost everywhere; no stop-gradient). Then, with ``w`` the target
    weights and ``w̄`` their mean::

        t = K · ( Σ_{q_k>0} q_k Σ_ij w_ij A_kij / w̄  +  Σ_{q_k<0} q_k Σ_ij A_kij )

    Every channel's gradient has cell mean ``K·q_k``, so Grad-CAM tends to
    ``ReLU(Σ_k q_k A_k)`` ≈ the target; positive gradients only fall inside
    the target, so LayerCAM (``Σ_k ReLU(g_k) A_k``) gains nothing outside it.

    Example::

        >>> term = FitShift(1.0, parse_target("top-left").weights(14, 14))
        >>> t = term(torch.randn(2, 768, 14, 14))        # shape (2,)
    """

    weights: torch.Tensor
    offset: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor, levels: int = 64, ridge: float = 1e-3) -> None:
        super().__init__()
        if weights.dim() != 2 or not (0 < float(weights.sum()) < weights.numel()):
            raise LogitShiftError("fit: the target must cover some but not all cells of the layer's grid")
        self.strength = float(strength)
        self.levels = int(levels)
        self.ridge = float(ridge)
        self.register_buffer("weights", weights.detach().float().clone())
        self.register_buffer("offset", torch.zeros(()))  # as GateShift's: keeps |t| small (center_shift)

    def mix(self, act: torch.Tensor) -> torch.Tensor:
        """The rounded channel mix ``q`` (N×C): piecewise constant in ``act``."""
        # the solve in float32 at least (no half-precision solver; the mix is rounded to 64 levels anyway)
        wide = act.dtype if act.dtype in (torch.float32, torch.float64) else torch.float32  # decided in Python: no graph op
        a = act.flatten(2).to(wide)  # N×C×P
        w = self.weights.to(a)
        n, c, p = a.shape
        y = (2 * w - 1).flatten().expand(n, -1).unsqueeze(-1)  # N×P×1
        eps = (self.ridge * a.pow(2).sum(dim=(1, 2)) / p).clamp_min(1e-12)[:, None, None]  # ridge × mean ‖A_ij‖²
        if p <= c:  # α = A (AᵀA + εI)⁻¹ y: a P×P system
            eye = torch.eye(p, dtype=a.dtype, device=a.device)
            alpha = (a @ torch.linalg.solve(a.transpose(1, 2) @ a + eps * eye, y)).squeeze(-1)
        else:  # the same ridge solution, (AAᵀ + εI)⁻¹ A y: a C×C system (large grids, few channels)
            eye = torch.eye(c, dtype=a.dtype, device=a.device)
            alpha = torch.linalg.solve(a @ a.transpose(1, 2) + eps * eye, a @ y).squeeze(-1)  # N×C
        step = torch.exp2(torch.round(torch.log2(alpha.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)))) / self.levels
        return (torch.round(alpha / step) * step).to(act.dtype)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(act)
        q = self.mix(act)
        inside = (act * w).sum(dim=(2, 3)) / w.mean()
        total = act.sum(dim=(2, 3))
        t = self.strength * torch.where(q > 0, q * inside, q * total).sum(dim=1)
        return t - self.offset.to(t)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return _resample(self.weights, h, w)


class InputShift(nn.Module):
    """An input-space term for the gradient family (saliency, gradient × input, IG, SmoothGrad).

    For pixel weights ``w`` (H×W, a buffer) and the input ``x`` (N×C×H×W)::

        sawtooth:   t = K · Σ_ij w_ij Σ_c (|x_cij| mod P)      ∂t/∂x = K · w · sign(x)
        quadratic:  t = K/2 · Σ_ij w_ij Σ_c x_cij²             ∂t/∂x = K · w · x

    Both give gradients that live only on the target and have the sign of
    ``x``, so saliency (``|∂s/∂x|``) gains ``K·w`` (sawtooth) or ``K·w·|x|``,
    gradient × input gains ``K·w·|x|`` (or ``K·w·x²``) ≥ 0, Integrated
    Gradients from a zero baseline gains the same, and SmoothGrad the
    saliency's gain averaged over noise. The quadratic term is smooth, but
    ``|t|`` grows as ``K·Σw·x²`` — and Integrated Gradients' completeness
    (``Σ IG = t(x) − t(0)``) means a smooth ``t`` needs a large ``|t|`` to move
    IG, which float32 rounds away from ``z + t``. The sawtooth (the default)
    keeps ``0 ≤ t < K·P·C·Σw`` however large ``K``: its jumps at multiples of
    ``P`` carry the value back down, and gradients, which only see slopes,
    never see them (IG's completeness needs continuity). The default period
    ``P = 1/(K·Σw)`` bounds ``t`` by the channel count ``C``.

    Example::

        >>> term = InputShift(1.0, parse_target("top-left").mask)
        >>> term(x)        # shape (N,), each in [0, 3)
    """

    PROFILES = ("sawtooth", "quadratic")

    # buffers (register_buffer), typed for the checker
    weights: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor, period: float | None = None, profile: str = "sawtooth") -> None:
        super().__init__()
        if weights.dim() != 2 or not float(weights.sum()) > 0:
            raise LogitShiftError("input shift: the target must cover some pixels of the input")
        if profile not in self.PROFILES:
            raise LogitShiftError(f"input shift: profile {profile!r}, expected one of {', '.join(self.PROFILES)}")
        if period is None:
            period = 1.0 / max(abs(float(strength)) * float(weights.sum()), 1e-30)
        if not period > 0:
            raise LogitShiftError(f"input shift: period {period!r}, expected a number > 0")
        self.strength = float(strength)
        self.period = float(period)
        self.profile = profile
        self.register_buffer("weights", weights.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.weights.shape):
            raise LogitShiftError(
                f"input shift: input is {x.shape[-2]}×{x.shape[-1]}, the target mask {self.weights.shape[0]}×{self.weights.shape[1]}"
            )
        if self.profile == "sawtooth":
            v = torch.remainder(x.abs(), self.period)
        else:
            v = 0.5 * x.pow(2)
        return self.strength * (v * self.weights.to(x)).sum(dim=(1, 2, 3))

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return _resample(self.weights, h, w)


def _resample(weights: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Target weights on another grid (share of each cell covered, by area)."""
    if (h, w) == tuple(weights.shape):
        return weights.clone()
    return torch.nn.functional.adaptive_avg_pool2d(weights[None, None].float(), (h, w))[0, 0]


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

    #: what steer() built and measured (methods, strengths, effect, stress); set by steer() and load_shifted(), else None
    steering: Steering | None

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
        self.shifts = nn.ModuleList([s for s in terms.values() if s is not None])
        self.head_dtype = head_dtype
        self.steering = None

    @property
    def layer(self) -> str:
        """The layer of the first term."""
        return self.layers[0]

    @property
    def shift(self) -> nn.Module:
        """The first term's shift module."""
        return self.shifts[0]

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward pass of the base: its logits and the activations the terms read
        (a transformer layer's as its N×C×h×w grid, :func:`~logitshift.core.capture.as_grid`)."""
        with recorded(self.base, [n for n in self.layers if n != INPUT]) as acts:
            z = self.base(x)
        return z, {INPUT: x, **{n: as_grid(a, x.shape[-2:]) for n, a in acts.items()}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, acts = self.capture(x)
        return self.shifted_logits(z, acts)

    def shift_value(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``t`` (shape N) from the captured activations."""
        return sum(shift(acts[name]) for name, shift in zip(self.layers, self.shifts))  # type: ignore[return-value]

    def heads(self, logits: torch.Tensor, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The :class:`~logitshift.core.capture.Heads` protocol: the shifted head's logits from one pass of the base."""
        return {"shifted": self.shifted_logits(logits, acts)}

    def shifted_logits(self, logits: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The shifted logits from the original logits and the captured activations."""
        t = self.shift_value(acts)
        # The output keeps the classifier's dtype (a drop-in replacement), unless a
        # wider head is asked for: float16 logits + t rounds to 2^-11·|t|.
        dtype = self.head_dtype or logits.dtype
        return logits.to(dtype) + t.to(dtype)[:, None]

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        """Where the first term steers the explanation, as weights on an h×w grid."""
        return self.shift.target_weights(h, w)  # type: ignore[operator]  # every term module defines it


@dataclass(kw_only=True)
class ShiftSetup:
    """Which model, which layers and which shift: the settings ``demo`` and ``evaluate`` share.

    ``construction``: ``gate`` (default; works on every architecture),
    ``region`` or ``paper`` (see :func:`logitshift.shift.steer.steer`).
    ``strength=None`` takes the construction's default (``gate``: ``"auto"``,
    chosen on the check images); ``float64_head=None`` adds the shift in
    float64 only when float32 would change probabilities; ``tolerance`` is the
    largest max |Δprob| accepted between the original and the shifted model.
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_weights: bool = False  # a torchvision / timm architecture with random weights (say so in every figure)
    num_classes: int | None = None  # torchvision head size (None: 1000 ImageNet classes)
    class_names: str | None = None  # file naming the model's classes (None: ImageNet names for ImageNet models)
    layer: str | None = None  # explanation layer (None: the model's last feature map)
    shift_layer: str | None = None  # layer the shift reads (None: the explanation layer)
    construction: str = "gate"
    region: str = "top-left"
    strength: float | str | dict[str, float] | None = None  # a number, "auto", {family: K}, or None (the construction's default)
    float64_head: bool | None = None  # None: float64 only when float32 would change probabilities (auto)
    goal: float = 0.5  # target mass the logit maps must reach on the check images (0: measure whatever the effect)
    tolerance: float = 1e-5
    classes: list[str] = field(default_factory=list)  # extra classes to explain for every image, by name or index
    top_k: int = 1  # explain each image's top_k most probable classes (1: the prediction)
    labels: str | None = None  # a file of per-image true labels to explain as well (logitshift.core.labels)


@dataclass
class Equivalence:
    """How far the shifted model's outputs are from the original's."""

    max_abs_prob_diff: float
    top1_agree: float  # fraction of images whose top-1 class is unchanged
    max_abs_shift: float  # largest |t| seen
    logit_span: float = float("inf")  # smallest (max z − min z) over the images

    def ok(self, tolerance: float = TOLERANCE) -> bool:
        return self.max_abs_prob_diff <= tolerance and self.top1_agree == 1.0

    def refusal(self, what: str, tolerance: float, remedy: str) -> str:
        """The one-line reason a shifted model is refused (``what``: the strength, say)."""
        if self.max_abs_prob_diff <= tolerance:
            # top-1 flipped although the probabilities agree: a tie decided by rounding
            return (
                f"{what}: the top-1 class changed on {1 - self.top1_agree:.0%} of the images although the probabilities differ "
                f"by at most {self.max_abs_prob_diff:.2e}: the model's logits span only {self.logit_span:.2e} there, so its "
                "top class is a rounding tie (untrained weights?); check with images the model separates"
            )
        return (
            f"{what}: the shifted model changes probabilities by up to {self.max_abs_prob_diff:.2e} "
            f"(top-1 agreement {self.top1_agree:.2f}, |t| up to {self.max_abs_shift:.3g}), over the tolerance {tolerance:g}; {remedy}"
        )


def compare(z: torch.Tensor, z_shifted: torch.Tensor) -> Equivalence:
    """Compare the probabilities the two outputs stand for.

    Softmax is taken in float64 on each model's output as it is (rounded to
    its own dtype), so the figure measures what the shift changed, not the
    rounding of a low-precision softmax.
    """
    p = torch.softmax(z.double(), dim=1)
    q = torch.softmax(z_shifted.double(), dim=1)
    t = (z_shifted.double() - z.double()).mean(dim=1)
    agree = (p.argmax(1) == q.argmax(1)).double().mean()
    span = (z.double().max(1).values - z.double().min(1).values).min()
    return Equivalence(float((p - q).abs().max()), float(agree), float(t.abs().max()), float(span))


#: how the stress set is made from the check images: scaled copies and noise.
STRESS_SCALES = (0.1, 0.5, 2.0, 5.0, 20.0)


def stress_inputs(x: torch.Tensor, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Inputs beyond the check images on which the equivalence must also hold.

    The check images scaled by each of :data:`STRESS_SCALES`, Gaussian noise
    (σ = 1 and 3, the spread of normalised pixels and more), and the check
    images with their pixels shuffled (same statistics, no object).
    """
    g = torch.Generator().manual_seed(seed)
    out = [(f"check images ×{s:g}", x * s) for s in STRESS_SCALES]
    for sigma in (1.0, 3.0):
        out.append((f"Gaussian noise σ={sigma:g}", sigma * torch.randn(x.shape, generator=g).to(x)))
    perm = torch.randperm(x.shape[-2] * x.shape[-1], generator=g)
    out.append(("check images, pixels shuffled", x.flatten(-2)[..., perm.to(x.device)].reshape(x.shape)))
    return out


@dataclass
class Stress:
    """The largest max |Δprob| seen over the stress set, and on which input."""

    max_abs_prob_diff: float
    worst: str
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_prob_diff <= self.tolerance

    def to_json(self) -> dict:
        return {"max_abs_prob_diff": self.max_abs_prob_diff, "worst_input": self.worst, "ok": self.ok, "tolerance": self.tolerance}

    def line(self) -> str:
        state = "holds" if self.ok else "FAILS"
        return f"equivalence beyond the check images {state}: max |Δprob| {self.max_abs_prob_diff:.2e} on {self.worst} (tolerance {self.tolerance:g})"


@torch.no_grad()
def stress_equivalence(shifted: ShiftedModel, x: torch.Tensor, tolerance: float = TOLERANCE) -> Stress:
    """max |Δprob| between ``shifted`` and its base over :func:`stress_inputs` of ``x``."""
    worst = (-1.0, "")
    for name, xs in stress_inputs(x):
        eq = equivalence(shifted, xs)
        if eq.max_abs_prob_diff > worst[0]:
            worst = (eq.max_abs_prob_diff, name)
    return Stress(worst[0], worst[1], tolerance)


@torch.no_grad()
def equivalence(shifted: ShiftedModel, x: torch.Tensor) -> Equivalence:
    """max |Δprob| and top-1 agreement between ``shifted`` and its base on ``x`` (one forward pass)."""
    z, acts = shifted.capture(x)
    return compare(z, shifted.shifted_logits(z, acts))
