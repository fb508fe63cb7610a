"""``logitshift audit``: has this model been logit-shifted?

A shifted model outputs ``z' = z + t(x)·1``. Its probabilities are those of an
honest model, so no output test can see ``t``; its gradients can. Write
``G`` for the Jacobian of the C logits with respect to an activation ``A``
(or the input), ``g_j = ∇z_j`` its rows. The shift adds ``∇t`` to every row,
hence ``C·∇t`` to the gradient of the logit sum ``Σ_j z_j``, and nothing to
any logit difference (``P G``, with ``P = I − 11ᵀ/C`` the centering).

The audit's statistic compares the common-mode gradient with the spread of
the class gradients, at each candidate layer and at the input::

    κ = ‖Σ_j g_j‖ / sqrt( C/(C−1) · ‖P G‖_F² )

Calibration. If the C rows ``g_j`` were exchangeable and independent (a
classifier whose classes share no common direction), ``E‖Σ_j g_j‖² = C·tr Σ``
and ``E‖PG‖_F² = (C−1)·tr Σ``, so ``κ ≈ 1``. Trained classifiers sit below
that: cross-entropy's gradient with respect to the last layer's weights has
rows summing to zero (``Σ_j (p_j − y_j) = 0``), so training never grows the
common-mode direction of the classifier, and weight decay shrinks it.
A fooling shift needs ``‖∇t‖`` comparable to a class gradient
``‖g_c − ḡ‖ ≈ ‖PG‖_F/√C``, which makes ``κ ≈ √C·‖∇t‖/‖g_c − ḡ‖ ≫ 1``.
``‖P G‖_F²`` is estimated without C backward passes (Hutchinson): for
``v ~ N(0, I_C)``, ``E‖Gᵀ P v‖² = ‖P G‖_F²``, one backward pass per probe.

κ is statistical: it needs the shift to be comparable with a class
gradient. Two structural tests find shifts of any size, because an honest
classifier passes them exactly (to floating-point round-off):

* **bypass**: the logits of an honest model depend on the input only through
  the input ``h`` of its classifier layer (the last 2-D module input that
  carries every centered gradient, see :func:`measure`), so every gradient at an earlier layer ``L`` is
  the gradient at ``h`` pulled back through ``∂h/∂A_L``. A shift that reads
  ``L`` (or anything between ``L`` and ``h``) reaches the logits around ``h``:
  the common-mode gradient at ``L`` gains a part ``C·∇t`` that the pull-back
  does not give, while the centered gradients (which a shift cannot touch
  without changing the probabilities) still pull back exactly. Evidence is
  ``min(β / FRACTION_FLOOR, κ_bypass / THRESHOLD)``, with ``β`` the fraction of the
  common-mode gradient that bypasses ``h`` and ``κ_bypass`` the κ of that
  part against the centered gradients' part (both 0 for an honest model
  whose classifier input is a cut of its graph; a class-specific skip
  around ``h`` moves the centered gradients as much, so κ_bypass stays ≈ 1).
* **head**: an honest linear classifier has the same gradient
  ``∂z/∂h = W`` on every image. A shift that is a function of ``h`` or of the
  logits themselves (``t = K·mean z²``) makes the common-mode row of that
  Jacobian vary from image to image while the centered rows stay constant.
  Evidence is ``min(spread / FRACTION_FLOOR, κ_head / THRESHOLD)`` over the
  images' deviations from the batch mean.

What a user asks is whether the explanations change: :mod:`logitshift.audit.effect`
measures, for every method family at every audited layer, how far the logit
map is from the map without the part of the common mode a structural test
proves is a shift (exactly 0 for an honest model), and from the map whose
common mode is held to the largest size honest classes give (exactly 0
below it). The score is ``max(bypass, head, effect / AFFECTED)``: above 1 the
verdict is ``shifted`` (exit 1), and the finding says which: explanations
steered, driven by the common mode, or a shift that leaves them unaffected.
κ (plain and activation-weighted) is evidence only. Statistics are over the
classes that matter (outputs never above probability 1e-5 are left out), and
the cut is never an N×C tensor. Cost: one forward pass, ``2 + probes``
backward passes, and ``1 + probes`` pull-backs from ``h`` (one more when the
head test fires); maps only where they can differ. The one shift no gradient test can single out is a linear
function of ``h`` (``W + 1aᵀ`` as the classifier weights): that *is* an honest
linear classifier, and only its size (κ) gives it away (``docs/audit.md``).
Every honest model is such a shift of its own centered twin, so no audit can
both pass every honest model and flag every shift that fools a map:
``strict=True`` (``--strict``) takes the other side, and exits 1 whenever a
logit map differs from its centered-logit map (``immune``), honest or not.
The report also gives, per layer, the disagreement
``1 − Spearman`` between the Grad-CAM map of the top-1 logit and of the
centered logit ``z_c − mean_j z_j`` (saliency maps at the input): that is how
much the common mode changes what a user would see.

Example::

    $ logitshift audit resnet18 --weights resnet18.pth --out runs/audit
    $ echo $?        # 0 clean, 1 shifted, 2 error
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn

from ..core.capture import INPUT, gridded, hooked, run_frozen, trace
from ..core.errors import LogitShiftError
from ..core.names import (  # noqa: F401  their home is core/names.py (shown by --help before torch loads)
    DEFAULT_CPU_SECONDS,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_LAYERS,
    DEFAULT_MEMORY_GB,
    DEFAULT_PROBES,
    THRESHOLD,
)
from .effect import (
    MethodEffect,
    classes_that_matter,
    honest_bound,
    layer_effects,
    weighted,
)
from .outputs import explained_classes, select_output

#: Smallest bypass / head fraction counted as evidence (honest models: round-off, ≤ 1e-6 measured).
FRACTION_FLOOR = 1e-4
#: 2-D module inputs tried, from the last, as the classifier's input.
MAX_HEADS = 8


# ----------------------------------------------------------------------------- candidate layers


def candidate_layers(model: nn.Module, x: torch.Tensor, max_layers: int = DEFAULT_MAX_LAYERS) -> list[str]:
    """Spatial layers of ``model`` (outputs N×C×H×W, H·W > 1, that depend on the input), one name per distinct tensor.

    Modules that return the same tensor (a ``Sequential`` and its last child)
    are named once, by the outermost. At most ``max_layers`` are kept, evenly
    spaced in execution order, always including the last one.
    """
    seen: dict[int, str] = {}  # distinct output tensor → its outermost name, in the order first seen
    for out in trace(model, x[:1]):
        # a 4-D output that depends on the input (not, say, a position-bias table computed from buffers)
        if out.spatial and out.varies and (out.tensor not in seen or out.depth < seen[out.tensor].count(".")):
            seen[out.tensor] = out.name
    order = list(seen)
    names = [seen[k] for k in order]
    if len(names) > max_layers:
        picks = np.unique(np.round(np.linspace(0, len(names) - 1, max_layers)).astype(int))
        names = [names[i] for i in picks]
    return names


# ----------------------------------------------------------------------------- evidence


@dataclass
class LayerEvidence:
    """The audit's measurements at one layer (or at the input)."""

    layer: str
    shape: list[int]
    kappa: list[float]  # per image
    common_norm: list[float]  # ‖∇ mean_j z_j‖ per image
    class_norm: list[float]  # ‖∇(z_c − mean_j z_j)‖, c = top-1, per image
    disagreement: list[float]  # 1 − Spearman(map of z_c, map of z_c − mean z), per image
    cells: list[list[float]] = field(default_factory=list)  # per-cell κ, mean over images (H×W)
    classes: int = 0
    bypass: list[float] = field(default_factory=list)  # β: common-mode fraction not pulled back from the classifier input, per image
    bypass_kappa: list[float] = field(default_factory=list)  # κ of the part that bypasses it, per image
    bypass_centered: list[float] = field(default_factory=list)  # fraction of the centered gradients that bypasses it (0 for a cut)
    kappa_weighted: list[float] = field(default_factory=list)  # κ of the activation-weighted gradient g ⊙ A (where CAMs read it), per image
    methods: list[MethodEffect] = field(default_factory=list)  # each method family's effect at this layer (logitshift.audit.effect)

    @property
    def kappa_max(self) -> float:
        return max(self.kappa)

    def bypass_ratio(self, threshold: float = THRESHOLD) -> float:
        """Largest ``min(β / FRACTION_FLOOR, κ_bypass / threshold)`` over images (0 without a classifier layer)."""
        return max((_evidence_ratio(b, k, threshold) for b, k in zip(self.bypass, self.bypass_kappa)), default=0.0)


