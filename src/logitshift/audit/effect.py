"""Does the common mode change what a user sees? The audit's effect statistics.

A shift ``z' = z + t(x)·1`` adds ``∇t`` to the gradient of every logit and
nothing to the centered logit ``z_c − mean_R z`` (``R``: the classes that
matter, below). So the question a user has, "do my logit explanations differ
from the shift-immune ones?", is a comparison of two maps of one method: the
map of ``g_c = ∇z_c`` and the map of ``u_c = g_c − m`` with ``m = ∇ mean_R z``
the common mode. An honest model has a common mode too, so the comparison is
made against what an honest model can show, in two ways:

* **structural effect**: ``1 − Spearman(map(g_c), map(g_c − s/|R|))`` with
  ``s`` the part of the common-mode gradient that the bypass and head tests
  prove is a shift (the part that goes around the classifier's input, and the
  pull-back of the classifier's common-mode row's deviation from image to
  image, counted only where those tests fire). An honest model with a linear
  classifier has ``s = 0`` exactly, so this effect is exactly 0 without a
  shift, and it grows with the shift.
* **size effect**: ``1 − Spearman(map(u_c + m), map(u_c + λ·m))`` with
  ``λ = min(1, b / ‖m ⊙ A‖)``: the logit map against the map whose common mode
  is held to the largest size an honest model shows. The honest bound is
  derived, not tuned: if the class rows of the Jacobian were exchangeable (no
  direction shared by all classes), ``E‖Σ_R g_j‖² = |R|/(|R|−1)·E‖P G‖_F²``
  (``κ = 1``, see :mod:`logitshift.audit.measure`); the bound is the audit's κ
  threshold times that, measured where CAMs read the gradient, weighted by the
  activation: ``b = THRESHOLD · sqrt(|R|/(|R|−1) · E‖(vᵀPG) ⊙ A‖²) / |R|``
  (random centered probes ``v``, as for κ). Below the bound ``λ = 1`` and the
  two maps are the same map: the effect is exactly 0. A map that changes
  (Spearman < 0.9) when the held common mode changes by a tenth
  (:data:`STABILITY`) is unstable there, whatever the model: its size effect
  is not counted (``unstable``). Grad-CAM++ at early layers is: its weights
  are ratios of powers of the gradient.

The activation weighting matters: CAMs weight gradients by activations, so a
shift carried by channels with a very large activation and a very small
gradient moves every CAM while the gradient's size stays honest. ``‖g ⊙ A‖``
is unchanged when an activation is scaled up by ``M`` and its gradient down by
``M``; at the input the plain gradient is used.

Families: every CAM method of :mod:`logitshift.attribution` (Grad-CAM,
Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM) at every audited layer, and
saliency and gradient × input at the input (Integrated Gradients and
SmoothGrad average gradients at other inputs and are not re-run here).

**Classes that matter.** An output whose probability stays below
:data:`NEVER` on every audited image can be given any gradient (and any
input-dependent value below that probability) without moving a probability by
more than that: one such output with a large gradient would inflate the class
spread that every ratio is taken against, or enter the centering. Such outputs
are left out of the common mode, the centering and the probes, and listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..core.capture import INPUT

#: Effect (1 − Spearman) from which a map counts as changed: the benchmark's "changes a map" (Spearman < 0.9).
AFFECTED = 0.1
#: Relative change of an honest-size common mode under which a map must stay put (Spearman ≥ 0.9) for its size
#: effect to count: a map that moves under that much is unstable there (Grad-CAM++ at early layers), not steered.
STABILITY = 0.1
#: Methods whose size effect is never counted: Grad-CAM++'s weights are ratios of powers of the gradient, and its
#: maps move under changes of the common mode far smaller than the honest bound (measured: a 0.3 % change moves its
#: map on a random CNN to Spearman 0.59; the honest trained digits CNN's logit and centered maps have Spearman −0.86).
#: Its structural effect (a proven shift removed exactly) still counts.
UNSTABLE = frozenset({"gradcampp"})
#: Spearman below which a map counts as fooled (the issue's and the benchmark's definition).
FOOLED = 0.5
#: Probability an output must reach on some audited image to count (the benchmark's attack budget, max |Δp| ≤ 1e-5).
NEVER = 1e-5


def classes_that_matter(probs: torch.Tensor, floor: float = NEVER) -> torch.Tensor:
    """Boolean mask over the C outputs: probability ≥ ``floor`` on some image, or top-1 of some image.

    At least two outputs are kept (the two most probable, if need be), so a
    centering exists."""
    p = probs.detach().double()
    keep = p.max(dim=0).values >= floor
    keep[p.argmax(dim=1)] = True
    if int(keep.sum()) < 2:
        keep[p.max(dim=0).values.topk(2).indices] = True
    return keep


def methods_at(layer: str, act: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Map functions ``gradient → N×H×W map`` of the method families audited at ``layer``.

    ``act`` is the layer's activation (for :data:`INPUT`, the input image)."""
    from ..attribution import METHODS, CamMethod, GradientXInput, Saliency

    if layer == INPUT:
        return {"saliency": Saliency().reduce, "gradxinput": lambda g: GradientXInput().reduce(act * g)}

    def combiner(method: CamMethod) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda g: method.combine(act, g)

    return {name: combiner(cls()) for name, cls in METHODS.items() if issubclass(cls, CamMethod)}


