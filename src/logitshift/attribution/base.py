"""The method templates, on top of the capture core.

:func:`~logitshift.core.capture.forward_pass` runs the classifier once with its
parameters frozen and captures the requested layers' activations; a model
with several heads (:class:`~logitshift.core.capture.Heads`, e.g. the shifted
model) gives every head's logits from that pass. :meth:`Pass.grad` then
differentiates a score with respect to an activation (or the input), so the
backward stops at the deepest layer needed and no parameter gradient is made.

Every method is a small subclass of :class:`Attribution`; adding a method is
adding a file. :class:`CamMethod` (maps on a spatial layer's grid) only
defines ``combine(A, ∂s/∂A)``, so :func:`logitshift.attribution.engine.explain` serves every CAM × score ×
variant from one forward pass; :class:`InputMethod` (maps on the input pixels)
defines ``attribute`` (the raw N×C×H×W attribution) and a channel reduction.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import INPUT, Heads, Pass, attention, token_grid
from ..core.capture import forward_pass as forward_pass
from ..core.capture import frozen as frozen
from ..core.errors import LogitShiftError
from ..core.names import DEFAULT_MEMORY_BUDGET_GB

VARIANTS = ("original", "shifted")
M = TypeVar("M", bound="Attribution")

#: every method by name, filled by :func:`register` as the method files are imported (see ``attribution/__init__.py``)
METHODS: dict[str, type[Attribution]] = {}


def register(cls: type[M]) -> type[M]:
    """Class decorator: add an :class:`Attribution` subclass to :data:`METHODS` under its ``name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method class {cls.__name__}: needs a unique name (got {cls.name!r})")
    METHODS[cls.name] = cls
    return cls


#: a chunk's peak memory over the bytes its forward saves for the backward (the backward's own gradients, measured on
#: EfficientNet-Lite0 and resnet18: benchmarks/matrix_memory.py)
BACKWARD_FACTOR = 2.0