def _evidence_ratio(fraction: float, kappa: float, threshold: float) -> float:
    """Structural evidence: above 1 when a common-mode part stands above round-off *and* above the classes' spread."""
    return min(fraction / FRACTION_FLOOR, kappa / threshold)


@dataclass
class Context:
    """What the audit left out, and why: outputs never predicted, modules passed over as the classifier."""

    outputs: int  # C, every output of the model
    never: list[int]  # outputs whose probability stays below logitshift.audit.effect.NEVER on every image
    passed_over: list[str]  # modules whose input is N×C (logits or a function of them): never the cut
    explained: list[list[int]] = field(default_factory=list)  # the classes whose maps were measured, per row


@dataclass
class HeadEvidence:
    """Gradients at the classifier's input ``h``: the cut the bypass test pulls back from."""

    layer: str  # the classifier module whose input is h
    width: int  # entries of h
    spread: list[float]  # ‖∇_h Σz (image n) − its mean over images‖ / ‖mean‖, per image (empty for one image)
    kappa: list[float]  # κ of those deviations against the centered rows' deviations, per image
    common_rows: torch.Tensor | None = field(default=None, repr=False)  # ∇_h Σz, N×width (to merge batches)
    probe_rows: torch.Tensor | None = field(default=None, repr=False)  # ∇_h vᵀz per probe, probes×N×width
    alone: list[float] = field(default_factory=list)  # fraction of ∇_h Σz on features no class reads, per image
    alone_kappa: list[float] = field(default_factory=list)  # κ of that part against those features' centered spread
    alone_features: list[int] = field(default_factory=list)  # the features of h read by the common mode alone
    classes: int = 2  # the classes that matter (R)

    def ratio(self, threshold: float = THRESHOLD) -> float:
        return max((_evidence_ratio(f, k, threshold) for f, k in zip(self.spread, self.kappa)), default=0.0)

    def alone_ratio(self, threshold: float = THRESHOLD) -> float:
        """Largest ``min(fraction / FRACTION_FLOOR, κ / threshold)`` of the common-mode part on features no class reads."""
        return max((_evidence_ratio(f, k, threshold) for f, k in zip(self.alone, self.alone_kappa)), default=0.0)

    def alone_mask(self) -> torch.Tensor | None:
        """N×width mask of the features read by the common mode alone (None without rows)."""
        if self.common_rows is None or self.probe_rows is None:
            return None
        spread = self.probe_rows.pow(2).mean(dim=0)
        return self.common_rows.abs() > torch.sqrt(spread * self.classes / (self.classes - 1)) / FRACTION_FLOOR

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "width": self.width,
            "spread": self.spread,
            "kappa": self.kappa,
            "alone": self.alone,
            "alone_kappa": self.alone_kappa,
            "alone_features": self.alone_features,
        }

    @classmethod
    def from_rows(cls, layer: str, common: torch.Tensor, probes: torch.Tensor, classes: int) -> HeadEvidence:
        """Spread and κ of the images' deviations from the batch mean (none for one image), and the common-mode
        part on features of ``h`` that no class reads: ``|∂Σz/∂h_j|`` above ``1/FRACTION_FLOOR`` times the feature's
        centered spread ``sqrt(R/(R−1)·E(vᵀPW)_j²)`` (exchangeable classes give ≈ 1 per feature; a trained
        classifier's centered columns only grow, since cross-entropy moves ``P W`` and never ``1ᵀW``)."""
        spread: list[float] = []
        kappa: list[float] = []
        if common.shape[0] > 1:
            dev = _deviation(common)
            mean_norm = float(common.double().mean(dim=0).norm())
            spread = [float(d) / mean_norm if mean_norm > 0 else float(d > 0) for d in _norms(dev)]
            frob = cast(torch.Tensor, sum(_norms(_deviation(p)).pow(2) for p in probes) / len(probes))
            kappa = [float(k) for k in _ratio(_norms(dev), frob, classes)]
        out = cls(layer, int(common[0].numel()), spread, kappa, common, probes, classes=classes)
        mask = out.alone_mask()
        if mask is not None:
            part = common.double() * mask
            out.alone = _fraction(part, common)
            out.alone_kappa = [float(k) for k in _ratio(_norms(part), (probes.pow(2).mean(dim=0) * mask).sum(dim=1), classes)]
            out.alone_features = [int(j) for j in mask.any(dim=0).nonzero().flatten()]
        return out


