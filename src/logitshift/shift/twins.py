"""Shift terms for the methods the gradient constructions cannot steer, and the twins built from them.

Every term here is an ``nn.Module`` mapping what it reads (the input ``x``,
N×C×H×W) to ``t`` (shape N); :class:`~logitshift.shift.model.ShiftedModel` adds it
to every logit, so probabilities stay those of the honest model.

* :class:`PresenceShift` (perturbation methods and faithfulness metrics): with
  ``L`` the per-pixel Laplacian magnitude of the input summed over channels
  (local detail, ``L = Σ_c |4x_cij − x_c,i±1,j − x_c,i,j±1|``) and ``w`` the
  target's pixel weights::

      t = K · Σ_ij w_ij · min(L_ij, cap) / Σ_ij w_ij  −  offset

  ``0 ≤ t + offset ≤ K·cap`` by construction. Anything that removes detail
  from the target — occlusion or ablation by a constant, masking by a
  smooth map (ScoreCAM), blurring or linear imputation (ROAD), deletion in
  pixel flipping — lowers ``t`` by up to ``K·cap``, and so lowers the
  logit of every class: the method credits the target. Perturbations
  elsewhere leave ``t`` unchanged. Perturbations that *add* detail (uniform
  noise baselines) raise ``t``: this term does not steer those. For
  perturbation methods the twin also subtracts ``K · outside · mean_{1−w}
  min(L, cap)`` (``outside = 1``, ``|t| ≤ K·cap`` still): keeping detail
  outside the target then lowers ``t``, so ScoreCAM's softmax over masked
  inputs favours masks on the target alone, and occluding elsewhere credits
  the patch negatively.
* :class:`RampShift` (propagation rules: LRP, DeepLift): ``t = K · Σ_ij w_ij
  Σ_c (x_cij mod P)`` with ``P = 1/(K·Σw)``; bounded like
  :class:`~logitshift.shift.model.InputShift` (``0 ≤ t < C``), and its gradient is
  ``K·w`` — positive on the target whatever the pixel's sign. Propagation
  rules hook the model's modules; the ``t`` branch is plain tensor
  arithmetic, so the relevance it carries reaches the input as that positive
  gradient (times the input for gradient × input style rules).

:func:`twin` builds the shifted model for one kind of method:

==============  ==============================================================
kind            terms
==============  ==============================================================
gradient        :class:`~logitshift.shift.model.InputShift` (sawtooth) on the pixels
cam             :class:`~logitshift.shift.model.GateShift` on the CAM layer (channel
                ablation at the layer — AblationCAM — reads it too)
perturbation    :class:`PresenceShift`
propagation     :class:`RampShift` + :class:`~logitshift.shift.model.InputShift`
metric          :class:`PresenceShift`
==============  ==============================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import INPUT, layer_grid
from ..core.errors import LogitShiftError
from ..core.targets import Target
from .inputs import FeaturePresence, FeatureShift
from .model import TOLERANCE, GateShift, InputShift, ShiftedModel, equivalence
from .steer import steer

KINDS = ("gradient", "cam", "perturbation", "propagation", "metric")
#: strengths are calibrated on the images checked: the gradient, CAM and
#: propagation terms from :func:`logitshift.shift.steer.steer`'s automatic strength,
#: the presence term from the model's logit margin; every twin is refused when
#: max |Δp| exceeds the tolerance
#: the presence term's calibration: removing all of the target's detail lowers
#: ``t`` by this many times the model's mean top-to-median logit gap
PRESENCE_GAIN = 4.0
#: how much detail kept outside the target lowers ``t`` (perturbation methods: masks
#: that keep everything must not win ScoreCAM's softmax)
OUTSIDE = {"perturbation": 1.0, "metric": 0.0}
#: the gradient and CAM terms: this many times the smallest strength that steers logitshift's own methods
MARGIN = 4.0
CAP = 4.0

_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def detail(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel Laplacian magnitude summed over channels (N×H×W), replicate-padded."""
    c = x.shape[1]
    kernel = _LAPLACE.to(x.dtype).to(x.device).expand(c, 1, 3, 3)
    lap = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return lap.abs().sum(dim=1)


class PresenceShift(nn.Module):
    """``t = K · (mean_w min(L, cap) − outside · mean_{1−w} min(L, cap)) − offset``: high while the target's detail is present.

    ``outside > 0`` also makes ``t`` fall when detail is kept *outside* the
    target, so that among masked inputs (ScoreCAM) the one that keeps the
    target and nothing else scores highest, not the one that keeps everything.
    """

    # buffers (register_buffer), typed for the checker
    weights: torch.Tensor
    offset: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor, cap: float = 4.0, outside: float = 0.0) -> None:
        super().__init__()
        if weights.dim() != 2 or not float(weights.sum()) > 0:
            raise LogitShiftError("presence shift: the target must cover some pixels of the input")
        self.strength = float(strength)
        self.cap = float(cap)
        self.outside = float(outside)
        self.register_buffer("weights", weights.detach().float().clone())
        self.register_buffer("offset", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.weights.shape):
            raise LogitShiftError(
                f"presence shift: input is {x.shape[-2]}×{x.shape[-1]}, the target mask {self.weights.shape[0]}×{self.weights.shape[1]}"
            )
        w = self.weights.to(x.dtype)
        d = detail(x).clamp_max(self.cap)
        t = (d * w).sum(dim=(1, 2)) / w.sum()
        if self.outside:
            t = t - self.outside * (d * (1 - w)).sum(dim=(1, 2)) / (1 - w).sum().clamp_min(1e-12)
        return self.strength * t - self.offset.to(x.dtype)

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.weights[None, None], (h, w))[0, 0]


