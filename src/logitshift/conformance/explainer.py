"""What ``logitshift check`` runs: an :class:`Explainer`, and the registry of peer-library adapters.

An explainer is one (library, method, target/score) cell: a function
``run(model, x, classes) -> N×h×w maps`` (or, for a faithfulness metric,
``N×2`` values: the metric of the honest map and of the attacker's map, see
:class:`Context`). ``kind`` names the shifted twin built to steer it (see
:mod:`.constructions`); ``reads_score=False`` marks methods that read no
score (EigenCAM: activations only), immune whatever the twin.

Adapters live one file per peer library in :mod:`.adapters`; each is a
function ``explainers(ctx) -> list[Explainer]`` registered with
``@adapter("name")``. It imports its library *inside* the function, so
logitshift runs without any of them; a missing one raises
:class:`MissingLibrary` with a one-line message naming the package.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import LogitShiftError
from ..core.files import import_object
from ..core.targets import Target
from ..defend import ScoreWrapper
from ..shift.model import ShiftedModel

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class MissingLibrary(LogitShiftError):
    """A peer library an adapter needs is not installed."""


def need(module: str, package: str | None = None):
    """Import ``module`` or raise :class:`MissingLibrary` naming the PyPI package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingLibrary(f"{top} is not installed; pip install {package or top} to check its methods") from None


def absent(name: str, library: str) -> Run:
    """A stand-in for a method the installed ``library`` lacks: its cell records the error."""

    def run(model, x, classes):
        raise RuntimeError(f"{name} is not in the installed {library}")

    return run


@dataclass
class Explainer:
    """One cell of the conformance table."""

    library: str
    method: str
    target: str
    kind: str  # which twin steers it: see constructions.KINDS, "+"-joined for several
    run: Run
    reads_score: bool = True
    immune: bool = False  # the target/score is a function of logit differences only
    metric: str | None = None  # "lower" / "higher": a faithfulness metric and which value is better
    cacheable: bool = False  # runs many no-grad forwards on the unmodified model: memoize them
    note: str = ""
    #: further twin kinds tried when the first does not fool it (the cell keeps the strongest; its reason lists them all)
    stronger: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.library}/{self.method}@{self.target}"


@dataclass
class Context:
    """What an adapter needs to build its explainers.

    ``layer``: the CAM layer's name in the model; ``target``: the attacker's
    region; ``reference``: for metrics, ``N×2×H×W`` — the honest model's
    Grad-CAM (centred logit) and the attacker's map (the target mask, ties
    broken by the honest map), the two explanations every metric scores;
    ``samples``: budget for sampling methods (LIME/SHAP samples, IG steps).
    """

    layer: str
    target: Target
    size: int
    samples: int = 16
    reference: torch.Tensor | None = None
    classes: int = 1000
    extra: dict = field(default_factory=dict)
    #: a tabular model's feature names (inputs N×F, maps N×1×F); empty for images
    features: tuple[str, ...] = ()
    #: a tabular model's standardised training rows (LIME's training_data)
    training: torch.Tensor | None = None


def layer_of(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` in the classifier (through a twin or a score wrapper)."""
    while isinstance(model, (ShiftedModel, ScoreWrapper)):
        model = model.base if isinstance(model, ShiftedModel) else model.model
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LogitShiftError(f"layer {name!r}: not found in the model") from None


def maps_of(out) -> torch.Tensor:
    """A method's output (numpy or tensor, N×H×W or N×C×H×W; N×F feature attributions as N×1×F) as N×H×W float64 maps (channels summed)."""
    t = torch.as_tensor(out).detach().double().cpu()
    if t.dim() == 2:
        t = t[:, None]
    if t.dim() == 4:
        t = t.sum(dim=1)
    if t.dim() != 3:
        raise LogitShiftError(f"maps: shape {tuple(t.shape)}, expected N×H×W or N×C×H×W")
    return t


class Memo(nn.Module):
    """The classifier, with its no-grad outputs remembered by input content while :meth:`active`.

    Perturbation methods and metrics evaluate the same perturbed inputs for
    every target and for the honest model and its input-only twins (same
    trunk): remembering the trunk's logits makes every extra cell cost
    nothing. Only used with twins whose terms read the input alone.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.cache: dict[bytes, torch.Tensor] = {}
        self.on = False
        self.hits = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.on or torch.is_grad_enabled():
            return self.module(x)
        key = hashlib.blake2b(x.detach().contiguous().cpu().numpy().tobytes(), digest_size=16).digest() + str(tuple(x.shape)).encode()
        hit = self.cache.get(key)
        if hit is not None:
            self.hits += 1
            return hit.clone()
        z = self.module(x)
        self.cache[key] = z.detach().clone()
        return z


ADAPTERS: dict[str, Callable[[Context], list[Explainer]]] = {}


def adapter(name: str):
    """Register ``fn(ctx) -> list[Explainer]`` as the adapter of library ``name``."""

    def register(fn):
        ADAPTERS[name] = fn
        return fn

    return register


def user_explainer(spec: str, kind: str = "gradient") -> Explainer:
    """``pkg.module:fn`` with ``fn(model, x, classes) -> maps`` (N×H×W or N×C×H×W), imported because the user named it."""
    fn = import_object(spec, "explainer")  # the current folder searched too
    attr = spec.partition(":")[2]
    if not callable(fn):
        raise LogitShiftError(f"explainer {spec!r}: {attr!r} is {type(fn).__name__}, expected a function (model, x, classes) -> maps")
    return Explainer("user", spec, "own", kind, lambda model, x, c: maps_of(fn(model, x, c)))


__all__ = ["ADAPTERS", "Context", "Explainer", "Memo", "MissingLibrary", "adapter", "layer_of", "maps_of", "need", "user_explainer"]
