"""The plan step of :func:`logitshift.shift.steer.steer`: what to build, checked before any work.

:func:`plan` resolves the methods and their families, the layers (the CAM layer the explanation reads,
the layer the term reads), the target (its grid weights ``w`` on the term's layer and its pixel weights),
whether the term's map is *signed* (then the fit term, :class:`~logitshift.shift.model.FitShift`) and
each family's starting strength; every bad input is refused here with one line. :meth:`Plan.build`
then makes the :class:`~logitshift.shift.model.ShiftedModel` of any strengths ``{family: K}``:
``t = t_cam(A) + t_input(x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution import METHODS, Attribution, forward_pass, get_method
from ..core.capture import INPUT, as_logits, layer_grid
from ..core.device import model_device
from ..core.errors import LogitShiftError
from ..core.models import LoadedModel, check_input, check_outputs, default_layer
from ..core.targets import Target, parse_target
from .model import CONSTRUCTIONS, FitShift, GateShift, InputShift, PaperShift, RegionShift, ShiftedModel
from .model import DEFAULT_STRENGTH as SHIFT_STRENGTH

#: default strength of each family's term of the gate construction (used when ``strength`` is None)
DEFAULT_STRENGTH = {"cam": 1.0, "input": 100.0}
FAMILIES = ("cam", "input")
#: CAMs a signed map's fit term does not aim at: their weights divide by sums of signed activations (measured, not aimed)
SIGNED_UNAIMED = frozenset({"gradcampp", "xgradcam"})
#: at strength 1 the fit term's Grad-CAM map is this many times the model's own (RMS on the check images)
FIT_SCALE = 10.0


@dataclass
class Plan:
    """What :func:`~logitshift.shift.steer.steer` builds: the methods, the families with a term, the layers and the target."""

    base: nn.Module
    construction: str
    names: list[str]  # the methods asked for, each once
    instances: dict[str, Attribution]  # the methods, by name
    families: list[str]  # the families with a term
    steered: dict[str, Attribution]  # the methods the construction aims at (the effect is measured on every method of a family)
    cam_layer: str | None  # the explanation (CAM) layer
    term_layer: str | None  # the layer the CAM term reads
    target: Target
    cam_w: torch.Tensor | None  # the target's weights on the term layer's grid
    px_w: torch.Tensor  # the target's weights on the input pixels
    signed: bool  # a signed map: the fit term, not the gate
    fit_unit: float  # the fit term's strength unit (see fit_unit)
    start: dict[str, float]  # each family's default strength (the search grid's centre)

    @property
    def gate(self) -> bool:
        return self.construction == "gate"

    @property
    def cam_term(self) -> str | None:
        """The CAM term built: the construction's name, ``"gate"`` or ``"fit (signed map)"``; None without one."""
        if self.cam_layer is None:
            return None
        return self.construction if not self.gate else "fit (signed map)" if self.signed else "gate"

    def build(self, ks: dict[str, float], dtype: torch.dtype | None = None) -> ShiftedModel:
        """The shifted model with each family's term at strength ``ks[family]`` (a family not in ``ks``: no term)."""
        terms: dict[str, nn.Module] = {}
        if "cam" in ks:
            assert self.term_layer is not None and self.cam_w is not None
            terms[self.term_layer] = self._cam_term(ks["cam"])
        if "input" in ks:
            terms[INPUT] = InputShift(ks["input"], self.px_w)
        return ShiftedModel(self.base, terms, head_dtype=dtype).to(model_device(self.base)).eval()

    def _cam_term(self, k: float) -> nn.Module:
        assert self.cam_w is not None
        if self.construction == "paper":
            return PaperShift(k)
        if self.construction == "region":
            return RegionShift(k, self.cam_w)
        if self.signed:  # a signed map (a transformer's normalised tokens): the gate's channel shares mean nothing
            return FitShift(k * self.fit_unit, self.cam_w)
        return GateShift(k, self.cam_w)


def plan(
    model: nn.Module | LoadedModel,
    target: Target | str | None,
    methods: Sequence[str] | None,
    layer: str | None,
    check: torch.Tensor | None,
    construction: str,
    shift_layer: str | None,
    method_options: dict[str, dict] | None,
) -> Plan:
    """The :class:`Plan` of :func:`~logitshift.shift.steer.steer`'s arguments (see there), every refusal before any work."""
    if construction not in CONSTRUCTIONS:
        raise LogitShiftError(f"construction {construction!r}: unknown; expected one of {', '.join(CONSTRUCTIONS)}")
    base, layer_default = (model.module, model.layer) if isinstance(model, LoadedModel) else (model, None)
    names, instances = _methods(methods, method_options)
    gate = construction == "gate"
    # the families with a term: gate steers each family of the methods, region/paper is one feature-map term
    families = [f for f in FAMILIES if any(m.family == f for m in instances.values())] if gate else ["cam"]
    steered = {n: m for n, m in instances.items() if m.family in families}
    if check is not None:
        check_input(check, "check images")
        with torch.no_grad():  # NaN or constant logits on the check images: nothing to steer (one line)
            check_outputs(f"model {getattr(model, 'name', type(base).__name__)!r}", check, as_logits(base(check)))
    size = int(check.shape[-1]) if check is not None else (target.size if isinstance(target, Target) else 224)
    probe = check[:1] if check is not None else torch.zeros(1, 3, size, size, device=model_device(base))
    cams = [n for n, m in instances.items() if m.family == "cam"]
    cam_layer = term_layer = None
    grid = None
    if cams or not gate:
        cam_layer = layer or layer_default or default_layer(base)
        term_layer = shift_layer or cam_layer
        what = f"method {cams[0]!r}" if cams else f"construction {construction!r}"
        grid = _grids(base, [cam_layer, term_layer], probe, what)[term_layer]
    tgt = _target(target, construction, grid, term_layer, size, probe)
    signed, cam_w, fit = False, None, 1.0
    if grid is not None:
        assert term_layer is not None  # a grid comes from the term's layer
        x = check if check is not None else probe
        signed, cam_w, fit = _term_weights(base, x, term_layer, grid, tgt, gate)
        if signed:  # the methods the fit term cannot move are measured, not aimed at
            steered = {n: m for n, m in steered.items() if n not in SIGNED_UNAIMED}
    px_w = tgt.weights(probe.shape[-2], probe.shape[-1])
    start = {f: DEFAULT_STRENGTH[f] for f in families} if gate else {"cam": float(SHIFT_STRENGTH[construction])}
    return Plan(base, construction, names, instances, families, steered, cam_layer, term_layer, tgt, cam_w, px_w, signed, fit, start)