def audited_methods() -> tuple[str, ...]:
    """Names of the method families the audit measures: every CAM method, then saliency and gradient × input."""
    from ..core.names import AUDITED_NAMES

    return AUDITED_NAMES


def weighted(g: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
    """``g ⊙ A`` (a layer) or ``g`` (the input, ``act=None``): where a CAM reads the gradient."""
    return g if act is None else g * act


def norms(g: torch.Tensor) -> torch.Tensor:
    return g.detach().double().flatten(1).norm(dim=1)


@dataclass
class MethodEffect:
    """One method family at one layer: how much the common mode changes its maps, per image."""

    method: str
    layer: str
    immune: list[float]  # 1 − Spearman(logit map, centered-logit map): the plain disagreement
    structural: list[float]  # 1 − Spearman(logit map, map without the part a structural test proves is a shift)
    size: list[float]  # 1 − Spearman(logit map, map with the common mode held to the honest bound); 0 where unstable
    unstable: list[bool] = field(default_factory=list)  # the held map itself moves under a 10 % change of its common mode
    rank: int = 0  # which explained class: 0 the first (top-1 by default), 1 the second, …

    @property
    def label(self) -> str:
        """``gradcam at layer4`` for the first explained class, ``gradcam at layer4 (2nd class)`` for the others."""
        return f"{self.method} at {self.layer}" + ("" if self.rank == 0 else f" ({_ordinal(self.rank + 1)} class)")

    @property
    def effect(self) -> float:
        """The largest of the structural and size effects over the images (0 = unaffected)."""
        return max(self.structural + self.size, default=0.0)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _disagreement(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """``1 − Spearman`` per image, exactly 0 where the two maps are the same tensor values."""
    from ..core.metrics import spearman

    out = []
    for i in range(len(a)):
        if torch.equal(a[i], b[i]):
            out.append(0.0)
        else:
            out.append(1.0 - float(spearman(a[i : i + 1], b[i : i + 1])[0]))
    return out


def layer_effects(
    layer: str,
    act: torch.Tensor,
    g_top: torch.Tensor,
    common: torch.Tensor,
    proven: torch.Tensor | None,
    bound: torch.Tensor,
    rank: int = 0,
) -> list[MethodEffect]:
    """Effects of every method family at ``layer`` (see the module docstring).

    ``g_top``: gradient of the top-1 logit; ``common``: ``m = ∇ mean_R z``;
    ``proven``: the part of ``m`` a structural test proves is a shift (per
    class: ``s/|R|``), or None; ``bound``: the honest bound on ``‖m ⊙ A‖`` per
    image (``‖m‖`` at the input). Maps are only compared where they can
    differ: without a proven part and within the bound both effects are 0 by
    construction (the same map), so an honest model costs two maps per method:
    its logit map and its centered-logit map (the plain disagreement,
    ``immune``: what the common mode, honest or not, does to each method)."""
    g_top, common = g_top.detach(), common.detach()
    centered = g_top - common
    size = norms(weighted(common, None if layer == INPUT else act))
    lam = torch.where(size > bound, bound / size.clamp_min(1e-300), torch.ones_like(size))
    held_needed = bool((lam < 1).any())
    lam_ = lam.to(g_top.dtype).view(-1, *([1] * (g_top.dim() - 1)))
    held = torch.where(lam_ < 1, centered + lam_ * common, g_top)
    nudged = torch.where(lam_ < 1, centered + (1.0 - STABILITY) * lam_ * common, g_top)
    without = None if proven is None else g_top - proven.detach()
    zeros = [0.0] * len(g_top)
    out = []
    for name, fn in methods_at(layer, act.detach()).items():
        logit = fn(g_top)
        size_effect, unstable = zeros, [False] * len(g_top)
        if held_needed and name in UNSTABLE:
            unstable = [True] * len(g_top)
        elif held_needed:
            held_map = fn(held)
            unstable = [d >= AFFECTED for d in _disagreement(held_map, fn(nudged))]
            size_effect = [0.0 if u else d for d, u in zip(_disagreement(logit, held_map), unstable)]
        out.append(
            MethodEffect(
                method=name,
                layer=layer,
                immune=_disagreement(logit, fn(centered)),
                structural=_disagreement(logit, fn(without)) if without is not None else zeros,
                size=size_effect,
                unstable=unstable,
                rank=rank,
            )
        )
    return out


def honest_bound(weighted_frob: torch.Tensor, classes: int, threshold: float) -> torch.Tensor:
    """``threshold · sqrt(R/(R−1) · E‖(vᵀPG) ⊙ A‖²) / R``: the largest ``‖m ⊙ A‖`` counted honest, per image."""
    return threshold * torch.sqrt(weighted_frob * classes / (classes - 1)) / classes


@dataclass
class Effects:
    """Every method family's effect at every audited layer, and the summary the verdict reads."""

    methods: list[MethodEffect] = field(default_factory=list)

    def worst(self, kind: str = "effect") -> MethodEffect | None:
        key = {
            "effect": lambda m: m.effect,
            "structural": lambda m: max(m.structural, default=0.0),
            "size": lambda m: max(m.size, default=0.0),
        }[kind]
        return max(self.methods, key=key, default=None)

    def value(self, kind: str = "effect") -> float:
        m = self.worst(kind)
        if m is None:
            return 0.0
        return {"effect": m.effect, "structural": max(m.structural, default=0.0), "size": max(m.size, default=0.0)}[kind]

    def affected(self, kind: str = "effect") -> list[MethodEffect]:
        """Method families (at a layer) whose maps change by at least :data:`AFFECTED` on some image."""
        get = {
            "effect": lambda m: m.effect,
            "structural": lambda m: max(m.structural, default=0.0),
            "size": lambda m: max(m.size, default=0.0),
        }[kind]
        return [m for m in self.methods if get(m) >= AFFECTED]

    def summary(self, limit: int = 4) -> str:
        """``gradcam at blocks.10: Spearman 0.12 (logit map vs immune map); saliency at input: 0.45 …``, the worst first."""
        hit = sorted(self.affected(), key=lambda m: -m.effect)
        parts = [f"{m.label} (Spearman {1.0 - m.effect:.2f})" for m in hit[:limit]]
        more = len(hit) - limit
        return ", ".join(parts) + (f" and {more} more" if more > 0 else "")

    def differing(self, beyond: float = AFFECTED) -> list[MethodEffect]:
        """Method families (at a layer) whose logit map differs from the centered-logit map (by ``1 − Spearman ≥
        beyond``: Spearman < 0.9 by default) on some image: what the common mode, honest or not, does to each method
        (``immune``), the worst first."""
        hit = [m for m in self.methods if max(m.immune, default=0.0) >= beyond]
        return sorted(hit, key=lambda m: -max(m.immune))

    def differing_summary(self, limit: int = 3, beyond: float = AFFECTED) -> str:
        """``gradcam at stem (Spearman −0.01), …``: the logit maps farthest from their centered-logit maps."""
        hit = self.differing(beyond)
        parts = [f"{m.label} (Spearman {1.0 - max(m.immune):.2f})" for m in hit[:limit]]
        more = len(hit) - limit
        return ", ".join(parts) + (f" and {more} more" if more > 0 else "")

    def to_json(self) -> list[dict]:
        from dataclasses import asdict

        return [{**asdict(m), "effect": m.effect} for m in self.methods]


def finite(v: float) -> float:
    return v if math.isfinite(v) else 0.0
