"""The audit's verdict: which tests decide, the finding, and :class:`AuditResult`.

The statistics come from :mod:`logitshift.audit.measure`; what the common mode does to the maps
from :mod:`logitshift.audit.effect`. See :mod:`logitshift.audit.measure` for the tests' definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..core.capture import run_frozen
from ..core.errors import LogitShiftError
from ..core.names import DEFAULT_TOP_K  # classes explained per image by default: the top two (users explain more than the top-1)
from .effect import (
    AFFECTED,
    Effects,
    audited_methods,
)
from .measure import (
    DEFAULT_MAX_LAYERS,
    DEFAULT_PROBES,
    FRACTION_FLOOR,
    THRESHOLD,
    Context,
    HeadEvidence,
    LayerEvidence,
    candidate_layers,
    measure_batches,
)
from .outputs import output_groups
from .points import FAMILIES, method_points


def _tests(evidence: list[LayerEvidence], head: HeadEvidence | None, threshold: float) -> dict[str, dict]:
    """Each test: statistic, ratio (fires above 1), layer, and whether it decides the verdict.

    ``kappa`` (the common mode's size, plain and activation-weighted) is evidence
    only: trained classifiers can carry a large common mode honestly. ``bypass``
    and ``head`` (when a classifier input was found) prove a shift; ``effect``
    says whether the common mode changes a map beyond what an honest model shows.
    ``immune`` is the plain disagreement of the logit and centered-logit maps,
    whatever the common mode's size: evidence only (an honest model's own common
    mode moves Grad-CAM++ and early-layer maps as far as a fooling shift would:
    ``docs/audit.md``, "Why there is no --strict").
    """
    kappa = max(e.kappa_max for e in evidence)
    kappa_w = max((max(e.kappa_weighted) for e in evidence if e.kappa_weighted), default=0.0)
    at = max(evidence, key=lambda e: max(max(e.kappa), max(e.kappa_weighted, default=0.0)))
    out: dict[str, dict] = {
        "kappa": {
            "value": kappa,
            "weighted": kappa_w,
            "ratio": max(kappa, kappa_w) / threshold,
            "threshold": threshold,
            "layer": at.layer,
            "decides": False,
        }
    }
    if head is not None:
        firing = [e for e in evidence if e.bypass_ratio(threshold) > 1.0]
        # the shift reads at or after the last layer it bypasses from, and before the classifier's input
        worst = firing[-1] if firing else max(evidence, key=lambda e: e.bypass_ratio(threshold))
        out["bypass"] = {
            "value": max(worst.bypass, default=0.0),
            "kappa": max(worst.bypass_kappa, default=0.0),
            "ratio": max(e.bypass_ratio(threshold) for e in evidence),
            "layer": worst.layer,
            "tolerance": FRACTION_FLOOR,
            "decides": True,
        }
        out["head"] = {
            "value": max(head.spread) if head.spread else None,
            "kappa": max(head.kappa) if head.kappa else None,
            "ratio": head.ratio(threshold),
            "layer": head.layer,
            "tolerance": FRACTION_FLOOR,
            "decides": True,
        }
        out["feature"] = {
            "value": max(head.alone, default=0.0),
            "kappa": max(head.alone_kappa, default=0.0),
            "ratio": head.alone_ratio(threshold),
            "layer": head.layer,
            "features": head.alone_features,
            "tolerance": FRACTION_FLOOR,
            "decides": True,
        }
    effects = Effects([m for e in evidence for m in e.methods])
    worst_effect = effects.worst()
    out["effect"] = {
        "value": effects.value(),
        "structural": effects.value("structural"),
        "size": effects.value("size"),
        "ratio": effects.value() / AFFECTED,
        "layer": worst_effect.layer if worst_effect is not None else None,
        "method": worst_effect.method if worst_effect is not None else None,
        "affected_below": 1.0 - AFFECTED,
        "decides": True,
    }
    farthest = max(effects.methods, key=lambda m: max(m.immune, default=0.0), default=None)
    immune = max(farthest.immune, default=0.0) if farthest is not None else 0.0
    out["immune"] = {
        "value": immune,
        "ratio": immune / AFFECTED,
        "layer": farthest.layer if farthest is not None else None,
        "method": farthest.method if farthest is not None else None,
        "affected_below": 1.0 - AFFECTED,  # Spearman
        "decides": False,
    }
    for t in out.values():
        t["fired"] = t["ratio"] > 1.0
    return out


#: What the audit concludes, in words the user can act on; the first three exit 1.
FINDINGS = {
    "steered": "explanations steered",
    "common": "explanations driven by the common mode",
    "shifted": "shifted, explanations unaffected",
    "present": "common mode present, explanations unaffected",
    "clean": "clean",
}
#: Findings that exit 1.
FLAGGED = ("steered", "common", "shifted")


def _finding(tests: dict[str, dict]) -> str:
    """The finding from the tests: does a proven shift or an over-sized common mode change the maps?"""
    effect = tests["effect"]
    proven = any(tests[k]["fired"] for k in ("bypass", "head", "feature") if k in tests)
    if effect["structural"] >= AFFECTED or (proven and effect["size"] >= AFFECTED):
        return FINDINGS["steered"]
    if effect["size"] >= AFFECTED:
        return FINDINGS["common"]
    if proven:
        return FINDINGS["shifted"]
    if tests["kappa"]["fired"]:
        return FINDINGS["present"]
    return FINDINGS["clean"]


@dataclass
class AuditResult:
    """The verdict and the evidence behind it."""

    verdict: str  # "clean" (exit 0) or "shifted" (exit 1)
    score: float  # max(bypass ratio, head ratio, effect / AFFECTED): above 1 means shifted
    threshold: float  # κ threshold
    where: str  # the layer (or "input") that carries the deciding evidence
    classes: int  # the classes that matter (outputs never predicted left out)
    images: list[str]
    evidence: list[LayerEvidence]
    head: HeadEvidence | None = None
    finding: str = ""  # one of FINDINGS' values
    context: Context | None = None
    output: str | None = None  # which output of a model with several (None: the only one)
    groups: list[dict] = field(default_factory=list)  # every output's finding, when the model has several
    points: list[str] = field(default_factory=list)  # the method inputs added to the images (labels)

    @property
    def shifted(self) -> bool:
        return self.verdict == "shifted"

    @property
    def kappa(self) -> float:
        """Largest κ over images and layers."""
        return max(e.kappa_max for e in self.evidence)

    @property
    def bypass(self) -> float:
        """Largest bypass ratio over images and layers (0 when no classifier layer was found)."""
        return max((e.bypass_ratio(self.threshold) for e in self.evidence), default=0.0)

    @property
    def effects(self) -> Effects:
        """Every method family's effect at every audited layer."""
        return Effects([m for e in self.evidence for m in e.methods])

    def tests(self) -> dict[str, dict]:
        """Each test's statistic, its ratio to the point where it fires (1), and whether it fired."""
        return _tests(self.evidence, self.head, self.threshold)

    def sentence(self) -> str:
        """The finding in one sentence, with the numbers."""
        tests = self.tests()
        effect = tests["effect"]
        affected = self.effects.summary()
        proven = [k for k in ("bypass", "head", "feature") if tests.get(k, {}).get("fired")]
        how = (
            f" (a shift proven by the {' and '.join(proven)} test{'s' if len(proven) > 1 else ''} at {tests[proven[0]]['layer']})"
            if proven
            else ""
        )
        if self.finding == FINDINGS["steered"]:
            return f"{self.finding}{how}: the logit maps differ from the shift-immune ones beyond what an honest model shows: {affected}."
        if self.finding == FINDINGS["common"]:
            return (
                f"{self.finding}: its size is beyond what honest classes give (κ {tests['kappa']['value']:.3g}, weighted {tests['kappa']['weighted']:.3g}) "
                f"and it changes {affected}; no test of the function can tell a classifier trained into a common mode from a linear shift "
                "of its input: explain the centered logit (logitshift defend)."
            )
        if self.finding == FINDINGS["shifted"]:
            return (
                f"{self.finding}{how}: every map stays within the honest range (largest effect {effect['value']:.3f}, below {AFFECTED:g})."
            )
        if self.finding == FINDINGS["present"]:
            return (
                f"{self.finding}: κ {tests['kappa']['value']:.3g} (weighted {tests['kappa']['weighted']:.3g}) is above {self.threshold:g}, "
                f"but no map moves beyond the honest range (largest effect {effect['value']:.3f}, below {AFFECTED:g}) and no shift is proven"
                + self._differing()
                + "."
            )
        return (
            f"{self.finding}: no shift proven, κ {tests['kappa']['value']:.3g} ≤ {self.threshold:g}, largest effect on a map {effect['value']:.3f}"
            + self._differing()
            + "."
        )

    def coverage(self) -> str:
        """What the finding covers: "on 4 images (and 4 inputs explanation methods feed the model: …) for these
        methods, classes and outputs"."""
        images = len(self.images) - len(self.points)
        methods = sorted({m.method for m in self.effects.methods})
        ranks = 1 + max((m.rank for m in self.effects.methods), default=0)
        families = sorted({p.split(" · ")[-1].split()[0] for p in self.points})
        inputs = f" and {len(self.points)} inputs explanation methods feed the model ({', '.join(families)})" if self.points else ""
        output = f"; output {self.output!r} of {len(self.groups)}, each audited on its own" if self.groups else ""
        return (
            f"covers {images} image{'s' if images != 1 else ''}{inputs}, for {', '.join(methods)} at "
            f"{len(self.evidence) - 1} layer{'s' if len(self.evidence) != 2 else ''} and the input, "
            f"for the {ranks} class{'es' if ranks != 1 else ''} explained per image{output}"
        )

    def first_evidence(self) -> str:
        """The maps users explain first: Grad-CAM at the default (last audited) layer and saliency at the input, for
        the first explained class: effect and plain logit/centered-logit Spearman (worst image)."""
        parts = []
        layers = [e.layer for e in self.evidence]
        for method, layer in (("gradcam", layers[-1] if len(layers) > 1 else None), ("saliency", layers[0])):
            m = next((m for m in self.effects.methods if m.method == method and m.layer == layer and m.rank == 0), None)
            if m is not None:
                parts.append(
                    f"{m.label}: effect {m.effect:.3f}, logit vs centered-logit map Spearman {1.0 - max(m.immune, default=0.0):.2f}"
                )
        return "; ".join(parts)

    def next_step(self) -> str:
        """One line: what to do about the finding."""
        fix = "explain the centered logit (CenteredLogitTarget, logitshift defend): it is immune to any shift"
        if self.finding == FINDINGS["steered"]:
            return f"next: do not explain this model's logits; {fix}; the shift acts at {self.where}."
        if self.finding == FINDINGS["common"]:
            return f"next: {fix}; no shift is proven, so the model may be honest but trained into a common mode (Adam heads do)."
        if self.finding == FINDINGS["shifted"]:
            return f"next: the audited maps are unaffected, but a shift is proven at {self.where}: {fix}, or audit the very images you will explain."
        if self.finding == FINDINGS["present"]:
            return f"next: logit explanations can be used as they are; where they must be robust, {fix}."
        return (
            "next: nothing to do for these images; an example-based audit cannot exclude a shift triggered only by inputs "
            "unlike these, nor a shift linear in the classifier's input (W + 1uᵀ) of honest size: audit on the images you "
            f"will explain, or {fix}."
        )

    def _differing(self) -> str:
        """For a model called clean: the maps its own (honest-sized) common mode moves, so the user knows where the
        logit and the centered logit disagree."""
        effects = self.effects
        hit = effects.differing()
        if not hit:
            return ""
        return (
            f"; its own common mode moves {len(hit)} of {len(effects.methods)} maps away from the centered-logit map: "
            f"{effects.differing_summary()} (explain the centered logit with those)"
        )

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "finding": self.finding,
            "output": self.output,
            "groups": self.groups,
            "points": self.points,
            "explained": self.context.explained if self.context else [],
            "sentence": self.sentence(),
            "covers": self.coverage(),
            "first_evidence": self.first_evidence(),
            "next_step": self.next_step(),
            "score": self.score,
            "threshold": self.threshold,
            "kappa": self.kappa,
            "where": self.where,
            "classes": self.classes,
            "outputs": self.context.outputs if self.context else self.classes,
            "never_predicted": self.context.never if self.context else [],
            "passed_over": self.context.passed_over if self.context else [],
            "classifier": self.head.to_json() if self.head is not None else None,
            "tests": self.tests(),
            "images": self.images[: len(self.images) - len(self.points)],  # the audited images; their method inputs in "points"
            "evidence": [
                {
                    **{k: v for k, v in asdict(e).items() if k != "methods"},
                    "kappa_max": e.kappa_max,
                    "disagreement_max": max(e.disagreement),
                    "bypass_max": max(e.bypass, default=None),
                }
                for e in self.evidence
            ],
            "effects": self.effects.to_json(),
        }


