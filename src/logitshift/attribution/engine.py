"""The batch engine: one forward pass per batch serves every map asked of it.

A *request* is one (class slot, score, model variant). For a batch ``x`` of N
images, :func:`explain` runs the (shifted) model once with
:func:`~logitshift.attribution.forward_pass`, then

1. for every request, the gradient of the score with respect to the logits,
   ``g = ∂s/∂z`` (N×C, cheap: computed on detached copies of the logits);
2. one *batched* backward for all requests at once,
   ``∂s_k/∂A = J_Aᵀ g_k`` for k = 1…K, with
   ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the
   vector-Jacobian product). It starts at the logits of both variants (a
   request on the original model sends zeros into the shifted logits and vice
   versa) and stops at the captured activation ``A``: the trunk below it is
   never visited and no parameter gradient is made.
3. every CAM method combines ``A`` with each of the K gradients
   (``map = combine(A, ∂s_k/∂A)``), so M methods × K requests cost one forward
   and one batched backward.

Input methods (saliency, gradient × input, Integrated Gradients,
SmoothGrad) are linear in the input gradient ``∂s/∂x`` at their *points*
(the image; the IG path; SmoothGrad's noisy copies; see
:class:`~logitshift.attribution.InputMethod`). For one class ``c`` and one
variant's logits ``z`` (``p = softmax(z)``), the five scores' logit gradients
are per-row multiples of only three vectors::

    logit     e_c                      = u
    logprob   e_c − p                  = v
    prob      p_c (e_c − p)            = p_c · v
    contrast  e_c − q = (e_c − p)/(1 − p_c)  = v / (1 − p_c)
    centered  e_c − 1/C                = w

(``q`` the softmax over the other classes), so each point's forward is
followed by one vector-Jacobian product per distinct ``(class, u|v|w,
variant)`` — at most 3 per variant however many scores — and every request's
gradient is a per-row multiple of one of them (:func:`input_grads`). The
shifted variant's products start at its own logits ``z' = z + t·1``, so
``∂t`` is in them (measured, not assumed). On CPU these products run one
after the other: a vmapped backward through the whole network is slower
(measured: 3× for K = 4 on EfficientNet-Lite0). Methods with points of their
own (IG, SmoothGrad) run one forward per chunk of points; methods at the
image itself share the batch's pass. Other methods are called through their
``maps``.

Example::

    >>> out = explain(shifted, x, "head", [get_method("gradcam")], ["logit", "prob"])
    >>> out.maps[(0, "gradcam", "logit", "shifted")].shape     # slot 0 = top-1 class
    torch.Size([4, 7, 7])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.capture import Heads
from ..core.errors import LogitShiftError
from ..core.scores import check_score
from ..core.scores import score as score_fn
from . import Attribution, CamMethod, InputMethod, Pass, as_targets, forward_pass, predicted

#: largest number of requests vmapped in one backward (bounds memory: K×N×C×H×W floats).
CHUNK = 16


@dataclass(frozen=True)
class Request:
    """One gradient to take: the score of class ``targets[slot]`` on one model variant."""

    slot: int
    score: str
    variant: str


@dataclass
class Explained:
    """Everything one batch produced.

    ``targets[0]`` is the top-1 class of each image, ``targets[1:]`` the other
    top-k classes and the extra classes (see :func:`explain`); a class may
    repeat across slots for an image (the maps are then the same); ``maps[(slot, method, score, variant)]`` is an N×h×w tensor of raw
    maps (the layer's grid for CAMs, the input size for input methods).
    """

    logits: dict[str, torch.Tensor]
    targets: list[torch.Tensor]
    maps: dict[tuple[int, str, str, str], torch.Tensor] = field(default_factory=dict)
    #: raw N×C×H×W attributions of the input methods, same keys (only with ``explain(..., raw=True)``)
    raw: dict[tuple[int, str, str, str], torch.Tensor] = field(default_factory=dict)

    @property
    def top1(self) -> torch.Tensor:
        return self.targets[0]


def logit_grads(p: Pass, targets: Sequence[torch.Tensor], requests: Sequence[Request]) -> list[torch.Tensor]:
    """``∂ score / ∂ logits`` of every request (each N×C, in the variant's logits dtype)."""
    leaves = {v: z.detach().requires_grad_(True) for v, z in p.logits.items()}
    out = []
    with torch.enable_grad():
        for r in requests:
            z = leaves[r.variant]
            (g,) = torch.autograd.grad(score_fn(z, targets[r.slot], r.score).sum(), z)
            out.append(g)
    return out


def iter_score_grads(
    p: Pass, wrt: torch.Tensor, targets: Sequence[torch.Tensor], requests: Sequence[Request], batched: bool = True
) -> Iterator[tuple[range, torch.Tensor]]:
    """Gradients of ``requests`` with respect to ``wrt``, chunk by chunk: ``(indices, len × wrt.shape)``.

    ``batched=True`` takes each chunk of up to :data:`CHUNK` requests in one
    vmapped backward (falling back to one backward per request if an operation
    has no batching rule); ``batched=False`` yields one request at a time. Both
    give the same numbers; holding one chunk at a time bounds memory.
    """
    variants = list(p.logits)
    outputs = [p.logits[v] for v in variants]
    per_request = logit_grads(p, targets, requests)
    lo = 0
    if batched and len(requests) > 1:
        try:
            for lo in range(0, len(requests), CHUNK):
                chunk = range(lo, min(lo + CHUNK, len(requests)))
                grad_outputs = []
                for v, z in zip(variants, outputs):
                    g = torch.zeros((len(chunk), *z.shape), dtype=z.dtype, device=z.device)
                    for j, k in enumerate(chunk):
                        if requests[k].variant == v:
                            g[j] = per_request[k]
                    grad_outputs.append(g)
                (gw,) = torch.autograd.grad(
                    outputs, wrt, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True, is_grads_batched=True
                )
                yield chunk, (torch.zeros((len(chunk), *wrt.shape), dtype=wrt.dtype, device=wrt.device) if gw is None else gw)
            return
        except RuntimeError:  # an operation without a batching rule: this chunk and the rest one by one
            pass
    for k in range(lo, len(requests)):
        r = requests[k]
        (g,) = torch.autograd.grad(p.logits[r.variant], wrt, grad_outputs=per_request[k], retain_graph=True, allow_unused=True)
        yield range(k, k + 1), (torch.zeros_like(wrt) if g is None else g)[None]


#: the vector whose product serves each score (see the module docstring)
BASIS = {"logit": "u", "logprob": "v", "prob": "v", "contrast": "v", "centered": "w"}


def basis_vector(z: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``u = e_c``, ``v = e_c − softmax(z)`` or ``w = e_c − 1/C`` for logits ``z`` (N×C), one class per row.

    ``v_c`` is computed as ``Σ_{j≠c} p_j`` (no cancellation when ``p_c → 1``).
    """
    c = target.view(-1, 1).to(z.device)
    ones = torch.ones_like(c, dtype=z.dtype)
    if kind == "u":
        return torch.zeros_like(z).scatter_(1, c, ones)
    if kind == "w":
        return torch.full_like(z, -1.0 / z.shape[1]).scatter_add_(1, c, ones)
    p = torch.softmax(z, dim=1)
    rest = p.scatter(1, c, 0.0).sum(dim=1, keepdim=True)
    return (-p).scatter_(1, c, rest)


def score_factor(z: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """The per-row factor ``f`` with ``∂score/∂z = f · basis_vector(z, target, BASIS[score])`` (shape N)."""
    c = target.view(-1, 1).to(z.device)
    if score == "prob":
        return torch.softmax(z, dim=1).gather(1, c)[:, 0]
    if score == "contrast":
        return 1.0 / torch.softmax(z, dim=1).scatter(1, c, 0.0).sum(dim=1)
    return torch.ones(z.shape[0], dtype=z.dtype, device=z.device)


def input_grads(
    p: Pass, targets: Sequence[torch.Tensor], requests: Sequence[Request], release: bool = False
) -> Iterator[tuple[list[tuple[int, torch.Tensor]], torch.Tensor]]:
    """``∂s/∂x`` of every request from one vector-Jacobian product per distinct basis vector.

    Yields ``(members, g)``: ``g`` (shape of ``p.x``) is the product of one
    ``(class slot, u|v|w, variant)`` vector, and each ``(k, f)`` of
    ``members`` says that request ``k``'s gradient is ``f[:, None, None, None] · g``.
    ``release``: free the graph after the last product.
    """
    groups: dict[tuple[int, str, str], list[tuple[int, torch.Tensor]]] = {}
    for k, r in enumerate(requests):
        if r.variant not in p.logits:
            raise LogitShiftError(f"variant {r.variant!r}: not available; this model has {', '.join(p.logits)}")
        z = p.logits[r.variant].detach()
        groups.setdefault((r.slot, BASIS[check_score(r.score)], r.variant), []).append((k, score_factor(z, targets[r.slot], r.score)))
    for n, ((slot, kind, variant), members) in enumerate(groups.items()):
        z = p.logits[variant]
        vec = basis_vector(z.detach(), targets[slot], kind)
        last = release and n == len(groups) - 1
        (g,) = torch.autograd.grad(z, p.x, grad_outputs=vec, retain_graph=not last, allow_unused=True)
        yield members, (torch.zeros_like(p.x) if g is None else g)


def n_products(requests: Sequence[Request]) -> int:
    """How many vector-Jacobian products :func:`input_grads` takes for ``requests``."""
    return len({(r.slot, BASIS[r.score], r.variant) for r in requests})


def linear_input(method: Attribution) -> bool:
    """True for an input method whose attribution is :class:`InputMethod`'s ``points`` → ``finish`` (served here)."""
    return isinstance(method, InputMethod) and type(method).attribute is InputMethod.attribute


def pass_family(method: Attribution) -> str | None:
    """``"cam"`` or ``"input"`` if the method's maps come from the shared pass, else ``None``."""
    if method.family == "cam" and callable(getattr(method, "combine", None)):
        return "cam"
    if linear_input(method) and method.at_input:  # type: ignore[attr-defined]
        return "input"
    return None


def _bar(progress: bool, total: int):
    from ..core.progress import bar

    return bar(total=total, desc="maps", unit="pass", enabled=progress, smoothing=0.1)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None,
    methods: Sequence[Attribution],
    scores: Sequence[str],
    variants: Sequence[str] | None = None,
    classes: Sequence[int | torch.Tensor] = (),
    batched: bool = True,
    raw: bool = False,
    progress: bool = False,
    targets: Sequence[torch.Tensor] | None = None,
    top_k: int = 1,
) -> Explained:
    """All maps of ``methods`` × ``scores`` × ``variants`` × (top-``top_k`` + ``classes``) for the batch ``x``.

    Class slots: ``0 … top_k−1`` are each image's ``top_k`` most probable
    classes (of the original model), then one slot per entry of ``classes``:
    an int (the same class for every image) or a tensor of N class indices
    (one per image, e.g. true labels).

    ``variants`` defaults to ``("original", "shifted")`` for a
    :class:`~logitshift.shift.model.ShiftedModel`, else ``("original",)``.
    ``raw``: also keep the input methods' raw attributions (N×C×H×W) in
    ``.raw``. ``progress``: one bar on stderr counting passes (forwards and
    vector-Jacobian products), with its time estimate. ``targets``: the
    classes to explain, one N-vector per slot (per-image classes such as true
    labels), instead of the slots above.

    The request kinds, each served by its own step: CAMs (one backward per chunk of requests at ``layer``),
    input methods (one backward per score basis at the input), sampled input methods (Integrated Gradients,
    SmoothGrad: a forward per chunk of points) and the others (their own passes, one per request).
    """
    for s in scores:
        check_score(s)
    if variants is None:
        variants = ("original", "shifted") if isinstance(model, Heads) else ("original",)
    kinds = _Kinds.of(methods)
    kinds.sampled = [m.sized(model, x) for m in kinds.sampled]  # type: ignore[attr-defined]  # chunks the memory budget holds
    if layer is None and any(m.family == "cam" for m in methods):
        raise LogitShiftError("CAM methods need a layer (--layer)")
    if top_k < 1:
        raise LogitShiftError(f"--top-k {top_k}: expected an integer >= 1")
    slots = len(targets) if targets is not None else top_k + len(classes)
    bar = _bar(progress, _passes(kinds, x, slots, scores, variants, batched))
    p = forward_pass(model, x, [layer] if kinds.cams and layer is not None else [], input_grad=bool(kinds.inputs))
    bar.update(1)
    for v in variants:
        if v not in p.logits:
            raise LogitShiftError(f"variant {v!r}: not available; this model has {', '.join(p.logits)}")
    targets = _slot_targets(p, x, targets, top_k, classes)
    requests = [Request(slot, s, v) for slot in range(len(targets)) for s in scores for v in variants]
    out = Explained({v: z.detach() for v, z in p.logits.items()}, targets)

    def keep(r: Request, m: Attribution, attribution: torch.Tensor) -> None:
        key = (r.slot, m.name, r.score, r.variant)
        out.maps[key] = m.reduce(attribution)  # type: ignore[attr-defined]
        if raw:
            out.raw[key] = attribution

    if kinds.cams and layer is not None:
        _cam_requests(p, layer, kinds.cams, targets, requests, batched, out, bar)
    if kinds.inputs:
        _input_requests(p, x, kinds.inputs, targets, requests, keep, bar)
    del p  # free the graph before methods that run passes of their own
    for m in kinds.sampled:
        _sampled_requests(model, x, m, targets, requests, keep, bar)
    for m in kinds.others:
        for r in requests:
            maps = m.maps(model, x, targets[r.slot], r.score, r.variant, layer if m.family == "cam" else None)
            out.maps[(r.slot, m.name, r.score, r.variant)] = maps.detach()
            bar.update(1)
    bar.close()
    return out


@dataclass
class _Kinds:
    """The methods by how :func:`explain` serves them."""

    cams: list[CamMethod]  # from the layer's gradient of the one pass
    inputs: list[Attribution]  # from the input's gradient of the one pass
    sampled: list[Attribution]  # linear in input gradients at sampled points (their own forwards)
    others: list[Attribution]  # their own passes, one per request

    @classmethod
    def of(cls, methods: Sequence[Attribution]) -> _Kinds:
        cams = [m for m in methods if isinstance(m, CamMethod) and pass_family(m) == "cam"]
        inputs = [m for m in methods if pass_family(m) == "input"]
        sampled = [m for m in methods if pass_family(m) is None and linear_input(m)]
        others = [m for m in methods if not any(m is k for k in (*cams, *inputs, *sampled))]
        return cls(cams, inputs, sampled, others)


def _passes(kinds: _Kinds, x: torch.Tensor, slots: int, scores: Sequence[str], variants: Sequence[str], batched: bool) -> int:
    """How many passes (forwards and vector-Jacobian products) :func:`explain` makes: its progress bar's total."""
    n_requests = slots * len(scores) * len(variants)
    n_basis = len({(slot, BASIS[s], v) for slot in range(slots) for s in scores for v in variants})
    chunks = [-(-m.rows(x.shape[0]) // m.batch_size) for m in kinds.sampled]  # type: ignore[attr-defined]
    total = (
        1
        + ((-(-n_requests // CHUNK) if batched and n_requests > 1 else n_requests) if kinds.cams else 0)
        + (n_basis if kinds.inputs else 0)
        + sum(c * (1 + n_basis) for c in chunks)
    )
    return total + len(kinds.others) * n_requests


def _slot_targets(
    p: Pass, x: torch.Tensor, targets: Sequence[torch.Tensor] | None, top_k: int, classes: Sequence[int | torch.Tensor]
) -> list[torch.Tensor]:
    """One N-vector of classes per slot: the top-``top_k`` of the original logits, then ``classes`` (or ``targets`` as given)."""
    top1 = predicted(p)
    if targets is not None:
        return [as_targets(t, x.shape[0], top1.device) for t in targets]
    logits = p.logits["original"].detach()
    if top_k > logits.shape[1]:
        raise LogitShiftError(f"--top-k {top_k}: this model has {logits.shape[1]} classes")
    ranked = [top1] + list(logits.topk(top_k, dim=1).indices.T[1:]) if top_k > 1 else [top1]
    fixed = [c.to(top1.device).long() if isinstance(c, torch.Tensor) else torch.full_like(top1, int(c)) for c in classes]
    return ranked + fixed


def _cam_requests(
    p: Pass, layer: str, cams: list[CamMethod], targets: list[torch.Tensor], requests: list[Request], batched: bool, out: Explained, bar
) -> None:
    """Every CAM of every request from the layer's gradients (chunks of requests per backward)."""
    act = p.acts[layer]
    a = act.detach()
    for chunk, grads in iter_score_grads(p, act, targets, requests, batched=batched):
        with torch.no_grad():
            for j, k in enumerate(chunk):
                r = requests[k]
                for cam in cams:
                    out.maps[(r.slot, cam.name, r.score, r.variant)] = cam.combine(a, grads[j])
        bar.update(1)


def _input_requests(
    p: Pass, x: torch.Tensor, inputs: list[Attribution], targets: list[torch.Tensor], requests: list[Request], keep, bar
) -> None:
    """Every input method of every request from the input's gradient (one backward per score basis)."""
    xd = p.x.detach()
    view = (-1, *([1] * (x.dim() - 1)))
    for members, g in input_grads(p, targets, requests, release=True):
        with torch.no_grad():
            for k, f in members:
                for m in inputs:
                    keep(requests[k], m, m.finish(xd, g * f.to(g.dtype).view(view)))  # type: ignore[attr-defined]
        bar.update(1)


def _sampled_requests(
    model: nn.Module, x: torch.Tensor, m: Attribution, targets: list[torch.Tensor], requests: list[Request], keep, bar
) -> None:
    """A sampled input method (its points' weighted input gradients summed per request), every request at once."""
    view = (-1, *([1] * (x.dim() - 1)))
    totals = [torch.zeros_like(x) for _ in requests]
    for i, xs, w in m.points(x, bar=False):  # type: ignore[attr-defined]
        q = forward_pass(model, xs, input_grad=True)
        bar.update(1)
        for members, g in input_grads(q, [t[i] for t in targets], requests, release=True):
            with torch.no_grad():
                for k, f in members:
                    totals[k].index_add_(0, i, g * (f.to(g.dtype) * w).view(view))
            bar.update(1)
        del q
    with torch.no_grad():
        for r, t in zip(requests, totals):
            keep(r, m, m.finish(x, t))  # type: ignore[attr-defined]


def cam_maps(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    layer: str,
    methods: Sequence[CamMethod],
    scores: Sequence[str] = ("logit",),
    variants: Sequence[str] = ("original",),
) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every CAM ``method`` × ``score`` × ``variant`` for one class per image, from ONE forward pass (:func:`explain`).

    Returns ``{(method.name, score, variant): N×h×w}``. Example::

        >>> out = cam_maps(model, x, 285, "head", [GradCAM(), HiResCAM()], scores=("logit", "prob"))
        >>> out["hirescam", "prob", "original"].shape
        torch.Size([1, 7, 7])
    """
    for m in methods:
        if not isinstance(m, CamMethod):
            raise LogitShiftError(f"method {getattr(m, 'name', m)!r}: not a CAM method; cam_maps serves CAMs only")
    if not methods:
        return {}
    out = explain(model, x, layer, methods, scores, variants, targets=[torch.as_tensor(target)])
    return {(m, s, v): maps for (_slot, m, s, v), maps in out.maps.items()}
