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
from ..core.models import DEFAULT_MODEL, load_model, torchvision_model

MAP_KINDS = ("gradient", "cam", "perturbation", "propagation")


@dataclass(kw_only=True)
class CheckConfig:
    """What ``logitshift check`` runs: explainers (built-in ``gradcam@centered``, ``LIBRARY/METHOD[@TARGET]``,
    or ``package.module:function``) and whole adapter libraries, on one model and image set."""

    explainers: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)  # adapter names, or "all"
    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_weights: bool = False  # a torchvision model with random weights
    layer: str | None = None
    images: list[str] = field(default_factory=lambda: ["chelsea"])
    target: str = "top-left"
    kinds: list[str] | None = None  # twins to use (None: the explainer's kind; every map kind for a user function)
    samples: int = 8  # samples / steps of sampling methods
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
    loaded = torchvision_model(cfg.model, cfg.weights, random_init=True) if cfg.random_weights else load_model(cfg.model, cfg.weights)
    if cfg.layer:
        loaded.layer = cfg.layer
    x = batch(load_images(cfg.images, loaded.preprocess))
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
            "images": list(cfg.images),
            "target": cfg.target,
            "finding": finding(cells),
            "cells": [c.as_dict() for c in cells],
            **provenance(),
        }
        write_json(out / "check.json", record)
        atomic_write(out / "check.md", markdown(f"logitshift check — {loaded.name}", cells))
    return Checked(cells, exit_code(cells), str(out) if out is not None else None)


__all__ = ["MAP_KINDS", "CheckConfig", "Checked", "run_check", "run_lm_check"]
