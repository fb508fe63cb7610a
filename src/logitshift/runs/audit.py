"""``logitshift audit``: a config in, the audited result out (audit.json, audit.png); nothing printed."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audit.load import load_target
from ..audit.measure import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_LAYERS,
    DEFAULT_PROBES,
    THRESHOLD,
    TOLERANCE,
    candidate_layers,
)
from ..audit.verdict import AuditResult, audit_model
from ..core.errors import LogitShiftError
from ..core.images import Item, collect_images

# ----------------------------------------------------------------------------- figure


def _short(name: str) -> str:
    """A layer name short enough for a figure label: ``base.`` dropped, ``blocks.9._dw.pad`` → ``blocks.9…pad``."""
    parts = name.removeprefix("base.").split(".")
    return f"{parts[0]}.{parts[1]}…{parts[-1]}" if len(parts) > 3 else ".".join(parts)


def figure(result: AuditResult, path: str | Path) -> Path:
    """Where the shift acts: κ per layer, the bypass fraction per layer, and the per-cell κ of each layer."""
    from matplotlib.colors import LogNorm

    from ..view.figures import _plt
    from ..core.files import atomic_write

    plt = _plt()
    spatial = [e for e in result.evidence if e.cells]
    cols = max(len(spatial), 1)
    structural = result.head is not None
    ratios = [1.0, 0.8, 1.1] if structural else [1.0, 1.1]
    fig = plt.figure(figsize=(max(2.0 * cols, 7.0), 6.6 + 2.6 * structural), dpi=100)
    grid = fig.add_gridspec(len(ratios), cols, height_ratios=ratios, hspace=0.8, left=0.09, right=0.9, bottom=0.04, top=0.93)
    labels = [e.layer for e in result.evidence]
    ticks = [_short(n) for n in labels]
    ax = fig.add_subplot(grid[0, :])
    values = [max(e.kappa_max, 1e-3) for e in result.evidence]
    ax.bar(range(len(values)), values, color=["tab:red" if v > result.threshold else "tab:blue" for v in values])
    ax.axhline(result.threshold, color="k", ls="--", lw=1, label=f"threshold κ = {result.threshold:g}")
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="κ = 1 (exchangeable classes)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(ticks, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("κ (max over images)")
    ax.set_title(f"verdict: {result.verdict}  (score {result.score:.3g}, evidence at {result.where})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    if structural:
        floor = 1e-12
        axb = fig.add_subplot(grid[1, :])
        fractions = [max(max(e.bypass), floor) for e in result.evidence]
        axb.bar(
            range(len(fractions)),
            fractions,
            color=["tab:red" if e.bypass_ratio(result.threshold) > 1 else "tab:blue" for e in result.evidence],
        )
        axb.axhline(TOLERANCE, color="k", ls="--", lw=1, label=f"tolerance {TOLERANCE:g}")
        axb.set_yscale("log")
        axb.set_ylim(floor / 2, 2.0)
        axb.set_xticks(range(len(labels)))
        axb.set_xticklabels(ticks, rotation=20, ha="right", fontsize=7)
        axb.set_ylabel("bypass fraction")
        axb.set_title(
            f"common-mode gradient that does not flow through the classifier input ({result.head.layer if result.head else ''}); honest: 0",
            fontsize=8,
        )
        axb.legend(fontsize=7, loc="upper right")
    norm = LogNorm(vmin=0.1, vmax=max(100.0, result.kappa))
    for i, e in enumerate(spatial):
        axh = fig.add_subplot(grid[-1, i])
        im = axh.imshow(np.clip(np.asarray(e.cells), 0.1, None), cmap="magma", norm=norm)
        axh.set_title(f"{_short(e.layer)}\n{e.shape[1]}×{e.shape[2]}  κ={e.kappa_max:.2g}", fontsize=7)
        axh.set_axis_off()
    if spatial:
        cax = fig.add_axes([0.92, 0.05, 0.012, 0.22])
        fig.colorbar(im, cax=cax, label="κ per cell")
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- the audit command


@dataclass(kw_only=True)
class AuditConfig:
    """What ``logitshift audit`` audits: a model name (with optional ``weights``) or a model file, on ``images``.

    The command runs a model file or a weights file in a limited child process
    (:mod:`logitshift.audit.sandbox`) before it calls :func:`run_audit`."""

    model: str
    weights: str | None = None
    images: list[str] = field(default_factory=list)  # files, folders, @lists, samples (empty: the four samples)
    max_images: int = DEFAULT_MAX_IMAGES
    layers: list[str] | None = None  # None: up to max_layers spatial layers
    max_layers: int = DEFAULT_MAX_LAYERS
    probes: int = DEFAULT_PROBES
    threshold: float = THRESHOLD
    size: int | None = None  # input size for a model file
    out: str | None = None  # folder for audit.json and audit.png
    force: bool = False
    progress: bool = True
    device: str = "auto"
    strict: bool = False  # exit 1 whenever a logit map differs from its centered-logit map (audit_model's strict)
    methods: list[str] | None = None  # the method families that count (None: all)


@dataclass
class Audited:
    """An audit's result and the folder its files went to (None: nothing written)."""

    result: AuditResult
    out: Path | None


