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
    FRACTION_FLOOR,
    THRESHOLD,
    candidate_layers,
)
from ..audit.verdict import AuditResult, audit_model
from ..core.errors import LogitShiftError
from ..core.images import Item, collect_images
from ..core.names import DEFAULT_TOP_K

# ----------------------------------------------------------------------------- figure


def _short(name: str) -> str:
    """A layer name short enough for a figure label: ``base.`` dropped, ``blocks.9._dw.pad`` → ``blocks.9…pad``."""
    parts = name.removeprefix("base.").split(".")
    return f"{parts[0]}.{parts[1]}…{parts[-1]}" if len(parts) > 3 else ".".join(parts)


def worst_map(result: AuditResult, images: int):
    """The map whose logit version is farthest from its centered-logit version (flagged: the largest effect), on one
    of the first ``images`` rows (the images, not the method inputs): ``(method effect, image index)`` or None."""
    effects = result.effects.methods
    if not effects:
        return None
    key = (lambda m: m.effect) if result.shifted else (lambda m: max(m.immune[:images], default=0.0))
    m = max(effects, key=key)
    values = [max(a, b) for a, b in zip(m.structural[:images], m.size[:images])] if result.shifted else m.immune[:images]
    return m, int(np.argmax(values))


def map_pair(model, x: torch.Tensor, result: AuditResult, images: int):
    """``(label, logit map, centered-logit map)`` of :func:`worst_map` on its image (None without one)."""
    from ..attribution import get_method
    from ..audit.measure import INPUT

    found = worst_map(result, images)
    if found is None:
        return None
    m, i = found
    classes = result.context.explained[i] if result.context and result.context.explained else [0]
    target = torch.tensor([classes[min(m.rank, len(classes) - 1)]], device=x.device)
    method = get_method(m.method)
    layer = None if m.layer == INPUT else m.layer
    pair = [method.maps(model, x[i : i + 1], target, score=score, layer=layer)[0].detach().float().cpu() for score in ("logit", "centered")]
    return f"{m.label}, {result.images[i]}, class {int(target)}", pair[0], pair[1]


