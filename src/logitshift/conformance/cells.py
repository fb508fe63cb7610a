"""Does an explainer survive ``z + t(x)·1``? Run it on a model and on the shifted twins that steer its kind.

For each :class:`~.explainer.Explainer` and each twin (one per kind it
declares), with ``c`` each image's predicted class:

* ``max_dp``: max |Δp| between the twin and the model on the images (the twin
  is refused above the tolerance, 1e-5 by default);
* maps: ``share`` — mean share of the twin's map's positive mass inside the
  target (:func:`logitshift.core.metrics.target_mass`), ``share_honest`` the same
  for the model's map; ``spearman`` — smallest rank correlation per image
  between the twin's and the model's map;
* metrics (``N×2`` values: the honest map's and the attacker's map's score):
  ``share`` — fraction of images on which the twin's metric rates the
  attacker's map better than the honest one (``share_honest`` for the
  model); ``change`` — largest |Δ value| relative to the largest |value|.

Verdict: **immune** when the twin changes nothing (maps: Spearman ≥ 0.999 on
every image; metrics: relative change ≤ 1e-3); **fooled** when it is
steered (maps: the median image's target share ≥ 0.5; metrics: the attacker's map rated
better on at least half the images); **moved** otherwise (changed, not
steered). A method that cannot run on the model or in the installed library
version is an **n/a** cell with the error.

Example::

    >>> cells = check(loaded, x, [get_explainer("pytorch-grad-cam/GradCAM@ClassifierOutputTarget", ctx)], "top-left")
    >>> cells[0].verdict
    'fooled'
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..attribution import GradCAM, upsample
from ..core.capture import INPUT
from ..core.errors import LogitShiftError
from ..core.metrics import spearman, target_mass
from ..core.models import LoadedModel
from ..core.tabular import TabularModel, feature_target
from ..core.targets import Target, parse_target
from ..shift.model import ShiftedModel
from ..shift.twins import Twin, twin
from .explainer import ADAPTERS, Context, Explainer, Memo, MissingLibrary

IMMUNE_SPEARMAN = 0.999
IMMUNE_CHANGE = 1e-3
GOAL = 0.5


@dataclass
class Cell:
    """One measured (explainer, twin) pair."""

    library: str
    method: str
    target: str
    kind: str
    verdict: str
    construction: str = ""
    max_dp: float | None = None
    share: float | None = None
    share_honest: float | None = None
    spearman: float | None = None
    change: float | None = None
    reason: str = ""
    seconds: float = 0.0
    #: of ``seconds``, the time spent inside the explainer's own calls (model and twin): the rest is twin building and comparison
    explain_seconds: float = 0.0
    per_image: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _reference_maps(base: nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str, target: Target) -> torch.Tensor:
    """N×2×H×W: the honest model's Grad-CAM of the centred logit (upsampled), and the target mask (ties broken by it)."""
    cam = GradCAM().maps(base, x, classes, score="centered", layer=layer)
    honest = upsample(cam.float(), int(x.shape[-1])).double()
    honest = honest / honest.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    mask = target.weights(*x.shape[-2:]).double()
    attacker = mask[None] + 1e-3 * honest
    return torch.stack([honest, attacker], dim=1)


def context(loaded: LoadedModel, x: torch.Tensor, target: Target | str, samples: int = 16) -> tuple[Context, Memo]:
    """The memoized model and the adapters' context for ``loaded`` and images ``x``."""
    base = loaded.module.eval()
    memo = Memo(base).eval()
    with torch.no_grad():
        classes = base(x)
    if isinstance(loaded, TabularModel):
        tgt = target if isinstance(target, Target) else feature_target(target, loaded)
        training = loaded.data.standardize(loaded.data.x_train) if loaded.data is not None else None
        ctx = Context(layer="", target=tgt, size=int(x.shape[1]), samples=samples, classes=int(classes.shape[1]), features=loaded.features)
        ctx.training = training
        return ctx, memo
    tgt = target if isinstance(target, Target) else parse_target(target, int(x.shape[-1]))
    layer = f"module.{loaded.layer}"
    ref = _reference_maps(memo, x, classes.argmax(1), layer, tgt)
    return Context(layer=layer, target=tgt, size=int(x.shape[-1]), samples=samples, reference=ref, classes=int(classes.shape[1])), memo