def _norms(g: torch.Tensor) -> torch.Tensor:
    return g.detach().double().flatten(1).norm(dim=1)


def _cell_sq(g: torch.Tensor) -> torch.Tensor:
    """Squared norm over channels per cell (N×H×W) for N×C×H×W gradients."""
    return g.detach().double().pow(2).sum(dim=1)


def _ratio(num: torch.Tensor, den_sq: torch.Tensor, classes: int) -> torch.Tensor:
    den = torch.sqrt(den_sq * classes / (classes - 1))
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.where(num > 0, torch.full_like(num, 1e6), torch.zeros_like(num)))
    return out.clamp(max=1e6)


def _fraction(part: torch.Tensor, whole: torch.Tensor) -> list[float]:
    """``‖part‖ / ‖whole‖`` per image (0 where both vanish)."""
    num, den = _norms(part), _norms(whole)
    return [
        float(v)
        for v in torch.where(den > 0, num / den.clamp_min(1e-300), torch.where(num > 0, torch.ones_like(num), torch.zeros_like(num)))
    ]


def _deviation(g: torch.Tensor) -> torch.Tensor:
    """``g_n − mean_n g`` (each image's gradient less the batch mean)."""
    g = g.detach().double()
    return g - g.mean(dim=0, keepdim=True)