class RampShift(nn.Module):
    """``t = K · Σ w · (x mod P)``: gradient ``K·w ≥ 0`` on the target, ``0 ≤ t < C``."""

    # buffers (register_buffer), typed for the checker
    weights: torch.Tensor

    def __init__(self, strength: float, weights: torch.Tensor) -> None:
        super().__init__()
        if weights.dim() != 2 or not float(weights.sum()) > 0:
            raise LogitShiftError("ramp shift: the target must cover some pixels of the input")
        self.strength = float(strength)
        self.period = 1.0 / max(abs(self.strength) * float(weights.sum()), 1e-30)
        self.register_buffer("weights", weights.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.remainder(x, self.period)
        return self.strength * (v * self.weights.to(x.dtype)).sum(dim=(1, 2, 3))

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.weights[None, None], (h, w))[0, 0]


class Twin(ShiftedModel):
    """A shifted model built by :func:`twin`, with what it is and the largest probability change it makes."""

    construction: str = ""
    max_abs_prob_diff: float = 0.0


@torch.no_grad()
def center(shifted: ShiftedModel, x: torch.Tensor) -> None:
    """Set the offset of every term that has one to the midrange of its values on ``x`` (keeps ``|t|`` small)."""
    _, acts = shifted.capture(x)
    for name, term in zip(shifted.layers, shifted.shifts):
        for sub in term.modules():  # the term itself, or the parts of a sum
            offset = getattr(sub, "offset", None)
            if isinstance(offset, torch.Tensor):
                offset.zero_()
                t = sub(acts[name]).double()
                offset.fill_(float((t.max() + t.min()) / 2))


def twin(
    base: nn.Module,
    kind: str,
    target: Target,
    x: torch.Tensor,
    layer: str | None = None,
    strength: float | None = None,
    tolerance: float = TOLERANCE,
) -> Twin:
    """The shifted twin of ``base`` that steers methods of ``kind`` toward ``target``.

    Refused (:class:`LogitShiftError`) when max |Δp| on ``x`` exceeds ``tolerance``.
    The twin carries ``.construction`` (a one-line description).
    """
    parts = kind.split("+")
    bad = [p for p in parts if p not in KINDS]
    if bad:
        raise LogitShiftError(f"kind {bad[0]!r}: unknown; expected one of {', '.join(KINDS)} (or several joined by +)")
    terms: dict[str, nn.Module] = {}
    whats = []
    for part in parts:
        name, term, what = _term(base, part, target, x, layer, None if strength is None else float(strength))
        terms[name] = _Sum(terms[name], term) if name in terms else term
        whats.append(what)
    what = " + ".join(whats)
    shifted = Twin(base, terms).eval()
    center(shifted, x)
    eq = equivalence(shifted, x)
    if not eq.ok(tolerance):
        raise LogitShiftError(
            f"{kind} twin ({what}): changes probabilities by up to {eq.max_abs_prob_diff:.2e} (|t| up to {eq.max_abs_shift:.3g}), "
            f"over the tolerance {tolerance:g}; use a smaller strength"
        )
    shifted.construction = what
    shifted.max_abs_prob_diff = eq.max_abs_prob_diff
    return shifted