def figure(result: AuditResult, path: str | Path, pair=None) -> Path:
    """Where the shift acts: κ per layer, the bypass fraction per layer, and the per-cell κ of each layer; with
    ``pair`` (:func:`map_pair`), the worst map's logit version beside its centered-logit version."""
    from matplotlib.colors import LogNorm

    from ..core.files import atomic_write
    from ..view.figures import _plt

    plt = _plt()
    spatial = [e for e in result.evidence if e.cells]
    cols = max(len(spatial), 1)
    structural = result.head is not None
    ratios = ([1.0, 0.8, 1.1] if structural else [1.0, 1.1]) + ([1.3] if pair is not None else [])
    fig = plt.figure(figsize=(max(2.0 * cols, 7.0), 6.6 + 2.6 * structural + 3.0 * (pair is not None)), dpi=100)
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
        axb.axhline(FRACTION_FLOOR, color="k", ls="--", lw=1, label=f"tolerance {FRACTION_FLOOR:g}")
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
    heat_row = -2 if pair is not None else -1
    if pair is not None:
        label, logit_map, centered_map = pair
        half = max(cols // 2, 1)
        for j, (title, m) in enumerate((("logit map", logit_map), ("centered-logit map (shift-immune)", centered_map))):
            axm = fig.add_subplot(grid[-1, j * half : (j + 1) * half] if cols > 1 else grid[-1, 0])
            axm.imshow(m.numpy(), cmap="jet")
            axm.set_title(f"{title}\n{label}", fontsize=7)
            axm.set_axis_off()
            if cols == 1:
                break
    for i, e in enumerate(spatial):
        axh = fig.add_subplot(grid[heat_row, i])
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
    random_weights: bool = False  # a torchvision / timm architecture with random weights
    num_classes: int | None = None  # a fine-tuned head of this many classes
    class_names: str | None = None  # file naming the model's classes
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
    methods: list[str] | None = None  # the method families that count (None: all)
    classes: list[str] = field(default_factory=list)  # --class: explained on every image (names or indices)
    top_k: int = DEFAULT_TOP_K  # --top-k: each image's k most probable classes are explained (k ≥ 2 by default)
    labels: str | None = None  # --labels: a file with each image's true label, explained too


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
    module, pre, hookable, name = load_target(
        cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names, random_weights=cfg.random_weights
    )
    if cfg.size:
        pre = replace(pre, size=cfg.size, resize=max(cfg.size, pre.resize * cfg.size // pre.size))
    items = pick_items(cfg.images or DEFAULT_SAMPLES, cfg.max_images)
    images, bad, good = [], [], []
    for item in items:  # the policy of every command (as evaluate): an unreadable input is skipped and named, the rest audited
        try:
            images.append(replace(load_image(item.spec, pre), name=item.name))
            good.append(item)
        except LogitShiftError as exc:
            bad.append(f"{Path(str(item.spec)).name} ({str(exc).split(': ', 1)[-1].split(' (')[0][:60]})")
    if bad:
        sys.stderr.write(f"logitshift audit: skipped {len(bad)} of {len(items)} images: {'; '.join(bad)}\n")
    if not images:
        raise LogitShiftError(f"--images: none of the {len(items)} images can be read")
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    module.to(device)
    x = batch(images).to(device, dtype)
    before = image_logits(module, x, cfg.model)  # the model's first calls: compared with a call at the end
    explain = explained(cfg, good, before.float())
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
    result = audit_model(
        module,
        x,
        layers,
        cfg.threshold,
        cfg.probes,
        image_names=[im.name for im in images],
        progress=cfg.progress,
        methods=cfg.methods,
        explain=explain,
    )
    same_after(module, x, before, cfg.model)
    if not math.isfinite(result.score):
        raise LogitShiftError(f"model {cfg.model!r}: a statistic of the audit is not finite (score {result.score}); nothing concluded")
    if out is not None:
        figure(result, out / "audit.png", map_pair(module, x, result, len(images)))
        record = AuditRecord(model=cfg.model, **_finite(result.to_json()), seconds=round(time.perf_counter() - start, 2), **provenance())
        record.write(out)
    return Audited(result, out)


def image_logits(module: torch.nn.Module, x: torch.Tensor, model: str) -> torch.Tensor:
    """The logits of each image on its own (a file may take one image at a time), refused when the images or the
    logits are not finite, or the logits do not vary across the images
    (:func:`~logitshift.core.models.check_outputs`): nothing would be concluded."""
    from ..core.capture import as_logits
    from ..core.models import check_outputs

    with torch.no_grad():
        logits = torch.cat([as_logits(module(x[i : i + 1])) for i in range(len(x))])
    check_outputs(f"model {model!r}", x, logits, "; nothing concluded")
    return logits


#: how far the first image's logits may move between the start and the end of an audit (relative, as in
#: ``torch.allclose``: atol = rtol · (1 + max |z|)): float reductions in another order, never a changed model
RERUN_TOLERANCE = 1e-4


def same_after(module: torch.nn.Module, x: torch.Tensor, before: torch.Tensor, model: str) -> None:
    """Run the first image again at the end of the audit: a model whose outputs changed over the audit's calls
    (a counter in a buffer, running statistics) is refused, whatever the file check let through."""
    from ..core.capture import as_logits

    with torch.no_grad():
        again = as_logits(module(x[:1])).double()
    first = before[:1].double()
    scale = 1.0 + float(first.abs().max())
    moved = float((again - first).abs().max()) if again.shape == first.shape else math.inf
    if not moved <= RERUN_TOLERANCE * scale:
        raise LogitShiftError(
            f"model {model!r}: its logits on the first image changed during the audit (by {moved:.3g}): a model that changes "
            "from call to call; nothing concluded"
        )


def explained(cfg: AuditConfig, items: Sequence[Item], logits: torch.Tensor) -> torch.Tensor:
    """The classes explained per image (N×k indices), as demo and evaluate choose them: ``--labels`` (each image's
    label), then ``--class`` (the same for every image), then the ``--top-k`` most probable."""
    from ..core.classes import imagenet_classes, resolve_class
    from ..core.labels import read_labels

    count = logits.shape[1]
    names = imagenet_classes() if count == 1000 else ()
    columns: list[torch.Tensor] = []
    if cfg.labels:
        labels = read_labels(cfg.labels, items, count, names)
        columns.append(torch.tensor([labels[it.key] for it in items]))
    for spec in dict.fromkeys(cfg.classes):
        columns.append(torch.full((len(items),), resolve_class(spec, count, names)))
    top = logits.topk(min(cfg.top_k, count), dim=1).indices
    columns += [top[:, r] for r in range(top.shape[1])]
    unique: list[torch.Tensor] = []
    for c in columns:  # a column equal to an earlier one on every image is measured once
        if not any(torch.equal(c, u) for u in unique):
            unique.append(c)
    return torch.stack(unique, dim=1)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