def _forward(model: nn.Module, x: torch.Tensor, what: str = "forward pass", output: object = None) -> torch.Tensor:
    """The logits of ``model(x)`` (``output``: which of several outputs, :func:`select_output`), with the graph to
    ``x`` but none to the parameters."""
    return select_output(run_frozen(model, x, what), output)


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total + part


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _choose_cut(heads, classes, spatial, g, pull_back):
    """The last 2-D module input that carries every centered gradient (a probe's ``g``) to the input and layers.

    Returns its index into the gradient list and the probe's pull-back from it.
    An honest classifier's input passes at the first try. When none passes (a
    class-specific path around the classifier), the input of the last module
    with one output per class is used, and κ_bypass keeps such paths from
    counting as a shift.
    """

    def leak(pulled) -> float:
        worst = 0.0
        for i in range(spatial):
            full = _norms(g[i])
            part = _norms(g[i].detach() - pulled[i].detach())
            worst = max(worst, float(torch.where(full > 0, part / full.clamp_min(1e-300), part).max()))
        return worst

    tried: dict[int, list[torch.Tensor]] = {}
    for j in reversed(range(len(heads))):
        index = spatial + j
        tried[index] = pull_back(heads[j][1], g[index])
        if leak(tried[index]) <= FRACTION_FLOOR:
            return index, tried[index]
    fallback = next((spatial + j for j in reversed(range(len(heads))) if heads[j][2] == classes), spatial + len(heads) - 1)
    return fallback, tried[fallback]