def _methods(methods: Sequence[str] | None, method_options: dict[str, dict] | None) -> tuple[list[str], dict[str, Attribution]]:
    """The methods asked for (default: all), each once, as instances; a method without a shift family is refused."""
    names = list(METHODS) if methods is None else list(dict.fromkeys(methods))
    if not names:
        raise LogitShiftError("methods: empty list; name at least one method")
    options = method_options or {}
    instances = {n: get_method(n, **options.get(n, {})) for n in names}
    unknown = [n for n, m in instances.items() if m.family not in FAMILIES]
    if unknown:
        raise LogitShiftError(f"method {unknown[0]!r}: family {instances[unknown[0]].family!r} has no shift construction")
    return names, instances


def _grids(base: nn.Module, layers: list[str], probe: torch.Tensor, what: str) -> dict[str, tuple[int, int]]:
    """Each layer's spatial grid (h, w); a layer that is the input or has no feature map is refused, naming ``what`` needs it."""
    grids = {}
    for name in dict.fromkeys(layers):
        if name == INPUT:
            raise LogitShiftError(f"{what}: layer {INPUT!r} cannot serve it; a CAM needs a spatial feature map of the model")
        try:
            grids[name] = layer_grid(base, name, probe)
        except LogitShiftError as exc:
            raise LogitShiftError(f"{what}: layer {name!r} cannot serve it ({exc})") from None
    return grids


def _target(
    target: Target | str | None,
    construction: str,
    grid: tuple[int, int] | None,
    term_layer: str | None,
    size: int,
    probe: torch.Tensor,
) -> Target:
    """The target region: the paper's cell (0, 0) of the term layer, or ``target`` parsed on the input (and the grid)."""
    if construction == "paper":
        assert grid is not None
        corner = PaperShift(1.0).target_weights(*grid)
        tgt = Target(F.interpolate(corner[None, None], size=(size, size), mode="nearest")[0, 0], f"cell (0, 0) of {term_layer}")
    elif target is None:
        raise LogitShiftError(f"construction {construction!r}: needs a target region (--target)")
    else:
        tgt = target if isinstance(target, Target) else parse_target(target, size, grid)
    if tgt.size != size or tuple(tgt.mask.shape) != (probe.shape[-2], probe.shape[-1]):
        raise LogitShiftError(
            f"target {tgt.spec!r}: is {tgt.mask.shape[1]}×{tgt.mask.shape[0]}, expected {probe.shape[-1]}×{probe.shape[-2]} (the model input)"
        )
    return tgt


def _term_weights(
    base: nn.Module, x: torch.Tensor, term_layer: str, grid: tuple[int, int], tgt: Target, gate: bool
) -> tuple[bool, torch.Tensor, float]:
    """``(signed, w, unit)``: whether the term layer's map is signed on ``x`` (gate only), the target's grid weights
    ``w`` (refused when they cover no cell or every cell) and the fit term's strength unit (1 unless signed)."""
    with torch.no_grad():
        term_act = forward_pass(base, x, [term_layer]).acts[term_layer].detach().double()
    signed = gate and bool((term_act < 0).any())
    cam_w = tgt.weights(*grid)
    covered = float(cam_w.sum())
    if not 0 < covered < cam_w.numel():
        raise LogitShiftError(
            f"target {tgt.spec!r}: covers {'no' if covered <= 0 else 'every'} cell of layer {term_layer!r}'s {grid[0]}×{grid[1]} grid; "
            "a CAM target must leave some cells out"
        )
    return signed, cam_w, fit_unit(base, x, term_layer, cam_w) if signed else 1.0


def fit_unit(base: nn.Module, x: torch.Tensor, layer: str, weights: torch.Tensor) -> float:
    """The fit term's strength unit: at ``K = 1`` its Grad-CAM map is :data:`FIT_SCALE` times the model's own.

    Both maps are channel mixes of the layer, ``Σ_k ḡ_k A_k`` (``ḡ``: the cell mean of the predicted logit's
    gradient) and ``Σ_k q_k A_k`` (the fit's rounded mix); the unit is the ratio of their RMS over the images.
    Without it ``K = 1`` meant a gradient hundreds of times the model's on a random ViT, whose exact
    cancellation in every post-softmax score float32 then leaves as rounding (HiResCAM's prob map, Spearman 0.84)."""
    p = forward_pass(base, x, [layer])
    act = p.acts[layer]
    g = p.grad(act, p.logits["original"].argmax(dim=1)).detach()
    act = act.detach()
    honest = (g.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1)
    fit = (FitShift(1.0, weights).mix(act)[:, :, None, None] * act).sum(dim=1)
    rms = lambda m: float(m.double().pow(2).mean().sqrt())  # noqa: E731
    return FIT_SCALE * rms(honest) / max(rms(fit), 1e-30)
