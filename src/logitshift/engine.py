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

Input-gradient methods that are a function of ``(x, ∂s/∂x)`` (saliency,
gradient × input; see :func:`input_combine`) take gradients with respect to the input from the same forward pass; their
backward crosses the whole network, and a vmapped backward there is slower
than a loop on CPU (measured: 3× for K = 4 on EfficientNet-Lite0), so those
gradients are taken one request at a time. Methods that need passes of their
own (Integrated Gradients, SmoothGrad) are called through their ``maps``.

Example::

    >>> out = explain(shifted, x, "head", [get_method("gradcam")], ["logit", "prob"])
    >>> out.maps[(0, "gradcam", "logit", "shifted")].shape     # slot 0 = top-1 class
    torch.Size([4, 7, 7])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .attribution import Attribution, Pass, forward_pass, predicted
from .errors import LogitShiftError
from .scores import check_score
from .scores import score as score_fn
from .shift import ShiftedModel

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

    ``targets[0]`` is the top-1 class of each image, ``targets[1:]`` the extra
    classes; ``maps[(slot, method, score, variant)]`` is an N×h×w tensor of raw
    maps (the layer's grid for CAMs, the input size for input methods).
    """

    logits: dict[str, torch.Tensor]
    targets: list[torch.Tensor]
    maps: dict[tuple[int, str, str, str], torch.Tensor] = field(default_factory=dict)

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


def score_grads(
    p: Pass, wrt: torch.Tensor, targets: Sequence[torch.Tensor], requests: Sequence[Request], batched: bool = True
) -> torch.Tensor:
    """All gradients of :func:`iter_score_grads` at once (K × wrt.shape)."""
    result = torch.empty((len(requests), *wrt.shape), dtype=wrt.dtype, device=wrt.device)
    for chunk, g in iter_score_grads(p, wrt, targets, requests, batched):
        result[chunk.start : chunk.stop] = g
    return result


def input_combine(method: Attribution) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """For an input method that is a function of ``(x, ∂s/∂x)`` alone, that function; else ``None``.

    Saliency: ``reduce(∂s/∂x)``; gradient × input: ``reduce(x ⊙ ∂s/∂x)`` (exactly their
    ``attribute`` + ``reduce``; subclasses, which may change ``attribute``, are not assumed).
    A method may also declare itself with a ``combine(x, grad)`` of its own.
    """
    from .attribution import GradientXInput, Saliency

    if type(method) is Saliency:
        return lambda x, g: method.reduce(g)
    if type(method) is GradientXInput:
        return lambda x, g: method.reduce(x * g)
    if method.family == "input" and callable(getattr(method, "combine", None)):
        return method.combine  # type: ignore[attr-defined]
    return None


def pass_family(method: Attribution) -> str | None:
    """``"cam"`` or ``"input"`` if the method's maps come from the shared pass, else ``None``."""
    if method.family == "cam" and callable(getattr(method, "combine", None)):
        return "cam"
    if method.family == "input" and input_combine(method) is not None:
        return "input"
    return None


def explain(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None,
    methods: Sequence[Attribution],
    scores: Sequence[str],
    variants: Sequence[str] | None = None,
    classes: Sequence[int] = (),
    batched: bool = True,
) -> Explained:
    """All maps of ``methods`` × ``scores`` × ``variants`` × (top-1 + ``classes``) for the batch ``x``.

    ``variants`` defaults to ``("original", "shifted")`` for a
    :class:`~logitshift.shift.ShiftedModel`, else ``("original",)``.
    """
    for s in scores:
        check_score(s)
    if variants is None:
        variants = ("original", "shifted") if isinstance(model, ShiftedModel) else ("original",)
    cams = [m for m in methods if pass_family(m) == "cam"]
    inputs = [m for m in methods if pass_family(m) == "input"]
    others = [m for m in methods if pass_family(m) is None]
    if layer is None and any(m.family == "cam" for m in methods):
        raise LogitShiftError("CAM methods need a layer (--layer)")
    p = forward_pass(model, x, [layer] if cams else [], input_grad=bool(inputs))
    for v in variants:
        if v not in p.logits:
            raise LogitShiftError(f"variant {v!r}: not available; this model has {', '.join(p.logits)}")
    top1 = predicted(p)
    targets = [top1] + [torch.full_like(top1, int(c)) for c in classes]
    requests = [Request(slot, s, v) for slot in range(len(targets)) for s in scores for v in variants]
    out = Explained({v: z.detach() for v, z in p.logits.items()}, targets)
    if cams:
        act = p.acts[layer]
        a = act.detach()
        for chunk, grads in iter_score_grads(p, act, targets, requests, batched=batched):
            with torch.no_grad():
                for j, k in enumerate(chunk):
                    r = requests[k]
                    for m in cams:
                        out.maps[(r.slot, m.name, r.score, r.variant)] = m.combine(a, grads[j])
    if inputs:
        combines = [input_combine(m) for m in inputs]
        xd = p.x.detach()
        # one request at a time: a vmapped backward through the whole network is slower on CPU
        for chunk, grads in iter_score_grads(p, p.x, targets, requests, batched=False):
            with torch.no_grad():
                r = requests[chunk.start]
                for m, combine in zip(inputs, combines):
                    out.maps[(r.slot, m.name, r.score, r.variant)] = combine(xd, grads[0])
    del p  # free the graph before methods that run passes of their own
    for m in others:
        for r in requests:
            maps = m.maps(model, x, targets[r.slot], r.score, r.variant, layer if m.family == "cam" else None)
            out.maps[(r.slot, m.name, r.score, r.variant)] = maps.detach()
    return out