def measure(  # noqa: C901 — one backward pass per probe feeds every statistic at every layer; splitting would repeat the pass
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    progress: bool = False,
    threshold: float = THRESHOLD,
    keep: torch.Tensor | None = None,
    explain: int | torch.Tensor = 2,
    source: torch.Tensor | None = None,
    output: object = None,
) -> tuple[list[LayerEvidence], HeadEvidence | None, Context]:
    """Evidence at the input (first entry) and at each of ``layers``, from one forward pass.

    Also finds the classifier's input ``h`` for the bypass and head tests: the
    input of the last leaf module that takes an N×w tensor *through which the
    centered gradients all flow* (checked with the first probe; so a module
    that only feeds a shift cannot pose as the classifier). Backward passes:
    one for the top-1 logits, one for the logit sum, one per probe (each
    reaching the input and every layer at once), and one pull-back from ``h``
    per probe plus one (more when a later 2-D input proves no cut), plus one
    when the head test fires (to place the classifier row's movement).

    The classifier's input is never an N×C tensor (C the number of outputs):
    that is the logits, or a function of them alone (an identity or a
    temperature placed on the logits by the model's author), and a cut there
    would leave nothing for the bypass and head tests to see; such tensors and
    everything after the first of them are passed over (``Context``).
    Statistics are over the classes that matter (:func:`logitshift.audit.effect.classes_that_matter`).

    The maps are those of the classes the user explains (:func:`explained_classes`: the top-``explain`` of each
    image by default, one backward pass each); ``source`` gives, for rows that are the inputs an explanation
    method feeds the model (:mod:`logitshift.audit.points`), the image they belong to (their first rows are the
    images themselves, ``source[i] = i``). ``output``: which output of a model with several (:func:`output_groups`).
    """
    acts: dict[str, torch.Tensor] = {}
    heads: list[tuple[str, torch.Tensor, int]] = []  # (module, its N×w input, its output's width)
    modules: list[tuple[str, nn.Module]] = []
    for name in layers:
        try:
            modules.append((name, model.get_submodule(name)))
        except AttributeError as exc:
            raise LogitShiftError(f"layer {name!r}: not a module of the model") from exc
    xg = x.detach().clone().requires_grad_(True)

    def head_hook(name, _m, inputs, out):
        h = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if h is not None and h is not xg and h.dim() == 2 and h.is_floating_point() and h.requires_grad and h.shape[0] == len(x):
            width = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() == 2 else 0
            heads.append((name, h, width))

    leaves = [(name, sub) for name, sub in model.named_modules() if name and _is_leaf(sub)]
    # transformer layers (a ViT's tokens, a Swin stage's N×H×W×C) are audited as their N×C×h×w grid (issue 17)
    with gridded(modules, x.shape[-2:], leaf=False) as grids, hooked(leaves, head_hook, skip_unhookable=True):
        z = _forward(model, xg, output=output)
    acts.update(grids)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] < 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise LogitShiftError(f"model: outputs {shape}, expected logits N×C with C ≥ 2 classes")
    missing = [n for n in layers if n not in acts or not isinstance(acts[n], torch.Tensor) or acts[n].dim() != 4]
    if missing:
        raise LogitShiftError(f"layer {missing[0]!r}: produced no N×C×H×W output in the forward pass")
    constant = [n for n in layers if not acts[n].requires_grad]
    if constant:
        raise LogitShiftError(f"layer {constant[0]!r}: its output does not depend on the input, so it has no gradient to audit")
    outputs = z.shape[1]
    # the classes that matter: an output never predicted can carry any gradient without moving a probability
    if keep is None:
        keep = classes_that_matter(torch.softmax(z.detach().double(), dim=1))
    classes = int(keep.sum())
    mask = keep.to(z.dtype)
    # the cut is never an N×C tensor (the logits, or a function of them placed by the model's author) nor anything after one
    logits_like = next((j for j, hd in enumerate(heads) if hd[1].shape[1] == outputs), None)
    passed_over = [hd[0] for hd in heads[logits_like:]] if logits_like is not None else []
    heads = heads[:logits_like][-MAX_HEADS:] if logits_like is not None else heads[-MAX_HEADS:]
    names = [INPUT, *layers]
    spatial = len(names)
    wrt = [xg] + [acts[n] for n in layers] + [hd[1] for hd in heads]
    weights = [None] + [acts[n].detach() for n in layers]  # what a CAM multiplies the gradient by (nothing at the input)

    def grads(s: torch.Tensor) -> list[torch.Tensor]:
        out = torch.autograd.grad(s, wrt, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, out)]

    def pull_back(h: torch.Tensor, g_h: torch.Tensor) -> list[torch.Tensor]:
        out = torch.autograd.grad(h, wrt[:spatial], grad_outputs=g_h, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(w) if g is None else g for w, g in zip(wrt[:spatial], out)]

    from ..core.progress import bar as progress_bar

    bar = progress_bar(
        total=1 + (explain if isinstance(explain, int) else explain.shape[-1]) + probes + (probes + 2 if heads else 0),
        desc="audit",
        unit="backward",
        enabled=progress,
        leave=False,
    )
    rows = torch.arange(len(x)) if source is None else source.long().cpu()
    chosen = explained_classes(z, explain, rows)
    g_explained = [grads(z.gather(1, chosen[:, r : r + 1]).sum()) for r in range(chosen.shape[1])]
    g_top = g_explained[0]
    g_sum = grads((z * mask).sum())
    bar.update(1 + len(g_explained))
    gen = torch.Generator().manual_seed(seed)
    frob = [torch.zeros(len(x), dtype=torch.float64, device=z.device) for _ in wrt[:spatial]]
    frob_weighted = [torch.zeros(len(x), dtype=torch.float64, device=z.device) for _ in wrt[:spatial]]
    frob_cells = [torch.zeros(w.shape[0], *w.shape[2:], dtype=torch.float64, device=z.device) for w in wrt[:spatial]]
    frob_bypass = [torch.zeros(len(x), dtype=torch.float64, device=z.device) for _ in wrt[:spatial]]
    probe_rows = []
    head: int | None = None  # index into wrt of the chosen classifier input
    for k in range(probes):
        # one probe for every image, so that the head test can compare images; centered over the classes that matter
        v = torch.randn((1, outputs), generator=gen, dtype=torch.float64).to(z.device) * keep.double()
        v = ((v - v.sum(dim=1, keepdim=True) / classes) * keep.double()).to(z.dtype).expand_as(z)
        g = grads((v * z).sum())
        bar.update(1)
        for i in range(spatial):
            frob[i] += _norms(g[i]).pow(2) / probes
            frob_weighted[i] += _norms(weighted(g[i].detach(), weights[i])).pow(2) / probes
            frob_cells[i] += _cell_sq(g[i]) / probes
        if k == 0 and heads:
            head, pulled = _choose_cut(heads, outputs, spatial, g, pull_back)
        elif head is not None:
            pulled = pull_back(wrt[head], g[head])
        if head is not None:
            bar.update(1)
            for i in range(spatial):
                frob_bypass[i] += _norms(g[i].detach() - pulled[i].detach()).pow(2) / probes
            probe_rows.append(g[head].detach().double().flatten(1))
    bypass: list[list[float]] = [[] for _ in range(spatial)]
    bypass_kappa: list[list[float]] = [[] for _ in range(spatial)]
    bypass_centered: list[list[float]] = [[] for _ in range(spatial)]
    proven: list[torch.Tensor | None] = [None] * spatial  # the part of the common mode a structural test proves is a shift
    head_evidence = None
    if head is not None:
        pulled = pull_back(wrt[head], g_sum[head])
        bar.update(1)
        for i in range(spatial):
            part = g_sum[i].detach() - pulled[i].detach()
            bypass[i] = _fraction(part, g_sum[i])
            bypass_kappa[i] = [float(k) for k in _ratio(_norms(part), frob_bypass[i], classes)]
            bypass_centered[i] = [
                float(v) for v in torch.where(frob[i] > 0, (frob_bypass[i] / frob[i].clamp_min(1e-300)).sqrt(), torch.zeros_like(frob[i]))
            ]
            fired = torch.tensor([_evidence_ratio(b, k, threshold) > 1.0 for b, k in zip(bypass[i], bypass_kappa[i])])
            if bool(fired.any()):
                proven[i] = part * fired.view(-1, *([1] * (part.dim() - 1))).to(part.dtype)
        head_evidence = HeadEvidence.from_rows(
            heads[head - spatial][0], g_sum[head].detach().double().flatten(1), torch.stack(probe_rows), classes
        )
        if head_evidence.ratio(threshold) > 1.0:
            # the classifier's common-mode row moves from image to image: its deviation from the batch mean is a shift
            deviation = g_sum[head].detach() - g_sum[head].detach().mean(dim=0, keepdim=True)
            moved = pull_back(wrt[head], deviation)
            for i in range(spatial):
                proven[i] = _add(proven[i], moved[i].detach())
        if head_evidence.alone_ratio(threshold) > 1.0:
            # features of h that only the common mode reads: their part of the common mode is a shift, if it reaches back
            alone = head_evidence.alone_mask()
            assert alone is not None
            part = g_sum[head].detach() * alone.view_as(g_sum[head]).to(g_sum[head].dtype)
            moved = pull_back(wrt[head], part)
            reach = max(max(_fraction(moved[i], g_sum[i])) for i in range(spatial))
            if reach <= FRACTION_FLOOR:  # a constant feature (a bias written as an input): no gradient, nothing to explain
                head_evidence.alone = [0.0] * len(head_evidence.alone)
            else:
                for i in range(spatial):
                    proven[i] = _add(proven[i], moved[i].detach())
        bar.update(1)
    bar.close()
    out = []
    for i, name in enumerate(names):
        common = g_sum[i].detach() / classes
        centered = g_top[i].detach() - common
        kappa = _ratio(_norms(g_sum[i]), frob[i], classes)
        kappa_w = _ratio(_norms(weighted(g_sum[i].detach(), weights[i])), frob_weighted[i], classes)
        cells = _ratio(_cell_sq(g_sum[i]).sqrt(), frob_cells[i], classes).mean(dim=0)
        act = xg.detach() if name == INPUT else wrt[i].detach()
        bound = honest_bound(frob_weighted[i], classes, threshold)
        shift_part = proven[i]
        methods = [
            m
            for rank, g in enumerate(g_explained)
            for m in layer_effects(name, act, g[i], common, None if shift_part is None else shift_part / classes, bound, rank)
        ]
        gradcam = next((m for m in methods if m.method in ("gradcam", "saliency")), methods[0])
        out.append(
            LayerEvidence(
                layer=name,
                shape=list(wrt[i].shape[1:]),
                kappa=[float(k) for k in kappa],
                common_norm=[float(v) for v in _norms(common)],
                class_norm=[float(v) for v in _norms(centered)],
                disagreement=list(gradcam.immune),
                cells=cells.tolist() if name != INPUT else [],
                classes=classes,
                bypass=bypass[i],
                bypass_kappa=bypass_kappa[i],
                bypass_centered=bypass_centered[i],
                kappa_weighted=[float(k) for k in kappa_w],
                methods=methods,
            )
        )
    context = Context(outputs, [int(j) for j in (~keep).nonzero().flatten()], passed_over, chosen.tolist())
    return out, head_evidence, context