def pick_items(specs: Sequence[str], limit: int) -> list[Item]:
    """Files, folders (searched recursively), ``@list`` files and sample names (:func:`~logitshift.core.images.collect_images`);
    at most ``limit``, evenly spread over the sorted list (the head test compares images, so variety helps)."""
    items, _ = collect_images(specs)  # refuses a list that names no image at all
    if len(items) > limit:
        items = [items[i] for i in np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))]
        sys.stderr.write(f"logitshift audit: using {len(items)} of the images, evenly spread (--max-images)\n")
    return items


def run_audit(cfg: AuditConfig) -> Audited:
    """Audit ``cfg.model`` on ``cfg.images``; write audit.json and audit.png into ``cfg.out`` when given."""
    from dataclasses import replace

    from ..core.device import resolve_device
    from ..core.files import provenance, run_dir
    from ..core.images import DEFAULT_SAMPLES, batch, load_image
    from ..runs.records import AuditRecord

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    out = run_dir(cfg.out, cfg.force, marker="audit.json") if cfg.out else None
    module, pre, hookable, name = load_target(cfg.model, cfg.weights)
    if cfg.size:
        pre = replace(pre, size=cfg.size, resize=max(cfg.size, pre.resize * cfg.size // pre.size))
    items = pick_items(cfg.images or DEFAULT_SAMPLES, cfg.max_images)
    images = [replace(load_image(item.spec, pre), name=item.name) for item in items]
    x = batch(images)
    if cfg.layers is not None:
        layers = cfg.layers
    elif hookable:
        layers = candidate_layers(module, x, cfg.max_layers)
        if not layers:
            raise LogitShiftError(
                f"model {cfg.model!r}: no layer outputs a spatial feature map (N×C×H×W); the audit needs a convolutional classifier"
            )
    else:
        layers = []
        sys.stderr.write(f"logitshift audit: {name} is TorchScript, whose layers cannot be hooked: auditing the input gradient only\n")
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    module.to(device)
    result = audit_model(
        module,
        x.to(device, dtype),
        layers,
        cfg.threshold,
        cfg.probes,
        image_names=[im.name for im in images],
        progress=cfg.progress,
        strict=cfg.strict,
        methods=cfg.methods,
    )
    if out is not None:
        figure(result, out / "audit.png")
        summary = {"command": "audit", "model": cfg.model, **result.to_json(), "seconds": round(time.perf_counter() - start, 2)}
        AuditRecord.from_json(_finite({**summary, **provenance()}), "audit summary").write(out)
    return Audited(result, out)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