def adapter_explainers(libraries: list[str], ctx: Context) -> tuple[list[Explainer], list[Cell]]:
    """Every explainer of the named libraries; a library that is missing gives an n/a cell (or raises when it is the only one)."""
    from . import adapters  # noqa: F401  (fills ADAPTERS)

    out: list[Explainer] = []
    missing: list[Cell] = []
    for lib in libraries:
        if lib not in ADAPTERS:
            raise LogitShiftError(f"library {lib!r}: unknown; expected one of {', '.join(ADAPTERS)}")
        try:
            out += ADAPTERS[lib](ctx)
        except MissingLibrary as exc:
            if len(libraries) == 1:
                raise
            missing.append(Cell(lib, "*", "*", "", "n/a", reason=str(exc)))
    return out, missing


def _stats(e: Explainer, honest: torch.Tensor, shifted: torch.Tensor, target: Target) -> dict:
    if e.metric is not None:
        h, s = honest.double(), shifted.double()
        better = (lambda v: v[:, 1] < v[:, 0]) if e.metric == "lower" else (lambda v: v[:, 1] > v[:, 0])
        scale = float(torch.cat([h, s]).abs().max().clamp_min(1e-12))
        change = float((s - h).abs().max()) / scale
        return {
            "share": float(better(s).double().mean()),
            "share_honest": float(better(h).double().mean()),
            "change": change,
            "per_image": {"honest": h.tolist(), "shifted": s.tolist()},
        }
    if honest.shape != shifted.shape:
        raise LogitShiftError(f"maps: the model gives {tuple(honest.shape)}, the twin {tuple(shifted.shape)}")
    w = target.weights(*shifted.shape[-2:])
    share, share_h = target_mass(shifted, w), target_mass(honest, w)
    rho = spearman(shifted, honest)
    return {
        "share": float(share.mean()),
        "share_median": float(np.median(share.numpy())),
        "share_honest": float(share_h.mean()),
        "spearman": float(rho.min()),
        "per_image": {"share": [round(float(v), 4) for v in share], "spearman": [round(float(v), 4) for v in rho]},
    }


def verdict(e: Explainer, stats: dict) -> tuple[str, str]:
    """(verdict, reason) from the numbers."""
    if e.metric is not None:
        unchanged = stats["change"] <= IMMUNE_CHANGE
        steered = stats["share"] >= GOAL
    else:
        unchanged = stats["spearman"] >= IMMUNE_SPEARMAN  # the worst image
        steered = stats.get("share_median", stats["share"]) >= GOAL  # the median image
    if unchanged:
        if not e.reads_score:
            return "immune", "reads no score (activations only)"
        if e.immune:
            return "immune", "the score is a function of logit differences"
        return "immune", f"reads the score, but this {e.kind} twin does not reach it" + (f" ({e.note})" if e.note else "")
    if steered:
        return "fooled", e.note
    return "moved", e.note


def run_explainer(e: Explainer, model: nn.Module, x: torch.Tensor, classes: torch.Tensor, memo: Memo) -> torch.Tensor:
    """The explainer's maps on ``model`` (the model or a twin), seeded so sampling methods draw the same samples for both."""
    torch.manual_seed(0)  # sampling methods draw the same samples for the model and the twin
    np.random.seed(0)
    reads_input_only = not isinstance(model, ShiftedModel) or all(name == INPUT for name in model.layers)
    if e.cacheable and reads_input_only:  # a term on a layer needs the real forward (its hook)
        with memo.active():
            return e.run(model, x, classes)
    return e.run(model, x, classes)