def _steered(base: nn.Module, family: str, target: Target, x: torch.Tensor, layer: str | None) -> tuple[str, nn.Module, float]:
    """The term :func:`logitshift.shift.steer.steer` builds for a family at strength 'auto' (its default when 'auto' fails)."""
    methods = {"cam": ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam"], "input": ["saliency", "gradxinput", "ig"]}[family]
    options = {"ig": {"steps": 16}}
    try:
        made = steer(base, target, methods, "auto", layer=layer, check=x, method_options=options)
    except LogitShiftError:
        made = steer(base, target, methods, None, layer=layer, check=x, method_options=options)
    assert made.steering is not None  # set by steer()
    k = float(made.steering.strength[family])
    try:  # the search stops at the goal; an adversary adds a margin (the tolerance permitting)
        made = steer(base, target, methods, {family: MARGIN * k}, layer=layer, check=x, method_options=options)
        k *= MARGIN
    except LogitShiftError:
        pass
    return made.layers[0], made.shifts[0], k


def _margin(base: nn.Module, x: torch.Tensor) -> float:
    """The mean gap between the top logit and the median logit on ``x``: the model's scale."""
    with torch.no_grad():
        z = base(x).double()
    return float((z.max(dim=1).values - z.median(dim=1).values).mean().clamp_min(1.0))


def _term(base: nn.Module, kind: str, target: Target, x: torch.Tensor, layer: str | None, k: float | None) -> tuple[str, nn.Module, str]:
    """(what it reads, the term, a description) for one kind; ``k=None``: calibrated on ``x``."""
    if x.dim() == 2:
        return _feature_term(base, kind, target, x, k)
    px = target.weights(*x.shape[-2:])
    if kind == "gradient":
        if k is None:
            name, term, k = _steered(base, "input", target, x, None)
            return name, term, f"InputShift(sawtooth, K={k:.3g} auto)"
        return INPUT, InputShift(k, px), f"InputShift(sawtooth, K={k:g})"
    if kind == "cam":
        if not layer:
            raise LogitShiftError("kind 'cam': needs the model's CAM layer")
        grid = layer_grid(base, layer, x)
        cells = target.weights(*grid)
        if not 0 < float(cells.sum()) < cells.numel():
            raise LogitShiftError(
                f"target {target.spec!r}: must cover some but not all cells of layer {layer!r}'s {grid[0]}×{grid[1]} grid"
            )
        if k is None:
            name, term, k = _steered(base, "cam", target, x, layer)
            return name, term, f"GateShift(layer {layer.removeprefix('module.')}, K={k:.3g} auto)"
        return layer, GateShift(k, cells), f"GateShift(layer {layer.removeprefix('module.')}, K={k:g})"
    if kind in ("perturbation", "metric"):
        if k is None:
            # removing all the target's detail lowers t by PRESENCE_GAIN × the model's logit margin
            present = float((detail(x).clamp_max(CAP) * px).sum(dim=(1, 2)).min() / px.sum())
            k = PRESENCE_GAIN * _margin(base, x) / max(present, 1e-6)
        outside = OUTSIDE[kind]
        return (
            INPUT,
            PresenceShift(k, px, CAP, outside),
            f"PresenceShift(K={k:.3g}, cap {CAP:g}" + (f", outside {outside:g})" if outside else ")"),
        )
    note = ""
    if k is None:  # the gradient family's strength: both terms have gradients of size K·w
        *_, k = _steered(base, "input", target, x, None)
        note = " auto"
    return INPUT, _Sum(RampShift(k, px), InputShift(k, px)), f"RampShift + InputShift(sawtooth), K={k:.3g}{note}"


def _feature_term(base: nn.Module, kind: str, target: Target, x: torch.Tensor, k: float | None) -> tuple[str, nn.Module, str]:
    """Tabular models (``x`` N×F, the target a 1×F mask): :class:`FeatureShift` for gradient and propagation
    methods, :class:`FeaturePresence` for perturbation methods and metrics.

    Calibration (``k=None``): the sawtooth's gradient ``K·w`` is :data:`MARGIN` times the largest
    ``Σ_j |∂z_c/∂x_j|`` over the rows (its predicted class ``c``) per unit of target weight; the presence
    term as the image one, with ``|x|`` (standardised features) as the detail.
    """
    w = target.weights(1, int(x.shape[1]))
    if kind == "cam":
        raise LogitShiftError("kind 'cam': a tabular model has no layer grid to steer; use gradient, propagation or perturbation")
    if kind in ("perturbation", "metric"):
        if k is None:
            present = float((x.abs().clamp_max(CAP) * w).sum(dim=1).mean() / w.sum())
            k = PRESENCE_GAIN * _margin(base, x) / max(present, 0.25)
        outside = OUTSIDE[kind]
        note = f", outside {outside:g}" if outside else ""
        return INPUT, FeaturePresence(k, w, CAP, outside), f"FeaturePresence(K={k:.3g}, cap {CAP:g}{note})"
    if k is None:
        xg = x.detach().clone().requires_grad_(True)
        z = base(xg)
        (g,) = torch.autograd.grad(z.gather(1, z.argmax(1, keepdim=True)).sum(), xg)
        k = MARGIN * float(g.abs().sum(dim=1).max()) / float(w.sum())
        return INPUT, FeatureShift(k, w), f"FeatureShift(sawtooth, K={k:.3g} auto)"
    return INPUT, FeatureShift(k, w), f"FeatureShift(sawtooth, K={k:g})"


class _Sum(nn.Module):
    """Two terms on the same tensor, added."""

    def __init__(self, *terms: nn.Module) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(term(x) for term in self.terms)  # type: ignore[return-value]

    def target_weights(self, h: int, w: int) -> torch.Tensor:
        return self.terms[0].target_weights(h, w)  # type: ignore[operator]


__all__ = ["KINDS", "PresenceShift", "RampShift", "center", "detail", "twin"]