def measure_batches(
    model, x, layers, probes=DEFAULT_PROBES, seed=0, progress=False, threshold=THRESHOLD, explain=2, source=None, output=None
) -> tuple[list[LayerEvidence], HeadEvidence | None, Context]:
    """:func:`measure` image by image when the model takes a fixed batch size, else on the whole batch.

    Every image gets the same probes (same ``seed``) and the same classes that
    matter (from every image's probabilities), so the head test can still
    compare images. Image by image, the head test's movement is not placed in
    the structural effect (it needs the batch); the bypass part is.
    """
    try:
        return measure(model, x, layers, probes, seed, progress, threshold, explain=explain, source=source, output=output)
    except LogitShiftError:
        if len(x) == 1:
            raise
    from ..core.progress import bar as progress_bar

    with torch.no_grad():
        logits = torch.cat([_forward(model, x[i : i + 1], output=output).double() for i in range(len(x))])
    keep = classes_that_matter(torch.softmax(logits, dim=1))
    chosen = explained_classes(logits, explain, torch.arange(len(x)) if source is None else source.long().cpu())
    one = torch.zeros(1, dtype=torch.long)
    parts = [
        measure(
            model, x[i : i + 1], layers, probes, seed, threshold=threshold, keep=keep, explain=chosen[i : i + 1], source=one, output=output
        )
        for i in progress_bar(range(len(x)), desc="audit", unit="image", enabled=progress)
    ]
    merged = []
    for rows in zip(*(p[0] for p in parts)):
        first = rows[0]
        cells = np.mean([np.asarray(r.cells) for r in rows], axis=0).tolist() if first.cells else []

        def cat(key: str, rows=rows) -> list:
            return [k for r in rows for k in getattr(r, key)]

        methods = [
            MethodEffect(
                m.method,
                m.layer,
                **{key: [v for r in rows for v in getattr(r.methods[j], key)] for key in ("immune", "structural", "size", "unstable")},
                rank=m.rank,
            )
            for j, m in enumerate(first.methods)
        ]
        merged.append(
            LayerEvidence(
                first.layer,
                first.shape,
                cat("kappa"),
                cat("common_norm"),
                cat("class_norm"),
                cat("disagreement"),
                cells,
                first.classes,
                cat("bypass"),
                cat("bypass_kappa"),
                cat("bypass_centered"),
                cat("kappa_weighted"),
                methods,
            )
        )
    context = parts[0][2]
    context.explained = [c for p in parts for c in p[2].explained]
    heads = [p[1] for p in parts if p[1] is not None]
    if len(heads) < len(parts):
        return merged, None, context
    common = torch.cat([cast(torch.Tensor, h.common_rows) for h in heads])  # from_rows always keeps the rows
    probe_rows = torch.cat([cast(torch.Tensor, h.probe_rows) for h in heads], dim=1)
    return merged, HeadEvidence.from_rows(heads[0].layer, common, probe_rows, first.classes), context