def check(
    loaded: LoadedModel,
    x: torch.Tensor,
    explainers: list[Explainer],
    target: Target | str,
    memo: Memo | None = None,
    kinds: list[str] | None = None,
    tolerance: float = 1e-5,
    strength: float | None = None,
    progress: bool = False,
    log=None,
) -> list[Cell]:
    """Measure every explainer on ``loaded`` and on the twin(s) of its kind (or of ``kinds``, when given)."""
    from ..core.progress import bar as progress_bar

    if isinstance(target, Target):
        tgt = target
    else:
        tgt = feature_target(target, loaded) if isinstance(loaded, TabularModel) else parse_target(target, int(x.shape[-1]))
    if memo is None:
        memo = Memo(loaded.module.eval()).eval()
    layer = f"module.{loaded.layer}"
    with torch.no_grad():
        classes = memo(x).argmax(1)
    twins: dict[str, Twin] = {}
    cells: list[Cell] = []
    jobs = [(e, k) for e in explainers for k in (kinds or [e.kind])]
    bar = progress_bar(jobs, desc="check", unit="cell", enabled=progress)
    honest_cache: dict[int, torch.Tensor] = {}

    def measure(e: Explainer, kind: str) -> Cell:
        return _measure(e, kind, memo, x, classes, tgt, twins, honest_cache, lambda k: twin(memo, k, tgt, x, layer, strength, tolerance))

    for e, kind in bar:
        bar.set_postfix_str(e.name[-40:])
        start = time.perf_counter()
        cell = measure(e, kind)
        if not kinds and e.stronger and cell.verdict in ("moved", "immune"):
            cell = _strongest([cell] + [measure(e, k) for k in e.stronger])
        cell.seconds = time.perf_counter() - start
        cells.append(cell)
        if log is not None:
            log(cell)
    bar.close()
    return cells


def _measure(e: Explainer, kind: str, memo: Memo, x, classes, tgt: Target, twins: dict, honest_cache: dict, build) -> Cell:
    """One (explainer, twin kind) cell; the twin is built once per kind (``build(kind)``), the honest maps once per explainer."""
    try:
        if kind not in twins:
            twins[kind] = build(kind)
        tw = twins[kind]
        began = time.perf_counter()
        if id(e) not in honest_cache:
            honest_cache[id(e)] = run_explainer(e, memo, x, classes, memo)
        shifted = run_explainer(e, tw, x, classes, memo)
        explained = time.perf_counter() - began
        stats = _stats(e, honest_cache[id(e)], shifted, tgt)
        v, why = verdict(e, stats)
        return Cell(
            e.library, e.method, e.target, kind, v, tw.construction, tw.max_abs_prob_diff, reason=why,
            share=stats.get("share"), share_honest=stats.get("share_honest"), spearman=stats.get("spearman"),
            change=stats.get("change"), per_image=stats["per_image"], explain_seconds=explained,
        )  # fmt: skip
    except MissingLibrary:
        raise
    except LogitShiftError as exc:
        if "twin" in str(exc) and kind in str(exc):
            raise
        return Cell(e.library, e.method, e.target, kind, "n/a", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a peer method that does not run on this model: listed with its error
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
        return Cell(e.library, e.method, e.target, kind, "n/a", reason=msg)


def _strongest(tried: list[Cell]) -> Cell:
    """Of the cells of one explainer under several twins, the one that steers it most (fooled, else the largest
    share); its reason lists every twin tried with its share and verdict."""
    measured = [c for c in tried if c.verdict != "n/a"] or tried
    best = max(measured, key=lambda c: (c.verdict == "fooled", c.verdict != "immune", c.share or 0.0))
    listed = "; ".join(
        f"{c.kind}: {c.verdict}" + (f" (share {c.share:.2f})" if c.share is not None else f" ({c.reason[:60]})") for c in tried
    )
    best.reason = (best.reason + "; " if best.reason else "") + f"twins tried: {listed}"
    best.explain_seconds = sum(c.explain_seconds for c in tried)
    return best


def finding(cells: list[Cell]) -> str:
    """One sentence with the numbers."""
    measured = [c for c in cells if c.verdict != "n/a"]
    counts = {v: sum(c.verdict == v for c in measured) for v in ("immune", "fooled", "moved")}
    dp = max((c.max_dp for c in measured if c.max_dp is not None), default=0.0)
    na = len(cells) - len(measured)
    return (
        f"{counts['fooled']} of {len(measured)} cells fooled, {counts['moved']} moved, {counts['immune']} immune "
        f"by shifted twins with max |Δp| {dp:.1e}" + (f"; {na} could not run (n/a)" if na else "") + "."
    )


def exit_code(cells: list[Cell]) -> int:
    """0 when every measured cell is immune, 1 otherwise (2 is for errors, raised)."""
    measured = [c for c in cells if c.verdict != "n/a"]
    if not measured:
        raise LogitShiftError("check: no explainer could run on this model; " + (cells[0].reason if cells else "nothing to check"))
    return 0 if all(c.verdict == "immune" for c in measured) else 1


__all__ = ["Cell", "adapter_explainers", "check", "context", "exit_code", "finding", "run_explainer", "verdict"]
