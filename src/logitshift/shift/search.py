"""The search step of :func:`logitshift.shift.steer.steer`: each family's strength, and the effect it has.

The effect of a strength ``K`` is ``K ↦ {method: mean target mass}`` of the shifted logit maps for the
predicted class on the check images. Maps are linear in the score's gradient before their final
combination, so one pass at strength 0 and one at strength 1 give the maps of any strength
(``combine(g_0 + K·(g_1 − g_0))``): the search costs two attributions per method, not one per strength
tried. :func:`search_strength` finds the smallest ``K`` whose effect reaches the goal for every method:
a geometric grid (factor 2) then bisection in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..attribution import Attribution, CamMethod, InputMethod, forward_pass
from ..core.capture import INPUT
from ..core.errors import LogitShiftError
from ..core.metrics import target_mass
from ..core.targets import Target
from .model import ShiftedModel
from .plan import Plan

#: the strength grid of ``strength="auto"``: start·2^j for j = −SPAN … SPAN
SPAN = 12

Effect = Callable[[float], dict[str, float]]


def search(
    plan: Plan,
    x: torch.Tensor,
    strengths: dict[str, float],
    auto: bool,
    goal: float,
    plateau: float,
    dtype: torch.dtype | None,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(strengths, effects)``: with ``auto``, each family's smallest strength whose effect on ``x`` reaches
    ``goal + plateau·(e_max − goal)`` for every steered method (families in order, the ones chosen kept); else
    the effect of ``strengths`` as given. A family none of whose methods is aimed at keeps its strength."""

    def build(ks: dict[str, float]) -> ShiftedModel:
        return plan.build(ks, dtype)

    chosen: dict[str, float] = {}
    effects: dict[str, float] = {}
    for family in plan.families:
        fam = {n: m for n, m in plan.instances.items() if m.family == family}  # measured
        if not any(n in plan.steered for n in fam):  # aimed at
            continue
        effect = _effect_function(plan.base, build, chosen, family, fam, x, plan.target, plan.cam_layer, progress)
        chosen[family] = _auto_strength(plan, family, effect, goal, plateau, progress) if auto else strengths[family]
        effects.update(effect(chosen[family]))
    if auto:
        strengths = {f: chosen.get(f, strengths[f]) for f in plan.families}
    return strengths, effects


def _auto_strength(plan: Plan, family: str, effect: Effect, goal: float, plateau: float, progress: bool) -> float:
    """The smallest strength of ``family`` whose effect reaches each steered method's aim, or a one-line refusal."""
    start = plan.start[family]
    top = effect(start * 2.0**SPAN)
    aim = {n: goal + plateau * max(0.0, v - goal) for n, v in top.items() if n in plan.steered}
    bar = _progress(progress, family)

    def tried(k: float, e: dict[str, float]) -> None:
        worst = min(e, key=lambda name: e[name])
        bar.set_postfix_str(f"K={k:.3g}: {worst} {e[worst] + aim[worst] - goal:.2f} (aim {aim[worst]:.2f})", refresh=False)
        bar.update(1)

    def relative(k: float) -> dict[str, float]:
        return {n: v - aim[n] + goal for n, v in effect(k).items() if n in aim}

    k, best = search_strength(relative, start, goal, span=SPAN, on_try=tried)
    bar.close()
    if k is None:
        best = {n: v + aim[n] - goal for n, v in best.items()}
        worst = min(best, key=lambda n: best[n])
        raise LogitShiftError(
            f"the effect was not reached: strength 'auto': no {family}-family strength up to {start * 2.0**SPAN:g} "
            f"gives every method a target mass of {goal:g}; method {worst!r} reaches {best[worst]:.2f} at most on these check images"
        )
    return k


def _progress(enabled: bool, family: str):
    """The search's bar: one tick per strength tried, the weakest method's target mass at it."""

    from ..core.progress import bar

    return bar(desc=f"strength ({family} term)", unit="try", enabled=enabled)


class _TermLogits(nn.Module):
    """A shift term alone as a classifier whose every logit is ``t(x)``: its logit attribution is that of ``t``."""

    def __init__(self, term: nn.Module, classes: int) -> None:
        super().__init__()
        self.term, self.classes = term, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.term(x)[:, None].expand(-1, self.classes)


def _effect_function(
    base: nn.Module,
    build: Callable[[dict[str, float]], ShiftedModel],
    chosen: dict[str, float],
    family: str,
    methods: Mapping[str, Attribution],
    x: torch.Tensor,
    tgt: Target,
    cam_layer: str | None,
    progress: bool = False,
) -> Effect:
    """``K ↦ {method: mean target mass}`` of the shifted logit maps for the predicted class.

    Every map is ``combine(g_0 + K·(g_1 − g_0))`` with ``g_0`` / ``g_1`` the
    score's gradient (CAMs) or raw attribution (input methods, all linear in
    the gradient) with this family's term at strength 0 and 1; the terms
    already chosen stay at their strength. For input methods ``g_1 − g_0`` is
    the attribution of the input term alone (it reads only the pixels), so
    the network is crossed once per point, by one engine call for all methods.
    """
    unit = build({**chosen, family: 1.0})
    with torch.no_grad():
        target_class = base(x).argmax(dim=1)
    if family == "cam":
        assert cam_layer is not None  # a CAM family has a layer
        return _cam_effect(unit, methods, x, tgt, cam_layer, target_class)
    return _input_effect(base, build, unit, chosen, methods, x, tgt, target_class, progress)


