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
  (:data:`~logitshift.shift.plan.SIGNED_UNAIMED`): their effect is measured and reported
  (``steering.effect``), and the automatic strength does not wait for it
  (a region-contrast term moved them to 0.33 / 0.12 on a random-weight
  ``vit_b_16``, not to the goal);
* gradient family (saliency, gradient × input, Integrated Gradients,
  SmoothGrad): an :class:`~logitshift.shift.model.InputShift` on the input pixels.

The terms add up, ``t = t_cam(A) + t_input(x)``; the input term does not touch
the layer's gradient, and the CAM term's small effect on input gradients is
measured when the input term's strength is chosen after it.

Four steps, each in its module: plan (:mod:`logitshift.shift.plan`: methods, layers,
target, every refusal), search (:mod:`logitshift.shift.search`: the strengths), build
(:meth:`~logitshift.shift.plan.Plan.build`: the terms) and check (:func:`check_equivalence`).

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
    >>> shifted.steering.strength           # {'cam': ..., 'input': ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import LogitShiftError
from ..core.images import Item
from ..core.models import LoadedModel, get_layer, load_model
from ..core.targets import Target
from .model import (
    CONSTRUCTIONS,
    TOLERANCE,
    Equivalence,
    FitShift,
    GateShift,
    ShiftedModel,
    ShiftSetup,
    Stress,
    compare,
    stress_equivalence,
)
from .model import DEFAULT_STRENGTH as SHIFT_STRENGTH
from .plan import FAMILIES, plan
from .search import search
from .steering import Head, Steering

GOAL = 0.5
#: the auto head stays float32 while it changes probabilities on the check images by at most this share of the tolerance
#: (room for images outside the check set); above it the shift is added in float64
HEAD_MARGIN = 0.1
#: how far the commands' automatic strength goes from the goal toward the effect's plateau (see ``plateau``)
PLATEAU = 0.9


