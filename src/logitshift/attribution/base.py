"""One forward pass, then gradients of any score, for any model variant.

:func:`forward_pass` runs the classifier once with its parameters frozen and
captures the requested layers' activations as tensors that require grad. If
the model is a :class:`~logitshift.shift.ShiftedModel`, the same pass yields
both the original and the shifted logits (the shift is a cheap head on the
shared trunk). :meth:`Pass.grad` then differentiates a score with
``torch.autograd.grad`` with respect to an activation (or the input), so the
backward stops at the deepest layer needed and no parameter gradient is made.

Every method is a small subclass of :class:`Attribution`; adding a method is
adding a file.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LogitShiftError
from ..models import get_layer
from ..scores import score as score_fn
from ..shift import INPUT, ShiftedModel

VARIANTS = ("original", "shifted")


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the duration (restored afterwards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class Pass:
    """The result of one forward pass: input, logits per variant, activations per layer."""

    x: torch.Tensor
    logits: dict[str, torch.Tensor]
    acts: dict[str, torch.Tensor] = field(default_factory=dict)

    def score(self, target: torch.Tensor, score: str = "logit", variant: str = "original") -> torch.Tensor:
        if variant not in self.logits:
            raise LogitShiftError(f"variant {variant!r}: not available; this model has {', '.join(self.logits)}")
        return score_fn(self.logits[variant], target, score)

    def grad(self, wrt: torch.Tensor, target: torch.Tensor, score: str = "logit", variant: str = "original") -> torch.Tensor:
        """∂ score / ∂ ``wrt`` for every image of the batch (scores of different images are independent)."""
        s = self.score(target, score, variant).sum()
        (g,) = torch.autograd.grad(s, wrt, retain_graph=True, allow_unused=True)
        return torch.zeros_like(wrt) if g is None else g


def forward_pass(model: nn.Module, x: torch.Tensor, layers: Sequence[str] = (), input_grad: bool = False) -> Pass:
    """Run ``model`` once on ``x`` and capture ``layers`` (names in the base classifier)."""
    shifted = model if isinstance(model, ShiftedModel) else None
    base = shifted.base if shifted is not None else model
    names = list(dict.fromkeys(list(layers) + (shifted.layers if shifted is not None else [])))
    names = [n for n in names if n != INPUT]
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        module = get_layer(base, name)

        def hook(_m, _inp, out, name=name):
            if not isinstance(out, torch.Tensor):
                raise LogitShiftError(f"layer {name!r}: outputs {type(out).__name__}, expected a tensor")
            if not out.requires_grad:
                out.requires_grad_(True)  # a leaf: the backward stops here
            captured[name] = out

        handles.append(module.register_forward_hook(hook))
    x = x.detach().clone().requires_grad_(input_grad)
    try:
        with frozen(base), torch.enable_grad():
            z = base(x)
            logits = {"original": z}
            if shifted is not None:
                logits["shifted"] = shifted.shifted_logits(z, {INPUT: x, **captured})
    finally:
        for h in handles:
            h.remove()
    return Pass(x, logits, {n: (x if n == INPUT else captured[n]) for n in layers})


def predicted(p: Pass) -> torch.Tensor:
    """Top-1 class of each image (the same for every variant)."""
    return p.logits["original"].argmax(dim=1)


class Attribution:
    """Base of every explanation method.

    ``family`` is ``"cam"`` (maps on a layer's grid, from that layer's
    activation and gradient) or ``"input"`` (maps on the input pixels).
    """

    name: str = ""
    family: str = "cam"

    def maps(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        score: str = "logit",
        variant: str = "original",
        layer: str | None = None,
    ) -> torch.Tensor:
        """Raw maps, N×h×w (the layer's grid for CAMs, the input for input methods)."""
        raise NotImplementedError


class CamMethod(Attribution):
    """A class-activation-map method: ``map = combine(A, ∂s/∂A)``."""

    family = "cam"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def maps(self, model, x, target, score="logit", variant="original", layer=None):
        if layer is None:
            raise LogitShiftError(f"method {self.name!r}: needs a layer")
        p = forward_pass(model, x, [layer])
        return self.from_pass(p, layer, target, score, variant)

    def from_pass(self, p: Pass, layer: str, target: torch.Tensor, score: str = "logit", variant: str = "original") -> torch.Tensor:
        act = p.acts[layer]
        if act.dim() != 4:
            raise LogitShiftError(f"method {self.name!r}: layer {layer!r} outputs shape {tuple(act.shape)}, expected N×C×H×W")
        grad = p.grad(act, target, score, variant)
        with torch.no_grad():
            return self.combine(act.detach(), grad)


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of N×h×w maps to the input size."""
    size = (size, size) if isinstance(size, int) else size
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max per map to [0, 1], for display. A constant map becomes all zeros (stated convention)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view_as(maps)