def _cam_effect(
    unit: ShiftedModel, methods: Mapping[str, Attribution], x: torch.Tensor, tgt: Target, cam_layer: str, target_class: torch.Tensor
) -> Effect:
    """The CAM family's effect: ``g_0`` / ``g_1`` the original and shifted logit's gradient at the CAM layer."""
    cams = {n: m for n, m in methods.items() if isinstance(m, CamMethod)}
    p = forward_pass(unit, x, [cam_layer])
    act = p.acts[cam_layer]
    # the cam term is the first family chosen, and input terms do not reach
    # the layer: strength 0 is the original model there
    g0 = p.grad(act, target_class, "logit", "original")
    g1 = p.grad(act, target_class, "logit", "shifted")
    act = act.detach()
    h, w = act.shape[-2:]
    weights = tgt.weights(h, w)

    def cam_effect(k: float) -> dict[str, float]:
        g = g0 + k * (g1 - g0)
        with torch.no_grad():
            return {n: float(target_mass(m.combine(act, g), weights).mean()) for n, m in cams.items()}

    return cam_effect


def _input_effect(
    base: nn.Module,
    build: Callable[[dict[str, float]], ShiftedModel],
    unit: ShiftedModel,
    chosen: dict[str, float],
    methods: Mapping[str, Attribution],
    x: torch.Tensor,
    tgt: Target,
    target_class: torch.Tensor,
    progress: bool,
) -> Effect:
    """The input family's effect: the raw attributions at strength 0 plus ``K`` times the input term's own."""
    from ..attribution.engine import explain

    for n, m in methods.items():
        if not isinstance(m, InputMethod):  # pragma: no cover - every registered input method is one
            raise LogitShiftError(f"method {n!r}: strength 'auto' needs an InputMethod (a linear raw attribution)")
    inputs = {n: m for n, m in methods.items() if isinstance(m, InputMethod)}
    # strength 0: the terms already chosen (or the original model); one engine call for every method
    zero, variant = (build(chosen), "shifted") if chosen else (base, "original")
    out = explain(zero, x, None, list(inputs.values()), ["logit"], (variant,), raw=True, progress=progress)
    if not bool((out.top1 == target_class).all()):  # pragma: no cover - the terms keep the prediction
        raise LogitShiftError("strength 'auto': the terms already chosen change the predicted class")
    # strength 1 adds the input term's own attribution: t_input reads only the pixels, no network pass
    term = next(t for name, t in zip(unit.layers, unit.shifts) if name == INPUT)
    alone = _TermLogits(term, int(out.logits["original"].shape[1]))
    raws = {n: (out.raw[(0, n, "logit", variant)], m.attribute(alone, x, target_class, "logit", "original")) for n, m in inputs.items()}
    weights = tgt.weights(x.shape[-2], x.shape[-1])

    def input_effect(k: float) -> dict[str, float]:
        return {n: float(target_mass(inputs[n].reduce(r0 + k * d), weights).mean()) for n, (r0, d) in raws.items()}

    return input_effect


def search_strength(
    effect: Effect,
    start: float,
    goal: float,
    span: int = 12,
    refine: int = 8,
    on_try: Callable[[float, dict[str, float]], None] | None = None,
) -> tuple[float | None, dict[str, float]]:
    """The smallest ``K`` (to a factor ``2^(1/2^refine)``) with ``min(effect(K).values()) ≥ goal``.

    Tries ``start·2^j`` for ``j = −span … span`` in order, then bisects in log
    space between the last failure and the first success. Returns ``(None,
    best effect per method)`` when no grid strength reaches the goal.
    ``on_try(K, effect)`` is called after each strength tried (progress).
    """
    if on_try is not None:
        inner = effect

        def effect(k: float) -> dict[str, float]:
            e = inner(k)
            on_try(k, e)
            return e

    best: dict[str, float] = {}
    lo = None
    for j in range(-span, span + 1):
        k = start * 2.0**j
        e = effect(k)
        for n, v in e.items():
            best[n] = max(best.get(n, 0.0), v)
        if min(e.values()) >= goal:
            if lo is None:
                return k, e
            return _bisect(effect, lo, k, e, goal, refine)
        lo = k
    return None, best


def _bisect(effect: Effect, lo: float, hi: float, e_hi: dict[str, float], goal: float, refine: int) -> tuple[float, dict[str, float]]:
    """``refine`` halvings in log space of ``[lo, hi]`` (``lo`` fails the goal, ``hi`` reaches it): the last ``hi`` and its effect."""
    for _ in range(refine):
        mid = math.sqrt(lo * hi)
        e_mid = effect(mid)
        if min(e_mid.values()) >= goal:
            hi, e_hi = mid, e_mid
        else:
            lo = mid
    return hi, e_hi