def steer(
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
    equivalence is checked and the effect measured (refused when the model's
    logits there are not finite or do not vary:
    :func:`~logitshift.core.models.check_outputs`). ``head_dtype="auto"``:
    a float64 head when the float32 one changes probabilities on the check
    images by more than ``tolerance``·:data:`HEAD_MARGIN`, or on the stress
    inputs by more than ``tolerance``. ``measure``: also
    measure the effect at a given (not auto) strength. ``stress``: check
    equivalence beyond the check images too. The result carries
    ``.steering``, a :class:`~logitshift.shift.steering.Steering` of what was built and measured
    (``reached``: every steered method met ``goal``; see :func:`unreached`).

    Four steps: :func:`~logitshift.shift.plan.plan` (methods, layers, target; every refusal),
    :func:`~logitshift.shift.search.search` (the strengths and their effect), :meth:`Plan.build`
    (the terms) and :func:`check_equivalence` (the head's dtype, equivalence on and beyond ``check``).
    """
    p = plan(model, target, methods, layer, check, construction, shift_layer, method_options)
    strengths = _initial_strengths(strength, p.families, p.start)
    auto = strength == "auto"
    if auto and check is None:
        raise LogitShiftError("strength 'auto': needs check images to measure the effect on")
    wide = head_dtype if isinstance(head_dtype, torch.dtype) else None
    if isinstance(head_dtype, str) and head_dtype != "auto":
        raise LogitShiftError(f"head dtype {head_dtype!r}: expected a torch dtype, None or 'auto'")
    effects: dict[str, float] = {}
    if check is not None and (auto or measure):
        strengths, effects = search(p, check, strengths, auto, goal, plateau, wide, progress)
    shifted = p.build(strengths, wide)
    head = Head(dtype=str(shifted.head_dtype or "float32").replace("torch.", ""), auto=head_dtype == "auto")
    result = None
    if check is not None:
        result = check_equivalence(shifted, check, tolerance, head, stress, f"strength {_fmt(strengths)}")
    shifted.steering = Steering(
        methods=p.names,
        construction=construction,
        families=p.families,
        layer=p.cam_layer,
        shift_layer=p.term_layer,
        cam_term=p.cam_term,
        target=p.target.spec,
        strength=dict(strengths),
        auto=auto,
        goal=goal,
        plateau=plateau if auto else None,
        effect=effects,
        steered=list(p.steered),
        reached=all(effects.get(n, 0.0) >= goal for n in p.steered) if effects else None,
        head=head,
        check_images=int(check.shape[0]) if check is not None else 0,
        stress=result.to_json() if result is not None else None,
    )
    return shifted


def check_equivalence(shifted: ShiftedModel, check: torch.Tensor, tolerance: float, head: Head, stress: bool, what: str) -> Stress | None:
    """Centre the terms on ``check``, then refuse the build unless max |Δprob| ≤ ``tolerance`` and top-1 holds there.

    With ``head.auto`` the head turns float64 when float32 changes probabilities on ``check`` by more than
    ``tolerance``·:data:`HEAD_MARGIN` (or a top-1 class), or on the stress inputs by more than ``tolerance``
    (``head`` records the float32 figures and the dtype chosen). ``stress``: the equivalence beyond ``check``
    (:func:`~logitshift.shift.model.stress_equivalence`), returned; else None. ``what``: the strength, for the refusal.
    """
    z, acts = center_shift(shifted, check)  # one pass of the check images serves the centring and the equivalence

    def measured() -> Equivalence:
        with torch.no_grad():
            return compare(z, shifted.shifted_logits(z, acts))

    eq = measured()
    if head.auto:
        head.float32_max_abs_prob_diff = eq.max_abs_prob_diff
        if eq.max_abs_prob_diff > HEAD_MARGIN * tolerance or eq.top1_agree < 1.0:
            shifted.head_dtype = torch.float64
            head.dtype = "float64"
            eq = measured()
    if not eq.ok(tolerance):
        remedy = "use a smaller strength" + ("" if shifted.head_dtype == torch.float64 else " or a float64 head (--float64-head)")
        raise LogitShiftError(eq.refusal(what, tolerance, remedy))
    if not stress:
        return None
    result = stress_equivalence(shifted, check, tolerance)
    if head.auto and not result.ok and shifted.head_dtype != torch.float64:
        # the check images pass in float32 but a scaled or noisy input does not: the wider head for those too
        head.float32_stress_max_abs_prob_diff = result.max_abs_prob_diff
        shifted.head_dtype = torch.float64
        head.dtype = "float64"
        result = stress_equivalence(shifted, check, tolerance)
    return result


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

    loaded = load_model(
        setup.model, setup.weights, num_classes=setup.num_classes, class_names=setup.class_names, random_weights=setup.random_weights
    )
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
    assert shifted.steering is not None  # set by steer()
    line = unreached(shifted.steering)
    if line is not None:
        raise LogitShiftError(line)
    return shifted


def chosen(steering: Steering | dict) -> str:
    """What :func:`steer` chose, in words: construction, strength (and how), head, the effect on the check images."""
    st = steering if isinstance(steering, Steering) else Steering.from_json(steering, "steering")
    ks = _fmt(st.strength)
    how = f"auto: {st.plateau:g} of the way to the plateau" if st.auto and st.plateau else "auto"
    wide = st.head.dtype == "float64"
    f32 = st.head.float32_max_abs_prob_diff
    head_text = f"{'float64' if wide else 'float32'} head" + (
        f" (auto: float32 changed probabilities by {f32:.1e})" if st.head.auto and f32 is not None else ""
    )
    effect = ", ".join(f"{n} {v:.2f}" for n, v in st.effect.items())
    term = st.cam_term or ""
    what = f"{st.construction} shift" + (", fit CAM term (signed map)" if term.startswith("fit") else "")
    return f"{what}, strength {ks}{f' ({how})' if st.auto else ''}, {head_text}" + (
        f"; target mass on the {st.check_images} check images: {effect}" if effect else ""
    )


def unreached(steering: Steering) -> str | None:
    """The one line that says a measured effect fell short of the goal (``None`` when it was reached or not measured).

    The paper construction is exempt: its point is a class-agnostic map, not a target (its corner is one cell).
    """
    if steering.construction == "paper" or steering.reached is not False:
        return None
    effects, goal = steering.effect, steering.goal
    short = {n: effects.get(n, 0.0) for n in steering.steered if effects.get(n, 0.0) < goal}
    worst = min(short, key=lambda n: short[n])
    k = _fmt(steering.strength)
    remedy = "--strength auto" if steering.construction == "gate" else "--construction gate (works on every architecture)"
    return (
        f"the effect was not reached: at strength {k} the {steering.construction} shift puts {short[worst]:.2f} of method "
        f"{worst!r}'s logit map in the target {steering.target!r} on the {steering.check_images} check images "
        f"(goal {goal:g}); try {remedy}, or --goal 0 to measure it as it is"
    )


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


__all__ = [
    "CONSTRUCTIONS",
    "GOAL",
    "PLATEAU",
    "center_shift",
    "chosen",
    "steer",
    "steer_setup",
    "unreached",
]