def row_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for one row's forward with input gradients (saved activations; parameters not counted).

    Measured on ``x[:1]`` with :func:`torch.autograd.graph.saved_tensors_hooks`, each storage counted once.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()} | {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        p = forward_pass(model, x[:1], input_grad=True)
    del p
    return sum(seen.values())


def chunk_rows(model: nn.Module, x: torch.Tensor, batch_size: int, memory_budget: float | None) -> int:
    """Rows per chunk of points: ``min(batch_size, ⌊budget / (BACKWARD_FACTOR · row_bytes)⌋)``, at least 1."""
    if memory_budget is None:
        return batch_size
    per_row = BACKWARD_FACTOR * max(row_bytes(model, x), 1)
    return max(1, min(batch_size, int(memory_budget * 2**30 // per_row)))


def predicted(p: Pass) -> torch.Tensor:
    """Top-1 class of each image (the same for every variant)."""
    return p.logits["original"].argmax(dim=1)


def as_targets(target: torch.Tensor | int | Sequence[int], n: int, device: torch.device | None = None) -> torch.Tensor:
    """One class index per image: an int (the same class for all), or N of them."""
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise LogitShiftError(f"target: {t.numel()} classes for {n} images, expected one class or one per image")
    return t


class Attribution:
    """Base of every explanation method.

    ``family`` is ``"cam"`` (maps on a layer's grid, from that layer's
    activation and gradient) or ``"input"`` (maps on the input pixels).
    """

    name: str = ""
    label: str = ""  # how a figure or a sentence names the method ("Grad-CAM")
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CamMethod(Attribution):
    """A class-activation-map method: ``map = combine(A, ∂s/∂A)``.

    ``A`` is the activation of a spatial layer (N×C×h×w) and ``∂s/∂A`` the
    gradient of the score there; every CAM of one (score, variant) shares that
    one gradient, and every CAM of one pass shares the one forward (see
    :func:`logitshift.attribution.engine.explain`). Following pytorch-grad-cam, every map is ReLU-ed.
    """

    family = "cam"

    def combine(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The map N×h×w from the activation and the score's gradient at the layer (both N×C×h×w)."""
        raise NotImplementedError

    def maps(self, model, x, target, score="logit", variant="original", layer=None):
        if layer is None:
            raise LogitShiftError(f"method {self.name!r}: needs a layer (a CAM maps a spatial layer of the model)")
        p = forward_pass(model, x, [layer], input_grad=layer == INPUT)
        return self.from_pass(p, layer, as_targets(target, x.shape[0], x.device), score, variant)

    def from_pass(self, p: Pass, layer: str, target: torch.Tensor, score: str = "logit", variant: str = "original") -> torch.Tensor:
        act = self.activation(p, layer)
        grad = p.grad(act, target, score, variant)
        with torch.no_grad():
            return self.combine(act.detach(), grad)

    def activation(self, p: Pass, layer: str) -> torch.Tensor:
        """The layer's activation in ``p``, refused unless it is spatial (N×C×h×w)."""
        if layer not in p.acts:
            raise LogitShiftError(f"layer {layer!r}: not captured by this forward pass (captured: {', '.join(p.acts) or 'none'})")
        act = p.acts[layer]
        if act.dim() != 4:
            raise LogitShiftError(f"method {self.name!r}: layer {layer!r} outputs shape {tuple(act.shape)}, expected a spatial N×C×H×W map")
        return act


class InputMethod(Attribution):
    """A method on the input pixels, linear in the score's input gradient ``∂s/∂x``.

    Every input method here is ``raw = finish(x, Σ_r w_r · ∂s/∂x(x_r))``: a
    weighted sum of gradients at *points* ``x_r`` (the image itself for
    saliency and gradient × input, the path for Integrated Gradients, noisy
    copies for SmoothGrad), then a last step that needs only ``x``.
    :meth:`points` yields those points chunk by chunk and :meth:`finish` ends
    it, so :meth:`attribute` (one score) and
    :func:`logitshift.attribution.engine.explain` (every score and variant from the same
    forward of each chunk) compute the same numbers.

    :meth:`attribute` gives the raw attribution N×C×H×W (what Captum returns);
    :meth:`maps` reduces it over channels to N×H×W with :attr:`reduction`:
    ``"sum"`` (``Σ_c``, keeps the sign; for methods whose values add up, such
    as gradient × input and Integrated Gradients) or ``"maxabs"``
    (``max_c |·|``, Simonyan et al. 2013, for gradient magnitudes).

    Methods that need many inputs per image (Integrated Gradients steps,
    SmoothGrad samples) send them through the model in chunks of
    ``batch_size`` rows: one forward and one backward per chunk, fewer rows
    when ``memory_budget`` GB would not hold them (see :func:`chunk_rows`;
    ``None``: no cap).
    """

    family = "input"
    reduction: str = "sum"

    def __init__(self, batch_size: int = 32, memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB) -> None:
        if int(batch_size) < 1:
            raise LogitShiftError(f"batch_size {batch_size!r}: expected a positive integer")
        if memory_budget is not None and not memory_budget > 0:
            raise LogitShiftError(f"memory_budget {memory_budget!r}: expected a number of GB > 0, or None")
        self.batch_size = int(batch_size)
        self.memory_budget = memory_budget

    def sized(self, model: nn.Module, x: torch.Tensor) -> InputMethod:
        """This method with ``batch_size`` cut to what :attr:`memory_budget` holds for ``model`` (itself when it fits)."""
        rows = chunk_rows(model, x, self.batch_size, getattr(self, "memory_budget", None))
        if rows == self.batch_size:
            return self
        out = copy.copy(self)
        out.batch_size = rows  # type: ignore[attr-defined]
        return out

    def rows(self, n: int) -> int:
        """How many points (rows through the model) ``n`` images need."""
        return n

    def points(self, x: torch.Tensor, bar: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(image index, input, weight)`` of each row, one chunk of at most ``batch_size`` rows at a time.

        The default: the images themselves, weight 1. ``bar``: a progress bar
        on stderr when there are many chunks.
        """
        for lo, hi in self.chunks(x.shape[0], bar):
            yield torch.arange(lo, hi, device=x.device), x[lo:hi], torch.ones(hi - lo, dtype=x.dtype, device=x.device)

    def finish(self, x: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """The raw attribution from ``total = Σ_r w_r · ∂s/∂x(x_r)`` (per image). Default: ``total`` itself."""
        return total

    @property
    def at_input(self) -> bool:
        """True if the only point is the image itself, weight 1 (its gradient comes from any pass over ``x``)."""
        return type(self).points is InputMethod.points

    def attribute(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor | int,
        score: str = "logit",
        variant: str = "original",
    ) -> torch.Tensor:
        """The raw attribution, N×C×H×W (same shape as ``x``), one forward and one backward per chunk."""
        target = as_targets(target, x.shape[0], x.device)
        total = torch.zeros_like(x)
        for i, xs, w in self.sized(model, x).points(x):
            g = self.input_grad(model, xs, target[i], score, variant)
            # a float64 / float16 model gives gradients in its own dtype; the total stays in the input's
            total.index_add_(0, i, (g * w.view(-1, *([1] * (x.dim() - 1)))).to(total.dtype))
        return self.finish(x, total)

    def reduce(self, raw: torch.Tensor) -> torch.Tensor:
        """N×C×H×W → N×H×W by :attr:`reduction`."""
        if self.reduction == "maxabs":
            return raw.abs().amax(dim=1)
        return raw.sum(dim=1)

    def maps(self, model, x, target, score="logit", variant="original", layer=None):
        if layer not in (None, INPUT):
            raise LogitShiftError(
                f"method {self.name!r}: maps the input pixels, cannot serve layer {layer!r} (pass no layer, or {INPUT!r})"
            )
        return self.reduce(self.attribute(model, x, target, score, variant))

    @staticmethod
    def input_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, score: str, variant: str) -> torch.Tensor:
        """``∂s/∂x`` for a batch of inputs, in one forward and one backward."""
        p = forward_pass(model, x, input_grad=True)
        return p.grad(p.x, target, score, variant).detach()

    def chunks(self, rows: int, bar: bool = True) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk of ``rows`` rows, with a progress bar on stderr when there are many."""
        starts = range(0, rows, self.batch_size)
        if bar and len(starts) > 4:
            import sys

            from tqdm import tqdm

            starts = tqdm(starts, desc=self.name, unit="batch", leave=False, file=sys.stderr, disable=None)
        for start in starts:
            yield start, min(start + self.batch_size, rows)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class AttentionMethod(Attribution):
    """A method on a ViT's attention probabilities: the class token's row of a relevance matrix, on the patch grid.

    :func:`~logitshift.core.capture.attention` records every block's probabilities
    ``A_b`` (N×heads×L×L) during one forward pass (the input requires grad, so
    they are on the path to every score); :meth:`relevance` combines them into
    an N×L×L matrix ``R``, and the map is ``R[:, 0, skip:]`` (the class token's
    relevance to each patch token) reshaped to the patch grid. Needs a model
    whose first token is a class token (torchvision's ViT, timm's ViT/DeiT).
    """

    family = "attention"

    def relevance(self, p: Pass, probs: list[torch.Tensor], target: torch.Tensor, score: str, variant: str) -> torch.Tensor:
        """The N×L×L relevance from the blocks' probabilities (in call order)."""
        raise NotImplementedError

    def maps(self, model, x, target, score="logit", variant="original", layer=None):
        base = model.base if isinstance(model, Heads) else model
        with attention(base) as probs:
            p = forward_pass(model, x, input_grad=True)
        tokens = probs[0].shape[-1]
        layout = token_grid((1, tokens, 1), x.shape[-2:])
        if layout is None or layout.skip == 0 or layout.channels_last:
            raise LogitShiftError(
                f"method {self.name!r}: {tokens} tokens are not a class token plus a patch grid; it needs a ViT with a class token"
            )
        rel = self.relevance(p, probs, as_targets(target, x.shape[0], x.device), score, variant)
        return rel[:, 0, layout.skip :].detach().reshape(x.shape[0], layout.h, layout.w)


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
