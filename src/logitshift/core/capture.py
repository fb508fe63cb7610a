"""The capture core: the one place that looks inside a model's forward pass.

Every explanation starts here. :func:`forward_pass` runs a classifier once
with its parameters frozen and keeps the activations of the layers asked for
as tensors that require grad, so a score can then be differentiated with
respect to any of them (:meth:`Pass.grad`) without making a parameter
gradient. A model with several heads on one trunk (the shifted model, see
:class:`Heads`) gives the logits of every head from that same pass.

Hooks live only in this module, and only as context managers
(:func:`hooked`, :func:`recorded`) or the one permanent output adapter
(:func:`add_output_adapter`). :func:`trace` is the one layer tracer (what
every module outputs on one probe input); ``models.default_layer``, the
audit's candidate layers and :func:`layer_grid` read it.

Transformers: a layer that holds an h×w grid of patches in another layout
(a ViT's N×L×C tokens with a class token first, a Swin stage's N×h×w×C) is
seen through its :class:`TokenGrid`, found from the output's shape and the
input's size (:func:`token_grid`). :func:`forward_pass` and :func:`gridded`
capture such a layer as the N×C×h×w grid itself (the module's output is
rebuilt from that grid, so the grid is on the path to the logits and its
gradient is the gradient of the tokens, reshaped); every CAM and every shift
term then works on it unchanged. :func:`attention` records the attention
probabilities of every attention module during a pass.

Nothing here knows a concrete model, method or shift: this module imports
only torch and :mod:`logitshift.core.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .errors import LogitShiftError
from .scores import score as score_fn

#: the layer name that means "the model's input tensor"
INPUT = "input"

#: a forward hook's callback: (module name, module, positional inputs, output) → None, or a replacement output
HookFn = Callable[[str, nn.Module, tuple, Any], Any]


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


@contextmanager
def hooked(modules: Iterable[tuple[str, nn.Module]], fn: HookFn, skip_unhookable: bool = False) -> Iterator[None]:
    """Call ``fn(name, module, inputs, output)`` after each named module's forward, for the duration.

    ``skip_unhookable``: pass over submodules that refuse hooks (TorchScript)
    instead of failing. The hooks are removed on exit, also on an error.
    """
    handles = []
    try:
        for name, module in modules:
            try:
                handles.append(module.register_forward_hook(lambda m, i, o, name=name: fn(name, m, i, o)))
            except Exception:
                if not skip_unhookable:
                    raise
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def recorded(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The outputs of the submodules ``names`` of ``model`` during the block, as ``{name: output}``."""
    outputs: dict[str, Any] = {}
    with hooked(((n, model.get_submodule(n)) for n in names), lambda name, _m, _i, out: outputs.__setitem__(name, out)):
        yield outputs


def add_output_adapter(module: nn.Module, adapt: Callable[[Any], torch.Tensor]) -> None:
    """Permanently replace ``module``'s output by ``adapt(output)`` (once per module).

    Used to turn tuples, dicts and HuggingFace-style output objects into the
    logits tensor while the module tree (the layer names users give) stays as it is.
    """
    if getattr(module, "_logitshift_logits_hook", False):
        return
    module.register_forward_hook(lambda _m, _i, out: adapt(out))
    setattr(module, "_logitshift_logits_hook", True)


def as_logits(out: object, what: str = "model output") -> torch.Tensor:
    """The N×C logits in a model's output.

    Accepted: a tensor; a tuple/list whose first item is one (torchvision's
    Inception aux outputs, many research models); a dict or an object with a
    ``logits`` entry (HuggingFace's ``ImageClassifierOutput``). Anything else is a
    one-line error naming what was found.
    """
    found = out
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    elif isinstance(out, dict):
        out = out.get("logits", out.get("logit"))
    elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        if isinstance(found, dict):
            desc = f"a dict with keys {', '.join(map(str, list(found)[:6]))}"
        elif isinstance(out, torch.Tensor):
            desc = f"a tensor of shape {tuple(out.shape)}"
        else:
            desc = type(found).__name__
        raise LogitShiftError(
            f"{what}: found {desc}; expected N×C logits (a tensor, a tuple whose first item is one, or a dict/object with 'logits')"
        )
    if not torch.is_floating_point(out):
        raise LogitShiftError(f"{what}: logits of dtype {out.dtype}; expected floating point")
    return out


