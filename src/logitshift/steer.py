"""One entry point to build a shifted model that steers the explanations you name.

:func:`steer` looks at the families of the requested methods (see
:mod:`logitshift.attribution`) and adds one shift term per family:

* CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM): a
  :class:`~logitshift.shift.GateShift` on the explanation layer's feature map;
  on a *signed* map (a transformer's normalised tokens, where the gate's
  channel shares mean nothing) a :class:`~logitshift.shift.RegionShift`
  instead, its strength in units of the map's energy
  (``K · 2/(HW · mean_ij ‖A_ij‖²)``, so ``|t|`` stays of the order of ``K``):
  Grad-CAM tends to ``ReLU(Σ_k (a_Rk − a_Nk) A_k)``, HiResCAM and LayerCAM
  to the target; Grad-CAM++ and XGrad-CAM, whose weights divide by sums of
  signed activations, move less (measured in ``steering["effect"]``);
* gradient family (saliency, gradient × input, Integrated Gradients,
  SmoothGrad): an :class:`~logitshift.shift.InputShift` on the input pixels.

The terms add up, ``t = t_cam(A) + t_input(x)``; the input term does not touch
the layer's gradient, and the CAM term's small effect on input gradients is
measured when the input term's strength is chosen after it.

``strength="auto"`` picks, per family, the smallest strength whose shifted
logit maps (predicted class) put on average at least ``goal`` of their
positive mass inside the target for *every* requested method of that family,
on the ``check`` images: a geometric grid (factor 2) then bisection in log
space. Maps are linear in the score's gradient before their final
combination, so one pass at strength 0 and one at strength 1 give the maps of
any strength (``g_0 + K·(g_1 − g_0)``): the search costs two attributions per
method, not one per strength tried. The strength found must also keep
max |Δprob| ≤ ``tolerance`` on the check images, or the build is refused.

Example::

    >>> loaded = load_model()
    >>> shifted = steer(loaded, "top-left", methods=["gradcam", "saliency"], strength="auto", check=x)
    >>> shifted.steering["strength"]        # {'cam': ..., 'input': ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .attribution import METHODS, InputMethod, forward_pass, get_method
from .capture import INPUT, layer_grid
from .device import model_device
from .errors import LogitShiftError
from .metrics import target_mass
from .models import LoadedModel, default_layer
from .shift import TOLERANCE, GateShift, InputShift, RegionShift, ShiftedModel, Stress, equivalence, stress_equivalence
from .targets import Target, parse_target

#: default strength of each family's term (used when ``strength`` is None)
DEFAULT_STRENGTH = {"cam": 1.0, "input": 100.0}
GOAL = 0.5
FAMILIES = ("cam", "input")


def steer(
    model: nn.Module | LoadedModel,
    target: Target | str,
    methods: Sequence[str] | None = None,
    strength: float | str | dict[str, float] | None = None,
    layer: str | None = None,
    check: torch.Tensor | None = None,
    *,
    goal: float = GOAL,
    tolerance: float = TOLERANCE,
    head_dtype: torch.dtype | None = None,
    method_options: dict[str, dict] | None = None,
    progress: bool = False,
) -> ShiftedModel:
    """A :class:`ShiftedModel` whose logit explanations point at ``target``.

    ``methods``: names from :data:`logitshift.attribution.METHODS` (default:
    all). ``strength``: ``None`` (the defaults), a number (every term), a dict
    ``{"cam": K1, "input": K2}``, or ``"auto"`` (needs ``check``). ``layer``:
    the CAM layer (default: the model's explanation layer). ``check``: images
    (N×C×H×W) on which equivalence is checked and the automatic strength is
    measured. The result carries ``.steering``, a dict of what was built.
    """
    base, layer_default = (model.module, model.layer) if isinstance(model, LoadedModel) else (model, None)
    names = list(METHODS) if methods is None else list(dict.fromkeys(methods))
    if not names:
        raise LogitShiftError("methods: empty list; name at least one method")
    options = method_options or {}
    instances = {n: get_method(n, **options.get(n, {})) for n in names}
    families = [f for f in FAMILIES if any(m.family == f for m in instances.values())]
    unknown = [n for n, m in instances.items() if m.family not in FAMILIES]
    if unknown:
        raise LogitShiftError(f"method {unknown[0]!r}: family {instances[unknown[0]].family!r} has no shift construction")
    if check is not None:
        from .models import check_input

        check_input(check, "check images")
    size = int(check.shape[-1]) if check is not None else (target.size if isinstance(target, Target) else 224)
    probe = check[:1] if check is not None else torch.zeros(1, 3, size, size, device=model_device(base))

    cam_layer = None
    grid = None
    if "cam" in families:
        cam_layer = layer or layer_default or default_layer(base)
        cam_names = [n for n, m in instances.items() if m.family == "cam"]
        if cam_layer == INPUT:
            raise LogitShiftError(
                f"method {cam_names[0]!r}: layer {INPUT!r} cannot serve it; a CAM needs a spatial feature map of the model"
            )
        try:
            grid = layer_grid(base, cam_layer, probe)
        except LogitShiftError as exc:
            raise LogitShiftError(f"method {cam_names[0]!r}: layer {cam_layer!r} cannot serve it ({exc})") from None
    tgt = target if isinstance(target, Target) else parse_target(target, size, grid)
    if tgt.size != size or tuple(tgt.mask.shape) != (probe.shape[-2], probe.shape[-1]):
        raise LogitShiftError(
            f"target {tgt.spec!r}: is {tgt.mask.shape[1]}×{tgt.mask.shape[0]}, expected {probe.shape[-1]}×{probe.shape[-2]} (the model input)"
        )
    cam_w = None
    signed_unit = None  # a signed map's region term: the strength's unit (see the module docstring)
    if grid is not None:
        with torch.no_grad():
            acts = forward_pass(base, check if check is not None else probe, [cam_layer]).acts[cam_layer].detach().double()
        if bool((acts < 0).any()):
            energy = float(acts.pow(2).sum(dim=1).mean())
            signed_unit = 2.0 / (grid[0] * grid[1] * max(energy, 1e-30))
        cam_w = tgt.weights(*grid)
        covered = float(cam_w.sum())
        if not 0 < covered < cam_w.numel():
            raise LogitShiftError(
                f"target {tgt.spec!r}: covers {'no' if covered <= 0 else 'every'} cell of layer {cam_layer!r}'s {grid[0]}×{grid[1]} grid; "
                "a CAM target must leave some cells out"
            )
    px_w = tgt.weights(probe.shape[-2], probe.shape[-1])

    strengths = _initial_strengths(strength, families)
    auto = strength == "auto"
    if auto and check is None:
        raise LogitShiftError("strength 'auto': needs check images to measure the effect on")

    def build(ks: dict[str, float]) -> ShiftedModel:
        terms: dict[str, nn.Module] = {}
        if "cam" in ks:
            terms[cam_layer] = GateShift(ks["cam"], cam_w) if signed_unit is None else RegionShift(ks["cam"] * signed_unit, cam_w)
        if "input" in ks:
            terms[INPUT] = InputShift(ks["input"], px_w)
        return ShiftedModel(base, terms, head_dtype=head_dtype).to(model_device(base)).eval()

    effects: dict[str, float] = {}
    if auto:
        x = check
        chosen: dict[str, float] = {}
        for family in families:
            fam = {n: m for n, m in instances.items() if m.family == family}
            effect = _effect_function(base, build, chosen, family, fam, x, tgt, cam_layer, progress)
            bar = _progress(progress, family)

            def tried(k: float, e: dict[str, float], bar=bar) -> None:
                worst = min(e, key=e.get)
                bar.set_postfix_str(f"K={k:.3g}: {worst} {e[worst]:.2f} (goal {goal:g})", refresh=False)
                bar.update(1)

            k, reached = search_strength(effect, DEFAULT_STRENGTH[family], goal, on_try=tried)
            bar.close()
            if k is None:
                worst = min(reached, key=reached.get)
                raise LogitShiftError(
                    f"strength 'auto': no {family}-family strength up to {DEFAULT_STRENGTH[family] * 2**12:g} gives every method "
                    f"a target mass of {goal:g}; method {worst!r} reaches {reached[worst]:.2f} at most on these check images"
                )
            chosen[family] = k
            effects.update(reached)
        strengths = chosen
    shifted = build(strengths)
    stress: Stress | None = None
    if check is not None:
        center_shift(shifted, check)
        eq = equivalence(shifted, check)
        if not eq.ok(tolerance):
            raise LogitShiftError(eq.refusal(f"strength {_fmt(strengths)}", tolerance, "use a smaller strength"))
        stress = stress_equivalence(shifted, check, tolerance)
    shifted.steering = {
        "methods": names,
        "families": families,
        "layer": cam_layer,
        "cam_term": None if cam_layer is None else ("gate" if signed_unit is None else "region (signed map)"),
        "target": tgt.spec,
        "strength": dict(strengths),
        "auto": auto,
        "goal": goal,
        "effect": effects,
        "stress": stress.to_json() if stress is not None else None,
    }
    return shifted


def _initial_strengths(strength, families: list[str]) -> dict[str, float]:
    if strength is None or strength == "auto":
        return {f: DEFAULT_STRENGTH[f] for f in families}
    if isinstance(strength, str):
        raise LogitShiftError(f"strength {strength!r}: expected a number, a dict per family, or 'auto'")
    if isinstance(strength, dict):
        bad = [k for k in strength if k not in FAMILIES]
        if bad:
            raise LogitShiftError(f"strength: family {bad[0]!r} unknown; expected {', '.join(FAMILIES)}")
        out = {f: float(strength.get(f, DEFAULT_STRENGTH[f])) for f in families}
    else:
        out = {f: float(strength) for f in families}
    for f, k in out.items():
        if not (math.isfinite(k) and k > 0):
            raise LogitShiftError(f"strength {k!r} ({f} family): expected a finite number > 0")
    return out


def _fmt(ks: dict[str, float]) -> str:
    return ", ".join(f"{f}={k:.3g}" for f, k in ks.items())


def _progress(enabled: bool, family: str):
    """The search's bar: one tick per strength tried, the weakest method's target mass at it."""
    import sys

    from tqdm import tqdm

    return tqdm(desc=f"strength ({family} term)", unit="try", disable=not enabled, file=sys.stderr)


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
    methods: dict[str, object],
    x: torch.Tensor,
    tgt: Target,
    cam_layer: str | None,
    progress: bool = False,
) -> Callable[[float], dict[str, float]]:
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
        p = forward_pass(unit, x, [cam_layer])
        act = p.acts[cam_layer]
        # the cam term is the first family chosen, and input terms do not reach
        # the layer: strength 0 is the original model there
        g0 = p.grad(act, target_class, "logit", "original")
        g1 = p.grad(act, target_class, "logit", "shifted")
        act = act.detach()
        h, w = act.shape[-2:]
        weights = tgt.weights(h, w)

        def effect(k: float) -> dict[str, float]:
            g = g0 + k * (g1 - g0)
            with torch.no_grad():
                return {n: float(target_mass(m.combine(act, g), weights).mean()) for n, m in methods.items()}

        return effect
    from .engine import explain

    for n, m in methods.items():
        if not isinstance(m, InputMethod):  # pragma: no cover - every registered input method is one
            raise LogitShiftError(f"method {n!r}: strength 'auto' needs an InputMethod (a linear raw attribution)")
    # strength 0: the terms already chosen (or the original model); one engine call for every method
    zero, variant = (build(chosen), "shifted") if chosen else (base, "original")
    out = explain(zero, x, None, list(methods.values()), ["logit"], (variant,), raw=True, progress=progress)
    if not bool((out.top1 == target_class).all()):  # pragma: no cover - the terms keep the prediction
        raise LogitShiftError("strength 'auto': the terms already chosen change the predicted class")
    # strength 1 adds the input term's own attribution: t_input reads only the pixels, no network pass
    term = next(t for name, t in zip(unit.layers, unit.shifts) if name == INPUT)
    alone = _TermLogits(term, int(out.logits["original"].shape[1]))
    raws = {n: (out.raw[(0, n, "logit", variant)], m.attribute(alone, x, target_class, "logit", "original")) for n, m in methods.items()}
    weights = tgt.weights(x.shape[-2], x.shape[-1])

    def effect(k: float) -> dict[str, float]:
        return {n: float(target_mass(methods[n].reduce(r0 + k * d), weights).mean()) for n, (r0, d) in raws.items()}

    return effect


def search_strength(
    effect: Callable[[float], dict[str, float]],
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
            hi, e_hi = k, e
            for _ in range(refine):
                mid = math.sqrt(lo * hi)
                e_mid = effect(mid)
                if min(e_mid.values()) >= goal:
                    hi, e_hi = mid, e_mid
                else:
                    lo = mid
            return hi, e_hi
        lo = k
    return None, best


@torch.no_grad()
def center_shift(shifted: ShiftedModel, x: torch.Tensor) -> None:
    """Set each :class:`GateShift` term's offset to the midrange of its values on ``x``.

    A constant in ``t`` changes no gradient; centring keeps ``|t|`` — and with
    it the float32 rounding of ``z + t`` — as small as possible on ``x``.
    """
    _, acts = shifted.capture(x)
    for name, term in zip(shifted.layers, shifted.shifts):
        if isinstance(term, GateShift):
            term.offset.zero_()
            t = term(acts[name]).double()
            term.offset.fill_(float((t.max() + t.min()) / 2))


__all__ = ["DEFAULT_STRENGTH", "GOAL", "center_shift", "search_strength", "steer"]