def audit_model(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    threshold: float = THRESHOLD,
    probes: int = DEFAULT_PROBES,
    max_layers: int = DEFAULT_MAX_LAYERS,
    image_names: Sequence[str] | None = None,
    seed: int = 0,
    require_spatial: bool = True,
    progress: bool = False,
    methods: Sequence[str] | None = None,
    explain: int | torch.Tensor = DEFAULT_TOP_K,
    points: Sequence[str] = FAMILIES,
) -> AuditResult:
    """Audit ``model`` on the batch ``x``: finding, verdict, score and per-layer evidence.

    ``score = max(bypass ratio, head ratio, feature ratio, effect / AFFECTED)``; above 1 the
    verdict is ``shifted`` (exit 1). ``finding`` says what for: explanations
    steered, driven by the common mode, or a shift that leaves them unaffected;
    at most 1 it is ``clean`` or "common mode present, explanations unaffected".

    What is examined is what users explain:

    * ``explain``: the classes whose maps are measured: an int ``k`` (default 2), the top-k classes of each
      image; or an N×k tensor of class indices (``--class``, ``--labels``). Every class that matters still enters
      the statistics (the common mode, the probes).
    * ``points``: the method families whose own inputs are added to the images (:mod:`logitshift.audit.points`:
      Integrated Gradients' path points, SmoothGrad's noisy copies, occlusion's and Score-CAM's masked images);
      every test and map is taken there too. ``()``: the images only.
    * a model with several outputs (a tuple or dict of N×C tensors, :func:`~logitshift.audit.outputs.output_groups`)
      has each softmax group audited on its own; the result is the worst group's, with every group's finding in
      ``groups``.

    ``methods``: only these families' maps count for the effect (:func:`logitshift.audit.effect.audited_methods`;
    default all): the methods the user explains with. The structural tests do not depend on it.

    >>> result = audit_model(model, x)        # x: a few preprocessed images
    >>> result.finding, result.score, result.where   # e.g. ('clean', 0.2, 'blocks.4._project_conv')
    """
    if layers is None:
        layers = candidate_layers(model, x, max_layers)
        if not layers and require_spatial:
            raise LogitShiftError(
                f"model {type(model).__name__!r}: no layer outputs a spatial feature map (N×C×H×W); the audit needs a convolutional classifier"
            )
    chosen = check_methods(methods)
    names = list(image_names) if image_names is not None else [str(i) for i in range(len(x))]
    pts = method_points(model, x, layers[-1] if layers else None, seed, points)
    x_all = torch.cat([x, pts.x.to(x.device, x.dtype)]) if len(pts) else x
    source = torch.cat([torch.arange(len(x)), torch.tensor(pts.source, dtype=torch.long)])
    rows = names + [f"{names[i]} · {label}" for i, label in zip(pts.source, pts.labels)]
    with torch.no_grad():
        keys = output_groups(run_frozen(model, x[:1]))
    results = []
    for key in keys:
        evidence, head, context = measure_batches(
            model, x_all, list(layers), probes, seed, progress, threshold, explain=explain, source=source, output=key
        )
        for e in evidence:  # every family's maps are cheap next to the backward passes: measured, then set aside
            e.methods = [m for m in e.methods if m.method in chosen]
        results.append(_result(evidence, head, context, threshold, rows, key))
    worst = max(results, key=lambda r: (r.shifted, r.score))
    if len(results) > 1:
        worst.groups = [{"output": r.output, "finding": r.finding, "score": r.score} for r in results]
    worst.points = rows[len(names) :]  # "<image> · <method input>", the rows after the images
    return worst


def _result(evidence, head, context, threshold: float, rows: list[str], output: object) -> AuditResult:
    tests = _tests(evidence, head, threshold)
    deciding = max((k for k in tests if tests[k]["decides"]), key=lambda k: tests[k]["ratio"])
    finding = _finding(tests)
    return AuditResult(
        verdict="shifted" if finding in (FINDINGS[k] for k in FLAGGED) else "clean",
        score=tests[deciding]["ratio"],
        threshold=threshold,
        where=tests[deciding].get("layer") or tests["kappa"]["layer"],
        classes=evidence[0].classes,
        images=rows,
        evidence=evidence,
        head=head,
        finding=finding,
        context=context,
        output=None if output is None else str(output),
    )


def check_methods(methods: Sequence[str] | None) -> set[str]:
    """The audited method families to count (all when None); an unknown name is refused in one line."""
    known = audited_methods()
    if methods is None:
        return set(known)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise LogitShiftError(f"--methods {' '.join(unknown or methods)!s}: the audit measures {', '.join(known)}")
    return set(methods)
