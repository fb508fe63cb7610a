"""One entry point to build a shifted model that steers the explanations you name.

:func:`steer` looks at the families of the requested methods (see
:mod:`logitshift.attribution`) and adds one shift term per family:

* CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM): a
  :class:`~logitshift.shift.model.GateShift` on the explanation layer's feature map;
  on a *signed* map (a transformer's normalised tokens, where the gate's
  channel shares mean nothing) a :class:`~logitshift.shift.model.FitShift`
  instead: a channel mix fitted per image to the target, so Grad-CAM,
  HiResCAM and LayerCAM tend to the target. Grad-CAM++ and XGrad-CAM, whose
  weights divide by sums of signed activations, are not aimed at there
  (:data:`SIGNED_UNAIMED`): their effect is measured and reported
  (``steering["effect"]``), and the automatic strength does not wait for it
  (a region-contrast term moved them to 0.33 / 0.12 on a random-weight
  ``vit_b_16``, not to the goal);
* gradient family (saliency, gradient × input, Integrated Gradients,
  SmoothGrad): an :class:`~logitshift.shift.model.InputShift` on the input pixels.

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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution import METHODS, Attribution, CamMethod, InputMethod, forward_pass, get_method
from ..core.capture import INPUT, layer_grid
from ..core.device import model_device
from ..core.errors import LogitShiftError
from ..core.images import Item
from ..core.metrics import spearman, target_mass
from ..core.models import LoadedModel, check_input, default_layer, get_layer, load_model
from ..core.targets import Target, parse_target
from ..core.text import TextModel
from .model import (
    CONSTRUCTIONS,
    TOLERANCE,
    Equivalence,
    FitShift,
    GateShift,
    InputShift,
    PaperShift,
    RegionShift,
    ShiftedModel,
    ShiftSetup,
    Stress,
    TokenShift,
    compare,
    equivalence,
    stress_equivalence,
)
from .model import DEFAULT_STRENGTH as SHIFT_STRENGTH

#: default strength of each family's term of the gate construction (used when ``strength`` is None)
DEFAULT_STRENGTH = {"cam": 1.0, "input": 100.0}
GOAL = 0.5
FAMILIES = ("cam", "input")
#: the auto head stays float32 while it changes probabilities on the check images by at most this share of the tolerance
#: (room for images outside the check set); above it the shift is added in float64
HEAD_MARGIN = 0.1
#: CAMs a signed map's fit term does not aim at: their weights divide by sums of signed activations (measured, not aimed)
SIGNED_UNAIMED = frozenset({"gradcampp", "xgradcam"})
#: at strength 1 the fit term's Grad-CAM map is this many times the model's own (RMS on the check images)
FIT_SCALE = 10.0
#: the strength grid of ``strength="auto"``: start·2^j for j = −SPAN … SPAN
SPAN = 12
#: how far the commands' automatic strength goes from the goal toward the effect's plateau (see ``plateau``)
PLATEAU = 0.9


def steer(  # noqa: C901 — the front door: plan, search and build in order; to be split into plan/search/build/check
    model: nn.Module | LoadedModel,
    target: Target | str | None = None,
    methods: Sequence[str] | None = None,
    strength: float | str | dict[str, float] | None = None,
    layer: str | None = None,
    check: torch.Tensor | None = None,
    *,
    construction: str = "gate",
    shift_layer: str | None = None,
    goal: float = GOAL,
    plateau: float = 0.0,
    tolerance: float = TOLERANCE,
    head_dtype: torch.dtype | str | None = None,
    measure: bool = False,
    stress: bool = True,
    method_options: dict[str, dict] | None = None,
    progress: bool = False,
) -> ShiftedModel:
    """A :class:`ShiftedModel` whose logit explanations point at ``target``: the one front door.

    ``construction``: ``"gate"`` (default: one term per family of the methods,
    :class:`GateShift` for CAMs, :class:`InputShift` for input methods),
    ``"region"`` (:class:`RegionShift`) or ``"paper"`` (:class:`PaperShift`,
    cell (0, 0); no target), both one term on ``shift_layer`` that steers CAMs
    only. ``methods``: names from :data:`logitshift.attribution.METHODS`
    (default: all). ``strength``: ``None`` (the defaults), a number (every
    term), a dict ``{"cam": K1, "input": K2}``, or ``"auto"`` (needs
    ``check``): the smallest strength whose maps reach ``goal`` — or, with
    ``plateau`` = f > 0, reach ``goal + f·(e_max − goal)`` for every method,
    ``e_max`` the effect at the strongest grid point (a strength on the flat of
    the effect curve, not at its steep edge). ``layer``: the explanation
    (CAM) layer (default: the model's); ``shift_layer``: the layer the CAM
    term reads (default: ``layer``). ``check``: images (N×C×H×W) on which
    equivalence is checked and the effect measured. ``head_dtype="auto"``:
    a float64 head when the float32 one changes probabilities on the check
    images by more than ``tolerance``·:data:`HEAD_MARGIN`, or on the stress
    inputs by more than ``tolerance``. ``measure``: also
    measure the effect at a given (not auto) strength. ``stress``: check
    equivalence beyond the check images too. The result carries
    ``.steering``, a dict of what was built and measured
    (``reached``: every steered method met ``goal``; see :func:`unreached`).
    """
    if construction not in CONSTRUCTIONS:
        raise LogitShiftError(f"construction {construction!r}: unknown; expected one of {', '.join(CONSTRUCTIONS)}")
    base, layer_default = (model.module, model.layer) if isinstance(model, LoadedModel) else (model, None)
    names = list(METHODS) if methods is None else list(dict.fromkeys(methods))
    if not names:
        raise LogitShiftError("methods: empty list; name at least one method")
    options = method_options or {}
    instances = {n: get_method(n, **options.get(n, {})) for n in names}
    unknown = [n for n, m in instances.items() if m.family not in FAMILIES]
    if unknown:
        raise LogitShiftError(f"method {unknown[0]!r}: family {instances[unknown[0]].family!r} has no shift construction")
    gate = construction == "gate"
    # the families with a term: gate steers each family of the methods, region/paper is one feature-map term
    families = [f for f in FAMILIES if any(m.family == f for m in instances.values())] if gate else ["cam"]
    # the methods the construction aims at (the effect is measured on these)
    steered = {n: m for n, m in instances.items() if m.family in families}
    if check is not None:
        check_input(check, "check images")
    size = int(check.shape[-1]) if check is not None else (target.size if isinstance(target, Target) else 224)
    probe = check[:1] if check is not None else torch.zeros(1, 3, size, size, device=model_device(base))

    cam_layer = None
    term_layer = None
    grid = None
    cams = [n for n, m in instances.items() if m.family == "cam"]
    if cams or not gate:
        cam_layer = layer or layer_default or default_layer(base)
        term_layer = shift_layer or cam_layer
        for name in dict.fromkeys([cam_layer, term_layer]):
            what = f"method {cams[0]!r}" if cams else f"construction {construction!r}"
            if name == INPUT:
                raise LogitShiftError(f"{what}: layer {INPUT!r} cannot serve it; a CAM needs a spatial feature map of the model")
            try:
                shape = layer_grid(base, name, probe)
            except LogitShiftError as exc:
                raise LogitShiftError(f"{what}: layer {name!r} cannot serve it ({exc})") from None
            if name == term_layer:
                grid = shape
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
    cam_w = None
    signed = False  # a signed map: the fit term, not the gate (see the module docstring)
    fit_unit = 1.0  # the fit term's strength unit (see _fit_unit)
    if grid is not None:
        assert term_layer is not None  # a grid comes from the term's layer
        with torch.no_grad():
            term_act = forward_pass(base, check if check is not None else probe, [term_layer]).acts[term_layer].detach().double()
        signed = gate and bool((term_act < 0).any())
        if signed:  # the methods the fit term cannot move are measured, not aimed at
            steered = {n: m for n, m in steered.items() if n not in SIGNED_UNAIMED}
        cam_w = tgt.weights(*grid)
        covered = float(cam_w.sum())
        if not 0 < covered < cam_w.numel():
            raise LogitShiftError(
                f"target {tgt.spec!r}: covers {'no' if covered <= 0 else 'every'} cell of layer {term_layer!r}'s {grid[0]}×{grid[1]} grid; "
                "a CAM target must leave some cells out"
            )
        if signed:
            fit_unit = _fit_unit(base, check if check is not None else probe, term_layer, cam_w)
    px_w = tgt.weights(probe.shape[-2], probe.shape[-1])

    start = {f: DEFAULT_STRENGTH[f] for f in families} if gate else {"cam": float(SHIFT_STRENGTH[construction])}
    strengths = _initial_strengths(strength, families, start)
    auto = strength == "auto"
    if auto and check is None:
        raise LogitShiftError("strength 'auto': needs check images to measure the effect on")
    wide = head_dtype if isinstance(head_dtype, torch.dtype) else None
    if isinstance(head_dtype, str) and head_dtype != "auto":
        raise LogitShiftError(f"head dtype {head_dtype!r}: expected a torch dtype, None or 'auto'")

    def build(ks: dict[str, float], dtype: torch.dtype | None = wide) -> ShiftedModel:
        terms: dict[str, nn.Module] = {}
        if "cam" in ks:
            assert term_layer is not None and cam_w is not None
            if construction == "paper":
                terms[term_layer] = PaperShift(ks["cam"])
            elif construction == "region":
                terms[term_layer] = RegionShift(ks["cam"], cam_w)
            elif signed:  # a signed map (a transformer's normalised tokens): the gate's channel shares mean nothing
                terms[term_layer] = FitShift(ks["cam"] * fit_unit, cam_w)
            else:
                terms[term_layer] = GateShift(ks["cam"], cam_w)
        if "input" in ks:
            terms[INPUT] = InputShift(ks["input"], px_w)
        return ShiftedModel(base, terms, head_dtype=dtype).to(model_device(base)).eval()

    effects: dict[str, float] = {}
    if check is not None and (auto or measure):
        x = check
        chosen: dict[str, float] = {}
        for family in families:
            fam = {n: m for n, m in instances.items() if m.family == family}  # measured
            if not any(n in steered for n in fam):  # aimed at
                continue
            effect = _effect_function(base, build, chosen, family, fam, x, tgt, cam_layer, progress)
            if not auto:
                chosen[family] = strengths[family]
                effects.update(effect(strengths[family]))
                continue
            top = effect(start[family] * 2.0**SPAN)
            aim = {n: goal + plateau * max(0.0, v - goal) for n, v in top.items() if n in steered}
            bar = _progress(progress, family)

            def tried(k: float, e: dict[str, float], bar=bar, aim=aim) -> None:
                worst = min(e, key=lambda name: e[name])
                bar.set_postfix_str(f"K={k:.3g}: {worst} {e[worst] + aim[worst] - goal:.2f} (aim {aim[worst]:.2f})", refresh=False)
                bar.update(1)

            def relative(k: float, effect=effect, aim=aim) -> dict[str, float]:
                return {n: v - aim[n] + goal for n, v in effect(k).items() if n in aim}

            k, best = search_strength(relative, start[family], goal, span=SPAN, on_try=tried)
            bar.close()
            if k is None:
                best = {n: v + aim[n] - goal for n, v in best.items()}
                worst = min(best, key=lambda n: best[n])
                raise LogitShiftError(
                    f"the effect was not reached: strength 'auto': no {family}-family strength up to {start[family] * 2.0**SPAN:g} "
                    f"gives every method a target mass of {goal:g}; method {worst!r} reaches {best[worst]:.2f} at most on these check images"
                )
            chosen[family] = k
            effects.update(effect(k))
        if auto:
            strengths = {f: chosen.get(f, strengths[f]) for f in families}
    shifted = build(strengths)
    head = {"dtype": str(shifted.head_dtype or "float32").replace("torch.", ""), "auto": head_dtype == "auto"}
    result: Stress | None = None
    if check is not None:
        z, acts = center_shift(shifted, check)  # one pass of the check images serves the centring and the equivalence

        def measured() -> Equivalence:
            with torch.no_grad():
                return compare(z, shifted.shifted_logits(z, acts))

        eq = measured()
        if head_dtype == "auto":
            head["float32_max_abs_prob_diff"] = eq.max_abs_prob_diff
            if eq.max_abs_prob_diff > HEAD_MARGIN * tolerance or eq.top1_agree < 1.0:
                shifted.head_dtype = torch.float64
                head["dtype"] = "float64"
                eq = measured()
        if not eq.ok(tolerance):
            remedy = "use a smaller strength" + ("" if shifted.head_dtype == torch.float64 else " or a float64 head (--float64-head)")
            raise LogitShiftError(eq.refusal(f"strength {_fmt(strengths)}", tolerance, remedy))
        if stress:
            result = stress_equivalence(shifted, check, tolerance)
            if head_dtype == "auto" and not result.ok and shifted.head_dtype != torch.float64:
                # the check images pass in float32 but a scaled or noisy input does not: the wider head for those too
                head["float32_stress_max_abs_prob_diff"] = result.max_abs_prob_diff
                shifted.head_dtype = torch.float64
                head["dtype"] = "float64"
                result = stress_equivalence(shifted, check, tolerance)
    shifted.steering = {
        "methods": names,
        "construction": construction,
        "families": families,
        "layer": cam_layer,
        "shift_layer": term_layer,
        "cam_term": None if cam_layer is None else construction if construction != "gate" else "fit (signed map)" if signed else "gate",
        "target": tgt.spec,
        "strength": dict(strengths),
        "auto": auto,
        "goal": goal,
        "plateau": plateau if auto else None,
        "effect": effects,
        "steered": list(steered),
        "reached": all(effects.get(n, 0.0) >= goal for n in steered) if effects else None,
        "head": head,
        "check_images": int(check.shape[0]) if check is not None else 0,
        "stress": result.to_json() if result is not None else None,
    }
    return shifted


@dataclass
class Prepared:
    """The model a :class:`ShiftSetup` names, on its device, its layers checked and its classes resolved."""

    loaded: LoadedModel
    layer: str  # the explanation layer
    shift_layer: str  # the layer the shift reads
    extra: list[int]  # the --class classes, as indices, each once
    labels: dict[str, int] | None  # per-image true labels (--labels), by item key


def prepare(setup: ShiftSetup, items: Sequence[Item], device: torch.device | str) -> Prepared:
    """Load ``setup.model``, move it to ``device``, check both layers exist, resolve ``--class``, ``--labels`` and
    ``--top-k`` against the model's classes: every one-line refusal ``demo`` and ``evaluate`` share, before any work."""
    from ..core.classes import resolve_class
    from ..core.labels import read_labels

    loaded = load_model(setup.model, setup.weights, num_classes=setup.num_classes, class_names=setup.class_names)
    loaded.module.to(device)
    layer = setup.layer or loaded.layer
    shift_layer = setup.shift_layer or layer
    get_layer(loaded.module, layer)
    get_layer(loaded.module, shift_layer)
    extra = list(dict.fromkeys(resolve_class(c, loaded.num_classes, loaded.class_names) for c in setup.classes))
    labels = read_labels(setup.labels, items, loaded.num_classes, loaded.class_names) if setup.labels else None
    if setup.top_k > loaded.num_classes:
        raise LogitShiftError(f"--top-k {setup.top_k}: this model has {loaded.num_classes} classes")
    return Prepared(loaded, layer, shift_layer, extra, labels)


def steer_setup(
    loaded: LoadedModel,
    setup: ShiftSetup,
    methods: Sequence[str],
    check: torch.Tensor,
    *,
    method_options: dict[str, dict] | None = None,
    progress: bool = False,
) -> ShiftedModel:
    """The shifted model a command's :class:`~logitshift.shift.model.ShiftSetup` asks for, built by :func:`steer` on ``check``.

    Defaults that work on a user's own photos: the gate construction at
    strength ``"auto"`` (aiming :data:`PLATEAU` of the way from the goal to
    the effect's plateau on ``check``), a float64 head only when float32
    would change probabilities (``head_dtype="auto"``). The effect is
    measured at any strength; when it falls short of the goal the build is
    refused with one line (:func:`unreached`), before anything is written.
    """
    strength = setup.strength if setup.strength is not None else SHIFT_STRENGTH[setup.construction]
    head: torch.dtype | str | None = "auto" if setup.float64_head is None else (torch.float64 if setup.float64_head else None)
    shifted = steer(
        loaded,
        None if setup.construction == "paper" else setup.region,
        methods,
        strength,
        setup.layer,
        check,
        construction=setup.construction,
        shift_layer=setup.shift_layer,
        goal=setup.goal,
        plateau=PLATEAU,
        tolerance=setup.tolerance,
        head_dtype=head,
        measure=True,
        stress=False,
        method_options=method_options,
        progress=progress,
    )
    line = unreached(shifted.steering)
    if line is not None:
        raise LogitShiftError(line)
    return shifted


def chosen(steering: dict) -> str:
    """What :func:`steer` chose, in words: construction, strength (and how), head, the effect on the check images."""
    ks = _fmt(steering["strength"])
    how = f"auto: {steering['plateau']:g} of the way to the plateau" if steering["auto"] and steering.get("plateau") else "auto"
    head = steering.get("head") or {}
    wide = head.get("dtype") == "float64"
    head_text = f"{'float64' if wide else 'float32'} head" + (
        f" (auto: float32 changed probabilities by {head['float32_max_abs_prob_diff']:.1e})"
        if head.get("auto") and "float32_max_abs_prob_diff" in head
        else ""
    )
    effect = ", ".join(f"{n} {v:.2f}" for n, v in (steering.get("effect") or {}).items())
    term = str(steering.get("cam_term") or "")
    what = f"{steering['construction']} shift" + (", fit CAM term (signed map)" if term.startswith("fit") else "")
    return f"{what}, strength {ks}{f' ({how})' if steering['auto'] else ''}, {head_text}" + (
        f"; target mass on the {steering['check_images']} check images: {effect}" if effect else ""
    )


def unreached(steering: dict) -> str | None:
    """The one line that says a measured effect fell short of the goal (``None`` when it was reached or not measured).

    The paper construction is exempt: its point is a class-agnostic map, not a target (its corner is one cell).
    """
    effects, goal = steering.get("effect") or {}, steering.get("goal", GOAL)
    if steering.get("construction") == "paper" or steering.get("reached") is not False:
        return None
    short = {n: effects.get(n, 0.0) for n in steering["steered"] if effects.get(n, 0.0) < goal}
    worst = min(short, key=lambda n: short[n])
    k = _fmt(steering["strength"])
    remedy = "--strength auto" if steering["construction"] == "gate" else "--construction gate (works on every architecture)"
    return (
        f"the effect was not reached: at strength {k} the {steering['construction']} shift puts {short[worst]:.2f} of method "
        f"{worst!r}'s logit map in the target {steering['target']!r} on the {steering['check_images']} check images "
        f"(goal {goal:g}); try {remedy}, or --goal 0 to measure it as it is"
    )


def _fit_unit(base: nn.Module, x: torch.Tensor, layer: str, weights: torch.Tensor) -> float:
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


def _initial_strengths(strength, families: list[str], start: dict[str, float]) -> dict[str, float]:
    if strength is None or strength == "auto":
        return {f: start[f] for f in families}
    if isinstance(strength, str):
        raise LogitShiftError(f"strength {strength!r}: expected a number, a dict per family, or 'auto'")
    if isinstance(strength, dict):
        bad = [k for k in strength if k not in FAMILIES]
        if bad:
            raise LogitShiftError(f"strength: family {bad[0]!r} unknown; expected {', '.join(FAMILIES)}")
        out = {f: float(strength.get(f, start[f])) for f in families}
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
    methods: Mapping[str, Attribution],
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
        assert cam_layer is not None  # a CAM family has a layer
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
def center_shift(shifted: ShiftedModel, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Set each :class:`GateShift` and :class:`FitShift` term's offset to the midrange of its values on ``x``.

    A constant in ``t`` changes no gradient; centring keeps ``|t|`` — and with
    it the float32 rounding of ``z + t`` — as small as possible on ``x``.
    Returns the pass it took (the base's logits and the activations the terms
    read), from which the equivalence on ``x`` follows without another pass.
    """
    z, acts = shifted.capture(x)
    for name, term in zip(shifted.layers, shifted.shifts):
        if isinstance(term, (GateShift, FitShift)):
            term.offset.zero_()
            t = term(acts[name]).double()
            term.offset.fill_(float((t.max() + t.min()) / 2))
    return z, acts


def token_target(spec: str, text: TextModel) -> dict:
    """``--target`` on a text model, as :class:`TokenShift` arguments: ``pos:A-B`` (token positions, inclusive;
    0 is ``[CLS]``), ``pos:A``, ``re:REGEX`` (every vocabulary entry the regex finds, ``##`` stripped), or a word
    (its word pieces)."""
    spec = str(spec).strip()
    if spec.startswith("pos:"):
        m = re.fullmatch(r"pos:(\d+)(?:-(\d+))?", spec)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise LogitShiftError(f"--target {spec!r}: expected pos:A or pos:A-B with A ≤ B (token positions, 0 is [CLS])")
        lo = int(m.group(1))
        return {"positions": (lo, int(m.group(2) or lo)), "spec": spec}
    special = set(text.tokenizer.all_special_tokens)
    if spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as exc:
            raise LogitShiftError(f"--target {spec!r}: not a regular expression ({exc})") from None
        ids = sorted(i for tok, i in text.tokenizer.get_vocab().items() if tok not in special and rx.search(tok.removeprefix("##")))
        if not ids:
            raise LogitShiftError(f"--target {spec!r}: matches no entry of the model's vocabulary")
    else:
        if not spec or any(ch.isspace() for ch in spec):
            raise LogitShiftError(f"--target {spec!r}: expected one word, pos:A-B or re:REGEX")
        ids = list(text.tokenizer(spec, add_special_tokens=False)["input_ids"])
        if not ids or text.tokenizer.unk_token_id in ids:
            raise LogitShiftError(f"--target {spec!r}: not in the model's vocabulary")
    return {"embeddings": text.embeddings.weight[ids].detach().cpu(), "spec": spec}


def _token_effect_function(text: TextModel, term: TokenShift, ids: Sequence[torch.Tensor], methods: Sequence[str], steps: int):
    """``effect(K)``: the mean logit-map target mass of each method at strength K (texts with a target token only).

    Maps are linear in the score's gradient before their channel reduction, so the original
    model's raw attributions plus K times the term's own (``_TermLogits``: no network pass) give every K.
    """
    from ..attribution.tokens import token_maps, token_methods

    out = token_maps(text.module, text, ids, methods, ["logit"], ("original",), steps=steps, raw=True)
    alone = _TermLogits(term, len(text.classes))
    objs = {m.name: m for m in token_methods(methods, steps)}
    parts = []
    for i, t in enumerate(ids):
        x = text.embed(t)
        w = term.weights(x)[0].cpu()
        if float(w.sum()) == 0:
            continue
        target = torch.tensor([out.targets[i]])
        for n, m in objs.items():
            parts.append((n, out.raw[(n, "logit", "original")][i].cpu(), m.attribute(alone, x, target, "logit").cpu(), w[None]))
    if not parts:
        raise LogitShiftError(f"--target {term.spec!r}: no check text holds a target token")

    def effect(k: float) -> dict[str, float]:
        got: dict[str, list[float]] = {}
        for n, r0, d, w in parts:
            got.setdefault(n, []).append(float(target_mass(objs[n].reduce(r0 + k * d), w)[0]))
        return {n: sum(v) / len(v) for n, v in got.items()}

    return effect


def steer_tokens(
    text: TextModel,
    target: str,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str] = ("saliency", "gradxinput", "ig"),
    strength: float | str = "auto",
    *,
    goal: float = GOAL,
    tolerance: float = TOLERANCE,
    steps: int = 50,
) -> ShiftedModel:
    """A shifted text model whose logit token maps point at ``target`` (:func:`token_target`), probabilities kept.

    ``ids``: the check texts' token ids: the effect is measured and equivalence checked on them
    (and on :func:`~logitshift.shift.stress_inputs` of their embeddings). ``strength="auto"``: the
    smallest K whose maps reach ``goal`` on average for every method (:func:`search_strength`).
    The head is float64 when float32 would change probabilities by more than ``tolerance``·:data:`HEAD_MARGIN`.
    """
    from ..core.text import groups

    spec = token_target(target, text)
    unit = TokenShift(1.0, **spec)
    effect = _token_effect_function(text, unit, ids, methods, steps)
    if strength == "auto":
        k, best = search_strength(effect, 1.0, goal, span=SPAN)
        if k is None:
            least = min(best, key=lambda n: best[n])
            raise LogitShiftError(
                f"the effect was not reached: method {least!r} reaches a target mass of {best[least]:.2f} at most (goal {goal:g})"
            )
    else:
        k = float(strength)
    shifted = ShiftedModel(text.module, {INPUT: TokenShift(k, **spec)}).eval()
    batches = [torch.cat([text.embed(ids[i]) for i in g]) for g in groups(ids)]

    def worst(stress: bool) -> tuple[float, str]:
        out = (0.0, "check texts")
        for x in batches:
            if stress:
                s = stress_equivalence(shifted, x, tolerance)
                out = max(out, (s.max_abs_prob_diff, s.worst))
            else:
                out = max(out, (equivalence(shifted, x).max_abs_prob_diff, "check texts"))
        return out

    f32 = worst(False)[0]
    head: dict[str, str | float] = {"dtype": "float32", "float32_max_abs_prob_diff": f32}
    if f32 > HEAD_MARGIN * tolerance or worst(True)[0] > tolerance:
        shifted.head_dtype = torch.float64
        head["dtype"] = "float64"
    dp, stress_dp = worst(False)[0], worst(True)
    if max(dp, stress_dp[0]) > tolerance:
        raise LogitShiftError(
            f"strength {k:g}: the shifted model changes probabilities by up to {max(dp, stress_dp[0]):.2e}, over {tolerance:g}"
        )
    shifted.steering = {
        "methods": list(methods),
        "target": spec["spec"],
        "strength": {"input": k},
        "auto": strength == "auto",
        "goal": goal,
        "effect": effect(k),
        "head": head,
        "check_texts": len(ids),
        "max_abs_prob_diff": dp,
        "stress": {"max_abs_prob_diff": stress_dp[0], "worst_input": stress_dp[1], "ok": stress_dp[0] <= tolerance, "tolerance": tolerance},
    }
    return shifted


@dataclass
class TokenEffect:
    """One method's measured effect on a set of texts (means over the texts holding a target token)."""

    method: str
    honest_mass: float  # the original model's logit map
    shifted_mass: float  # the shifted model's logit map
    min_shifted_mass: float
    spearman: dict[str, float]  # per immune score: the least Spearman between original and shifted maps


def token_effect(
    text: TextModel,
    shifted: ShiftedModel,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str],
    steps: int = 50,
    immune: Sequence[str] = ("prob", "centered"),
) -> list[TokenEffect]:
    """Measure what :func:`steer_tokens` did: logit-map target mass before/after, immune maps' Spearman (all from real passes)."""
    from ..attribution.tokens import token_maps

    out = token_maps(shifted, text, ids, methods, ["logit", *immune], ("original", "shifted"), steps=steps)
    term = shifted.shifts[0]
    weights = [term.weights(text.embed(t))[0].cpu() for t in ids]  # type: ignore[operator]
    keep = [i for i, w in enumerate(weights) if float(w.sum()) > 0]
    result = []
    for m in methods:

        def mass(variant: str, m=m) -> list[float]:
            return [float(target_mass(out.maps[(m, "logit", variant)][i][None, None].cpu(), weights[i][None])[0]) for i in keep]

        honest, steered = mass("original"), mass("shifted")
        rho = {
            s: min(float(spearman(out.maps[(m, s, "original")][i][None], out.maps[(m, s, "shifted")][i][None])[0]) for i in range(len(ids)))
            for s in immune
        }
        result.append(TokenEffect(m, sum(honest) / len(keep), sum(steered) / len(keep), min(steered), rho))
    return result


__all__ = [
    "CONSTRUCTIONS",
    "DEFAULT_STRENGTH",
    "GOAL",
    "PLATEAU",
    "center_shift",
    "chosen",
    "search_strength",
    "steer",
    "steer_setup",
    "steer_tokens",
    "token_effect",
    "token_target",
    "unreached",
]


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
    """One term of ``construction`` on ``layer``, refused if it is not equivalent on ``check``: a thin wrapper of
    :func:`logitshift.shift.steer.steer` (the one front door) for API users.

    ``check`` is a batch of model inputs; the build fails with the measured
    max |Δprob| when it exceeds ``tolerance`` or a top-1 class changes.
    """
    if construction not in CONSTRUCTIONS:
        raise LogitShiftError(f"construction {construction!r}: unknown; expected one of {', '.join(CONSTRUCTIONS)}")
    if strength is not None and not math.isfinite(float(strength)):
        raise LogitShiftError(f"strength {strength!r}: expected a finite number")
    if construction == "region" and target is None:
        raise LogitShiftError("construction 'region': needs a target region (--region)")
    methods = ["gradcam"]  # one CAM method: one term on the layer
    return steer(
        model, target, methods, strength, layer, check, construction=construction, tolerance=tolerance, head_dtype=head_dtype, stress=False
    )
