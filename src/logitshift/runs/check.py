"""``logitshift check``: does an explainer survive a logit shift? (:func:`run_check` over :mod:`logitshift.conformance`).

Each explainer is run on the model and on shifted twins built to steer its
kind; each cell's verdict is immune, fooled (steered into the target) or moved.
Exit codes of the command: 0 every cell measured is immune, 1 any is fooled or moved, 2 an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..conformance import (
    Cell,
    adapter_explainers,
    adapters,  # noqa: F401  (fills ADAPTERS)
    check,
    context,
    exit_code,
    finding,
)
from ..conformance.adapters.builtin import builtin_explainer
from ..conformance.explainer import ADAPTERS, MissingLibrary, user_explainer
from ..conformance.table import markdown
from ..core.errors import LogitShiftError
from ..core.files import atomic_write, provenance, run_dir, write_json
from ..core.images import batch, load_images
from ..core.models import DEFAULT_MODEL, load_model
from ..core.names import DEFAULT_STEPS
from ..core.tabular import TabularModel, load_rows

MAP_KINDS = ("gradient", "cam", "perturbation", "propagation")


@dataclass(kw_only=True)
class CheckConfig:
    """What ``logitshift check`` runs: explainers (built-in ``gradcam@centered``, ``LIBRARY/METHOD[@TARGET]``,
    or ``package.module:function``) and whole adapter libraries, on one model and image set."""

    explainers: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)  # adapter names, or "all"
    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_weights: bool = False  # a torchvision / timm model with random weights
    num_classes: int | None = None
    class_names: str | None = None
    layer: str | None = None
    images: list[str] = field(default_factory=lambda: ["chelsea"])
    rows: str = "test:64"  # a tabular model's inputs: a CSV file of raw rows, or test / test:N (the held-out rows)
    target: str = "top-left"
    kinds: list[str] | None = None  # twins to use (None: the explainer's kind; every map kind for a user function)
    samples: int = DEFAULT_STEPS  # samples / steps of sampling methods
    strength: float | None = None
    tolerance: float = 1e-5
    out: str | None = None
    force: bool = False
    progress: bool = True
    command_line: str = "logitshift check"
    lm: str | None = None  # a causal language model (fortunes-gpt, a HF folder, gpt2/llama with random_weights): LM adapters
    prompts: int = 4  # LM: held-out prompts
    length: int = 16  # LM: tokens per prompt


@dataclass
class Checked:
    """The cells of a check, its exit code and the folder written (if any)."""

    cells: list[Cell]
    code: int
    out: str | None

    @property
    def finding(self) -> str:
        return finding(self.cells)


def run_lm_check(cfg: CheckConfig) -> Checked:
    """The language-model check (:mod:`logitshift.conformance.lm`): every explainer of ``cfg.libraries`` (default:
    logitshift's own) on ``cfg.lm`` and its token / unembedding / centred twins, on held-out prompts."""
    from ..conformance.lm import LM_ADAPTERS, check_lm, lm_context, lm_explainers
    from ..core.lm import held_out_prompts, load_lm

    if cfg.explainers:
        raise LogitShiftError("--lm: name whole libraries with --library (" + ", ".join(LM_ADAPTERS) + "), not EXPLAINERs")
    out = run_dir(cfg.out, cfg.force, marker="check.json") if cfg.out else None
    libraries = list(LM_ADAPTERS) if "all" in cfg.libraries else list(cfg.libraries or ["logitshift"])
    lm = load_lm(cfg.lm or "", cfg.random_weights)
    ctx = lm_context(lm, held_out_prompts(lm, cfg.prompts, cfg.length), steps=cfg.samples, samples=cfg.samples)
    explainers, missing = [], []
    for lib in libraries:
        try:
            explainers += lm_explainers([lib], ctx)
        except MissingLibrary as exc:
            if len(libraries) == 1:
                raise
            missing.append(Cell(lib, "*", "*", "", "n/a", reason=str(exc)))
    cells = check_lm(ctx, explainers, cfg.strength, cfg.tolerance) + missing
    if out is not None:
        record = {"command_line": cfg.command_line, "model": lm.name, "random_weights": bool(cfg.random_weights), "finding": finding(cells)}
        write_json(out / "check.json", {**record, "cells": [c.as_dict() for c in cells], **provenance()})
        atomic_write(out / "check.md", markdown(f"logitshift check — {lm.name}", cells))
    return Checked(cells, exit_code(cells), str(out) if out is not None else None)


def run_check(cfg: CheckConfig) -> Checked:
    """Check every named explainer against its shifted twins; write check.json and check.md into ``cfg.out``."""
    if cfg.lm is not None:
        return run_lm_check(cfg)
    if not cfg.explainers and not cfg.libraries:
        raise LogitShiftError("name at least one EXPLAINER or --library (see logitshift check --help)")
    out = run_dir(cfg.out, cfg.force, marker="check.json") if cfg.out else None
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names, random_weights=cfg.random_weights)
    if cfg.layer:
        loaded.layer = cfg.layer
    x = (
        load_rows(cfg.rows, loaded.data)[0]
        if isinstance(loaded, TabularModel) and loaded.data
        else batch(load_images(cfg.images, loaded.preprocess))
    )
    ctx, memo = context(loaded, x, cfg.target, samples=cfg.samples)

    libraries = list(ADAPTERS) if "all" in cfg.libraries else list(cfg.libraries)
    explainers, missing = adapter_explainers(libraries, ctx) if libraries else ([], [])
    user = []
    for spec in cfg.explainers:
        if ":" in spec and "/" not in spec:
            user.append(user_explainer(spec))
        elif "/" in spec:
            lib, _, rest = spec.partition("/")
            method, _, target = rest.partition("@")
            found, _ = adapter_explainers([lib], ctx)
            chosen = [e for e in found if e.method == method and (not target or e.target == target)]
            if not chosen:
                known = sorted({e.method for e in found})
                raise LogitShiftError(f"explainer {spec!r}: no such method/target in {lib}; methods: {', '.join(known)}")
            explainers += chosen
        else:
            explainers.append(builtin_explainer(spec, ctx))

    def cells_of(found: list, kinds: list[str] | None) -> list[Cell]:
        return check(
            loaded, x, found, ctx.target, memo=memo, kinds=kinds, tolerance=cfg.tolerance, strength=cfg.strength, progress=cfg.progress
        )

    cells = cells_of(explainers, cfg.kinds) if explainers else []
    for e in user:
        cells += cells_of([e], cfg.kinds or list(MAP_KINDS))
    cells += missing
    if out is not None:
        record = {
            "command_line": cfg.command_line,
            "model": loaded.name,
            "random_weights": bool(cfg.random_weights),
            **({"rows": cfg.rows, "features": list(ctx.features)} if ctx.features else {"images": list(cfg.images)}),
            "target": ctx.target.spec,
            "finding": finding(cells),
            "cells": [c.as_dict() for c in cells],
            **provenance(),
        }
        if ctx.features and explainers:
            record["figure"] = _tabular_figure(out, loaded, x, explainers[0], ctx, memo, cfg)
        write_json(out / "check.json", record)
        atomic_write(out / "check.md", markdown(f"logitshift check — {loaded.name}", cells))
    return Checked(cells, exit_code(cells), str(out) if out is not None else None)


def _tabular_figure(out, loaded, x, e, ctx, memo, cfg: CheckConfig) -> str:
    """attributions.png: the first explainer's attributions of the model and of its twin, SHAP's bar and beeswarm views."""
    import torch

    from ..conformance.cells import run_explainer
    from ..shift.twins import twin
    from ..view.figures import tabular_figure

    with torch.no_grad():
        classes = memo(x).argmax(1)
    tw = twin(memo, (cfg.kinds or [e.kind])[0], ctx.target, x, None, cfg.strength, cfg.tolerance)
    honest, shifted = run_explainer(e, memo, x, classes, memo)[:, 0], run_explainer(e, tw, x, classes, memo)[:, 0]
    acc = getattr(loaded, "accuracy", 0.0)
    title = (
        f"{e.name} on {loaded.name} (test accuracy {acc:.3f}), {len(x)} rows; twin {tw.construction}, max |Δp| {tw.max_abs_prob_diff:.1e}"
    )
    return str(tabular_figure(out / "attributions.png", ctx.features, honest, shifted, x, ctx.target.mask, title))


__all__ = ["MAP_KINDS", "CheckConfig", "Checked", "run_check", "run_lm_check"]