def layer_name(module: nn.Module, layer: str | nn.Module) -> str:
    """The dotted name of ``layer`` in ``module`` (or its ``base``): a name is returned as is,
    a module object (as Captum and pytorch-grad-cam users pass it) is looked up by identity."""
    if isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        raise LogitShiftError(f"layer: expected a dotted module name or a torch.nn.Module, got {type(layer).__name__}")
    base = getattr(module, "base", module)
    for root in (base, module):
        for name, sub in root.named_modules():
            if sub is layer and name:
                return name
    raise LogitShiftError(f"layer {type(layer).__name__}: this module object is not part of the model")


def get_layer(module: nn.Module, name: str | nn.Module) -> nn.Module:
    """The submodule called ``name``; an unknown name lists the spatial layers."""
    name = layer_name(module, name)
    base = getattr(module, "base", module)
    for root in (module, base):
        try:
            return root.get_submodule(name)
        except AttributeError:
            continue
    try:
        candidates = spatial_layers(base)
    except LogitShiftError:
        candidates = [n for n, _ in base.named_modules() if n]
    shown = ", ".join(candidates[-8:])
    raise LogitShiftError(f"layer {name!r}: not a module of the model; spatial layers end with: {shown}")


def check_input(x: torch.Tensor, what: str = "input") -> torch.Tensor:
    """Refuse a batch that is not N×C×H×W floating point with finite values."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise LogitShiftError(f"{what}: expected a batch of images N×C×H×W, got {shape}")
    if not torch.is_floating_point(x):
        raise LogitShiftError(f"{what}: expected floating point values, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise LogitShiftError(f"{what}: {bad} NaN or infinite values; expected finite pixel values")
    return x


#: leading tokens a token sequence may carry before its patches (class, distillation and register tokens)
MAX_EXTRA_TOKENS = 8


@dataclass(frozen=True)
class TokenGrid:
    """How a transformer layer's output holds an h×w grid of patches, and the way to N×C×h×w and back.

    * tokens (``channels_last=False``): N×L×C with ``skip`` leading tokens
      (a ViT's class token) then the h·w patch tokens row by row;
      ``grid[n, c, i, j] = out[n, skip + i·w + j, c]``;
    * channels last (``channels_last=True``): N×h×w×C (a Swin stage);
      ``grid = out.permute(0, 3, 1, 2)``.

    The same reshaping is what pytorch-grad-cam's ``reshape_transform`` does
    for such a layer (its ViT and Swin tutorials); an exported file records
    these four numbers per layer so a user can build it (README).
    """

    h: int
    w: int
    skip: int = 0
    channels_last: bool = False

    def to_grid(self, out: torch.Tensor) -> torch.Tensor:
        """N×C×h×w from the layer's output."""
        if self.channels_last:
            return out.permute(0, 3, 1, 2)
        return out[:, self.skip :].transpose(1, 2).reshape(out.shape[0], out.shape[2], self.h, self.w)

    def from_grid(self, grid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The layer's output rebuilt from ``grid`` (the leading tokens taken from ``out``)."""
        if self.channels_last:
            return grid.permute(0, 2, 3, 1)
        tokens = grid.flatten(2).transpose(1, 2)
        return torch.cat([out[:, : self.skip], tokens], dim=1) if self.skip else tokens

    def to_json(self) -> dict:
        return {"h": self.h, "w": self.w, "skip": self.skip, "channels_last": self.channels_last}


def _aspect(a: int, b: int, size: Sequence[int]) -> bool:
    """An a×b grid has (within rounding of strides) the aspect ratio of an input of ``size`` (H, W)."""
    if a < 1 or b < 1:
        return False
    return abs(math.log((a / b) / (size[0] / size[1]))) < math.log(1.5)


def token_grid(shape: Sequence[int], size: Sequence[int]) -> TokenGrid | None:
    """The :class:`TokenGrid` of an output of ``shape`` for an input of spatial ``size`` (H, W); None for N×C×h×w or no grid.

    N×a×b×c is channels last when a×b, and not b×c, has the input's aspect
    ratio (so a CNN's N×C×H×W keeps its layout). N×L×C is a token sequence
    when, after the fewest leading tokens (at most :data:`MAX_EXTRA_TOKENS`),
    the rest form an h×w grid (h, w ≥ 2) with the input's aspect ratio.
    """
    rank = len(shape)
    dims = tuple(int(s) for s in shape[1:])  # never the batch size: torch.export keeps it symbolic
    if rank == 4:
        a, b, c = dims
        if not _aspect(b, c, size) and _aspect(a, b, size) and a * b > 1:
            return TokenGrid(a, b, 0, True)
        return None
    if rank != 3:
        return None
    tokens = dims[0]
    for skip in range(min(MAX_EXTRA_TOKENS, tokens - 4) + 1):
        n = tokens - skip
        h = max(1, round(math.sqrt(n * size[0] / size[1])))
        for hh in (h, h - 1, h + 1):
            if hh >= 2 and n % hh == 0 and n // hh >= 2 and _aspect(hh, n // hh, size):
                return TokenGrid(hh, n // hh, skip, False)
    return None


def as_grid(out: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A layer's output as an N×C×h×w grid (through its :class:`TokenGrid`, if it has one); anything else as it is."""
    layout = token_grid(out.shape, size) if isinstance(out, torch.Tensor) else None
    return layout.to_grid(out) if layout is not None else out


@contextmanager
def gridded(modules: Iterable[tuple[str, nn.Module]], size: Sequence[int], leaf: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """The named modules' outputs during the block as N×C×h×w grids that require grad, ``{name: grid}``.

    A grid is on the path to the logits: a token layer's output is rebuilt
    from it (:meth:`TokenGrid.from_grid`), an N×C×h×w output is the grid
    itself. A grid whose trunk has no gradient becomes a leaf, so a backward
    stops there (``leaf=False``: it is left without grad, so a caller can tell
    an output that does not depend on the input). A module that outputs no
    tensor is a one-line error.
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, _m: nn.Module, _i: tuple, out: Any) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor):
            raise LogitShiftError(f"layer {name!r}: outputs {type(out).__name__}, expected a tensor")
        layout = token_grid(out.shape, size) if out.is_floating_point() else None
        if layout is None:
            if leaf and not out.requires_grad and out.is_floating_point():
                out.requires_grad_(True)  # a leaf: the backward stops here
            captured[name] = out
            return None
        grid = layout.to_grid(out)
        if not grid.requires_grad and leaf:
            grid = grid.detach().requires_grad_(True)
        captured[name] = grid
        return layout.from_grid(grid, out)

    with hooked(modules, keep):
        yield captured


@dataclass(frozen=True)
class Output:
    """One module call seen by :func:`trace`."""

    name: str
    shape: tuple[int, ...]
    tensor: int  # index of the distinct output tensor: a container and its last child that return the same tensor share it
    varies: bool  # the output depends on the input (requires grad when the input does)
    layout: TokenGrid | None = None  # how a transformer layer holds its grid (None: N×C×H×W or no grid)

    @property
    def grid(self) -> tuple[int, int] | None:
        """The h×w grid the output holds (N×C×H×W, or through its :attr:`layout`); None for no grid."""
        if self.layout is not None:
            return self.layout.h, self.layout.w
        return (self.shape[2], self.shape[3]) if len(self.shape) == 4 else None

    @property
    def spatial(self) -> bool:
        """A grid with more than one cell: N×C×H×W, a ViT's tokens or a Swin stage's N×H×W×C."""
        return self.grid is not None and self.grid[0] * self.grid[1] > 1

    @property
    def depth(self) -> int:
        return self.name.count(".")


def first_line(exc: BaseException) -> str:
    """An exception as one short line (its message's first line, or its type)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def run_frozen(model: nn.Module, x: torch.Tensor, what: str = "forward pass") -> Any:
    """``model(x)`` with the graph to ``x`` but none to the parameters; a failure is one :class:`LogitShiftError` line."""
    try:
        with frozen(model), torch.enable_grad():
            return model(x)
    except LogitShiftError:
        raise
    except Exception as exc:
        raise LogitShiftError(f"model: {what} failed ({first_line(exc)})") from exc


def trace(model: nn.Module, x: torch.Tensor, what: str | None = None) -> list[Output]:
    """Every tensor output of every submodule on one probe ``x``, in the order the calls finish.

    The probe requires grad so :attr:`Output.varies` tells which outputs depend
    on the input; no parameter gradient is made. Submodules that refuse hooks
    are passed over. A failing forward pass is one :class:`LogitShiftError`.
    """
    seen: list[Output] = []
    keep: dict[int, int] = {}  # id(tensor) → index; the tensors are kept alive so ids stay unique
    alive: list[torch.Tensor] = []

    def note(name: str, _m: nn.Module, _i: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            if id(out) not in keep:
                keep[id(out)] = len(keep)
                alive.append(out)
            layout = token_grid(out.shape, x.shape[-2:]) if out.is_floating_point() else None
            seen.append(Output(name, tuple(out.shape), keep[id(out)], bool(out.requires_grad), layout))

    probe = x.detach().clone().requires_grad_(x.is_floating_point())
    with hooked(((n, m) for n, m in model.named_modules() if n), note, skip_unhookable=True):
        run_frozen(model, probe, what or f"a forward pass on a {'×'.join(map(str, probe.shape))} input")
    return seen


def spatial_outputs(model: nn.Module, size: int = 224) -> list[Output]:
    """The last call of each module whose output is a spatial map (N×C×H×W, H·W > 1, or a transformer's token grid),
    in the order those calls finish, on a 1×3×``size``×``size`` probe of zeros."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    probe = torch.zeros(1, 3, size, size, dtype=dtype, device=param.device if param is not None else None)
    last: dict[str, Output] = {}
    for out in trace(model, probe, what=f"a forward pass on a 1×3×{size}×{size} input"):
        if out.spatial:
            last.pop(out.name, None)
            last[out.name] = out
    return list(last.values())


def spatial_layers(module: nn.Module, size: int = 224) -> list[str]:
    """Names of the modules that output a spatial map (N×C×H×W, H·W > 1), in execution order."""
    return [out.name for out in spatial_outputs(module, size)]


def layer_grid(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int]:
    """The H×W grid of ``layer`` for inputs shaped like ``x`` (a transformer layer's through its :class:`TokenGrid`)."""
    with recorded(model, [layer]) as out, torch.no_grad():
        model(x[:1])
    found = out.get(layer)
    shape = tuple(as_grid(found, x.shape[-2:]).shape) if isinstance(found, torch.Tensor) else ()
    if len(shape) != 4:
        raise LogitShiftError(f"layer {layer!r}: outputs shape {shape}, expected a spatial map N×C×H×W or a transformer's token grid")
    return shape[2], shape[3]


def _mha_with_probs(module: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention``'s output recomputed from its own weights, and its attention probabilities N×heads×L×S.

    The module's fused kernels never expose probabilities that are on the path
    to the output (``need_weights`` returns a copy, averaged by default); this
    is the textbook computation, ``softmax(q kᵀ/√d) v`` per head, equal to the
    module's output to float round-off.
    """
    if not module.batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    n, length, embed = q.shape
    heads = module.num_heads
    d = embed // heads
    bias = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
    wq, wk, wv = module.in_proj_weight.chunk(3)
    qh = torch.nn.functional.linear(q, wq, bias[0]).view(n, length, heads, d).transpose(1, 2)
    kh = torch.nn.functional.linear(k, wk, bias[1]).view(n, k.shape[1], heads, d).transpose(1, 2)
    vh = torch.nn.functional.linear(v, wv, bias[2]).view(n, v.shape[1], heads, d).transpose(1, 2)
    probs = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(d), dim=-1)
    out = module.out_proj((probs @ vh).transpose(1, 2).reshape(n, length, embed))
    return (out if module.batch_first else out.transpose(0, 1)), probs


@contextmanager
def attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The attention probabilities (N×heads×L×L) of every global attention module, in call order, during the block.

    The probabilities are those on the path to the output, so a score can be
    differentiated with respect to them. Two kinds are understood:

    * ``torch.nn.MultiheadAttention`` (torchvision's ViT): its output is
      recomputed from its weights with the probabilities exposed
      (:func:`_mha_with_probs`; masks, ``bias_k`` and separate q/k/v weights
      are refused in one line);
    * timm's ``Attention`` (a module with ``fused_attn`` and ``attn_drop``): the
      fused kernel is switched off for the block and ``attn_drop``'s output (the
      probabilities, dropout being the identity in eval mode) is recorded.

    A model with neither (Swin's windowed attention, a CNN) is a one-line error.
    """
    probs: list[torch.Tensor] = []
    handles = []
    fused: list[tuple[nn.Module, Any]] = []

    def mha_hook(module: nn.Module, args: tuple, kwargs: dict, _out: Any) -> Any:
        q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args) :])[:3]
        if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
            raise LogitShiftError("attention: a masked nn.MultiheadAttention is not supported")
        out, p = _mha_with_probs(module, q, k, v)  # type: ignore[arg-type]
        probs.append(p)
        weights = None
        if kwargs.get("need_weights", True):
            weights = p.mean(dim=1) if kwargs.get("average_attn_weights", True) else p
        return out, weights

    try:
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
                    raise LogitShiftError(
                        "attention: nn.MultiheadAttention with separate q/k/v weights, bias_k or add_zero_attn is not supported"
                    )
                handles.append(module.register_forward_hook(mha_hook, with_kwargs=True))
            elif hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
                timm_attn: Any = module  # timm's Attention: its attributes are not typed here
                fused.append((module, timm_attn.fused_attn))
                timm_attn.fused_attn = False
                handles.append(timm_attn.attn_drop.register_forward_hook(lambda _m, _i, out: probs.append(out)))
        if not handles:
            raise LogitShiftError(
                f"attention: {type(model).__name__} has no global attention module (nn.MultiheadAttention or timm's Attention); "
                "attention explanations need a ViT-style model"
            )
        yield probs
    finally:
        for h in handles:
            h.remove()
        for module, flag in fused:
            setattr(module, "fused_attn", flag)  # noqa: B010 - an untyped timm attribute


def reaching(model: nn.Module, names: Sequence[str], size: int = 224) -> list[str]:
    """The layers among ``names`` whose grid the logits depend on, in the order given.

    On a seeded random 1×3×``size``×``size`` probe, a layer reaches the logits
    when the gradient of a random mix of them is not exactly zero on its grid.
    A ViT that classifies its class token gives its last block's patch tokens
    no gradient at all (only the class token goes on to the head), so a CAM there
    is all zeros for every class.
    """
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 3, size, size, generator=gen, dtype=dtype).to(param.device if param is not None else "cpu")
    p = forward_pass(model, probe, list(names))
    z = p.logits["original"]
    mix = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
    grads = torch.autograd.grad((z * mix).sum(), [p.acts[n] for n in names], allow_unused=True)
    return [n for n, g in zip(names, grads) if g is not None and bool(g.abs().amax() > 0)]


@runtime_checkable
class Heads(Protocol):
    """A model whose heads share one trunk: every head's logits come from one pass of :attr:`base`.

    :func:`forward_pass` captures the activations named by :attr:`layers`
    (plus :data:`INPUT`, the input itself) and asks :meth:`heads` for the
    extra heads' logits (``{"shifted": z'}`` for a
    :class:`~logitshift.shift.model.ShiftedModel`); the base's own logits are the
    ``"original"`` head.
    """

    base: nn.Module
    layers: list[str]

    def heads(self, logits: torch.Tensor, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@dataclass
class Pass:
    """The result of one forward pass: input, logits per variant (head), activations per layer."""

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


def forward_pass(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] = (),
    input_grad: bool = False,
    *,
    to_logits: Callable[[Any], torch.Tensor] | None = None,
) -> Pass:
    """Run ``model`` once on ``x`` and capture ``layers`` (names in the base classifier).

    Each captured activation requires grad (a leaf if the trunk below it has
    none), so :meth:`Pass.grad` stops there; a transformer layer is captured
    as its N×C×h×w grid (see :func:`gridded`). ``input_grad``: the input
    requires grad too (for input methods, or layer :data:`INPUT`).
    ``to_logits`` turns the model's output into N×C logits (default: :func:`as_logits`).
    """
    check_input(x)
    multi = model if isinstance(model, Heads) else None
    base = multi.base if multi is not None else model
    names = list(dict.fromkeys(list(layers) + (list(multi.layers) if multi is not None else [])))
    names = [n for n in names if n != INPUT]
    dtype = next((p.dtype for p in base.parameters() if p.is_floating_point()), x.dtype)
    x = x.detach().to(dtype).clone().requires_grad_(input_grad)  # a float64 / float16 model gets its own dtype
    with gridded([(n, get_layer(base, n)) for n in names], x.shape[-2:]) as captured, frozen(base), torch.enable_grad():
        z = (to_logits or as_logits)(base(x))
        logits = {"original": z}
        if multi is not None:
            logits.update(multi.heads(z, {INPUT: x, **captured}))
    return Pass(x, logits, {n: (x if n == INPUT else captured[n]) for n in layers})
