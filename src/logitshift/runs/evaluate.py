"""``logitshift evaluate``: explanations of an original and a shifted model over a dataset.

For every image, class (the top-1 class, plus any ``--class``), method, score
and model variant (``original`` / ``shifted``) one row of metrics is written:

* ``target_mass``: share of the map's positive mass inside the shift's target
  region, ``Σ ReLU(m)·w / Σ ReLU(m)`` (:func:`logitshift.core.metrics.target_mass`);
* ``spearman_vs_original``: rank correlation with the original model's map of
  the same class, method and score (1 on the original rows);
* ``max_abs_prob_diff``: ``max_j |softmax(z)_j − softmax(z')_j|`` for the image;
* ``prob``, ``top1``: the variant's probability of the class and its top-1.

How it runs: images are listed once (folders recursively, ``@list.txt`` /
``--list`` files, sample names) in a fixed order and cut into fixed batches of
``--batch-size``; a DataLoader decodes the next batches in worker processes
while :func:`logitshift.attribution.engine.explain` serves every requested map of a batch
from one forward pass. A file that cannot be read is recorded with its reason
and the run goes on. Each batch is committed to the results store in one
transaction (:mod:`logitshift.runs.store`, SQLite in WAL mode: why, there), so a
run killed at any moment resumes with ``--resume`` and ends with exactly one
row per item. Under ``torchrun --nproc_per_node N`` (``RANK`` /
``WORLD_SIZE`` in the environment) batch ``b`` goes to rank ``b mod N``
(gloo on CPU, NCCL on GPU); each rank writes its own part and rank 0 merges
them. The batches are the same as in a single-process run, so the rows are
too. ``--out`` must be visible to every rank (one machine, or a shared file
system).

Run folder (read by ``logitshift report``)::

    OUT/results.sqlite       the store: tables rows, images, meta (see logitshift.runs.store)
    OUT/parts/rank-R.sqlite  per-rank stores while a torchrun run is going (merged, then deleted)
    OUT/rows.csv             every row, for spreadsheets            (written at the end)
    OUT/summary.json         configuration, counts, bad files, per-(method, score, variant)
                             statistics, equivalence, plots        (written last)
    OUT/summary.md           the same as Markdown tables
    OUT/plots/target_mass.png, plots/spearman_vs_original.png, plots/max_abs_prob_diff.png

A folder without ``summary.json`` holds a run that was interrupted (the store
has what was finished). Example::

    logitshift evaluate --images photos/ @more.txt chelsea --methods gradcam --scores logit prob \\
        --construction region --target top-left --out runs/eval
    torchrun --nproc_per_node 2 -m logitshift.cli evaluate --images photos/ --out runs/eval
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..attribution import engine
from ..attribution import Attribution, get_method
from ..core.capture import layer_grid
from ..core.device import resolve_device
from ..view.display import check_maps_path, explained_maps, save_maps
from ..core.errors import LogitShiftError
from ..view.figures import grid_figure, scaled, signed_method
from ..core.files import RunLock, atomic_write, drop_inherited_locks, provenance, remove_temporaries
from ..core.images import IMAGE_EXTENSIONS, Item, collect_images, load_image, storable  # noqa: F401  (IMAGE_EXTENSIONS, storable: re-exported)
from ..core.metrics import spearman, target_mass
from ..core.models import Preprocess
from .records import EvaluateRecord, evaluate_finding, summarize
from ..core.scores import check_score
from ..shift.model import DEFAULT_STRENGTH, ShiftedModel, ShiftSetup, compare
from ..shift.steer import prepare, steer_setup
from .store import FIELDS, Store, remove
from ..core.targets import parse_target

STORE = "results.sqlite"
PARTS = "parts"
MAPS = "maps"  # OUT/maps/part-I.npz: each batch's raw maps with --save-maps (I: its first image's index), merged at the end
#: the configuration fields that decide the rows; a resume must not change them.
IDENTITY = (
    "model",
    "weights",
    "layer",
    "shift_layer",
    "construction",
    "region",
    "strength",
    "float64_head",
    "methods",
    "method_options",
    "scores",
    "classes",
    "top_k",
    "labels",
)
#: what an identity field was before it was recorded (a run made before the field existed resumes)
IDENTITY_DEFAULTS = {"top_k": 1, "labels": None}


@dataclass(kw_only=True)
class EvalConfig(ShiftSetup):
    images: list[str]
    out: str = "runs/evaluate"
    lists: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["gradcam"])
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"ig": {"steps": 16}}
    scores: list[str] = field(default_factory=lambda: ["logit", "prob"])
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"
    #: model and batches in channels-last memory layout: 1.35× the eager images/s on the evaluate batch
    #: workload of EfficientNet-Lite0 (benchmarks/results/forward.md); off by default, as float results
    #: differ from the default layout by rounding
    channels_last: bool = False
    resume: bool = False
    force: bool = False
    progress: bool = True
    plots: bool = True
    save_maps: str | None = None  # .npz file for the raw maps of every image (display.save_maps)


def batches_of(items: Sequence[Item], size: int) -> list[list[Item]]:
    """Fixed batches: ``items[b·size : (b+1)·size]`` for b = 0, 1, …"""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class BatchLoader(torch.utils.data.Dataset):
    """A dataset whose element ``i`` is batch ``i``, decoded: ``{"good": [...], "x": N×3×S×S, "bad": [...]}``."""

    def __init__(self, batches: Sequence[Sequence[Item]], preprocess) -> None:
        self.batches = [list(b) for b in batches]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        good, tensors, bad = [], [], []
        for item in self.batches[i]:
            try:
                tensors.append(load_image(item.spec, self.preprocess).tensor)
                good.append(item)
            except LogitShiftError as exc:
                bad.append((item, storable(str(exc))))
            except Exception as exc:  # a decoder failing in a way we did not foresee: record it, go on
                bad.append((item, storable(f"image {item.spec!r}: {type(exc).__name__}: {str(exc)[:160]}")))
        x = torch.stack(tensors) if tensors else None
        return {"good": good, "x": x, "bad": bad}


def _identity(batch: Any) -> Any:
    return batch


# ----------------------------------------------------------------------------- distributed


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment torchrun sets (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _device(name: str, local_rank: int) -> torch.device:
    return resolve_device(name, local_rank)


def _init_dist(world: int, device: torch.device) -> bool:
    """Join the process group (gloo on CPU, NCCL on GPU); True if this call created it."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- the run


def _prepare_out(out: Path, cfg: EvalConfig, rank: int, world: int) -> None:
    previous = (out / STORE).exists() or (out / "summary.json").exists() or (out / PARTS).exists()
    if out.exists() and not out.is_dir():
        raise LogitShiftError(f"--out {str(out)!r}: exists and is not a folder")
    if previous and not (cfg.resume or cfg.force):
        raise LogitShiftError(f"--out {str(out)!r}: holds a previous run; pass --resume to continue it or --force to start over")
    _barrier(world)  # every rank has checked before rank 0 deletes anything
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if previous and cfg.force and not cfg.resume:
            remove(out / STORE)
            shutil.rmtree(out / PARTS, ignore_errors=True)
            shutil.rmtree(out / MAPS, ignore_errors=True)
            shutil.rmtree(out / "plots", ignore_errors=True)
            shutil.rmtree(out / "samples", ignore_errors=True)
            for name in ("summary.json", "summary.md", "rows.csv"):
                (out / name).unlink(missing_ok=True)
    _barrier(world)


def _identity_config(cfg: EvalConfig, layer: str, shift_layer: str, strength: dict[str, float], float64_head: bool) -> dict[str, Any]:
    """The settings that decide the rows, as resolved (the strength and head chosen, not ``auto``)."""
    d = asdict(cfg)
    d.update(layer=layer, shift_layer=shift_layer, strength=dict(strength), float64_head=float64_head)
    return {k: d[k] for k in IDENTITY}


#: how many of the set's first readable images the shift is chosen and checked on
CHECK_IMAGES = 8


def check_images(items: Sequence[Item], preprocess, n: int = CHECK_IMAGES) -> torch.Tensor:
    """The first ``n`` readable images of the set (in listing order), decoded: the shift's check images."""
    from ..core.images import load_image

    tensors = []
    for item in items:
        try:
            tensors.append(load_image(item.spec, preprocess).tensor)
        except Exception:  # an unreadable file: recorded as bad when its batch comes; not a check image
            continue
        if len(tensors) == n:
            break
    if not tensors:
        raise LogitShiftError(f"images: none of the {len(items)} listed can be read")
    return torch.stack(tensors)


def _holds_run(out: Path) -> bool:
    return (out / STORE).exists() or (out / "summary.json").exists() or (out / PARTS).exists()


def _refuse_out(out: Path, cfg: EvalConfig) -> None:
    """The refusals of :func:`_prepare_out` that need no lock, taken before any work."""
    if out.exists() and not out.is_dir():
        raise LogitShiftError(f"--out {str(out)!r}: exists and is not a folder")
    RunLock(out).check()  # a run in progress there is named first
    if _holds_run(out) and not (cfg.resume or cfg.force):
        raise LogitShiftError(f"--out {str(out)!r}: holds a previous run; pass --resume to continue it or --force to start over")


def _discard(out: Path, existed: bool) -> None:
    """Remove what a refused fresh run wrote into ``out`` (the folder too if the run made it)."""
    remove(out / STORE)
    for name in (PARTS, "plots", MAPS):
        shutil.rmtree(out / name, ignore_errors=True)
    if not existed:
        shutil.rmtree(out, ignore_errors=True)


def _same_shift_on_every_rank(shifted, loaded, cfg: EvalConfig, check: torch.Tensor):
    """Rank 0's strength and head on every rank (threads differ per rank, so an automatic search may round apart)."""
    import torch.distributed as dist

    from ..shift.steer import steer_setup

    mine = [shifted.steering["strength"], shifted.head_dtype == torch.float64]
    chosen = list(mine)
    dist.broadcast_object_list(chosen, src=0)
    if chosen == mine:
        return shifted
    setup = replace(cfg, strength=chosen[0], float64_head=chosen[1])
    return steer_setup(loaded, setup, list(shifted.steering["methods"]), check, method_options=cfg.method_options)


def _check_resume(store: Store, ident: dict[str, Any]) -> None:
    stored = store.get_meta("config")
    if stored is None:
        store.set_meta("config", ident)
        return
    changed = [k for k in IDENTITY if stored.get(k, IDENTITY_DEFAULTS.get(k)) != ident.get(k)]
    if changed:
        k = changed[0]
        raise LogitShiftError(
            f"--resume: the run in {str(store.path.parent)!r} was made with {k}={stored.get(k)!r}, not {ident.get(k)!r}; "
            "resume with the same settings or start over with --force"
        )


def run_evaluate(cfg: EvalConfig, on_batch: Callable[[int], None] | None = None) -> dict[str, Any] | None:
    """Evaluate, resume-safe; returns the summary on rank 0 (``None`` on other ranks).

    ``on_batch(n_done)`` is called after each committed batch (benchmarks use it).
    """
    start = time.perf_counter()
    rank, world, local_rank = dist_env()
    device = _device(cfg.device, local_rank)
    if cfg.batch_size < 1:
        raise LogitShiftError(f"--batch-size {cfg.batch_size}: expected an integer >= 1")
    if cfg.workers < 0:
        raise LogitShiftError(f"--workers {cfg.workers}: expected an integer >= 0")
    if cfg.save_maps:
        check_maps_path(cfg.save_maps)
    methods = [get_method(m, **cfg.method_options.get(m, {})) for m in dict.fromkeys(cfg.methods)]
    scores = [check_score(s) for s in dict.fromkeys(cfg.scores)]
    items, skipped = collect_images(cfg.images, cfg.lists)
    _refuse_out(Path(cfg.out), cfg)  # before any work; nothing is created until the shift passed its checks
    prepared = prepare(cfg, items, device)
    loaded, layer, shift_layer, extra, labels = prepared.loaded, prepared.layer, prepared.shift_layer, prepared.extra, prepared.labels
    size = loaded.preprocess.size
    # the strength, the head and the effect are chosen and checked on the first images of the set, on every rank alike
    check = check_images(items, loaded.preprocess).to(device)
    shifted = steer_setup(loaded, cfg, [m.name for m in methods], check, method_options=cfg.method_options, progress=cfg.progress)
    shift_grid = layer_grid(loaded.module, shift_layer, check[:1])
    target = parse_target(cfg.region, size, shift_grid) if cfg.construction != "paper" else None
    target_px = F.interpolate(shifted.target_weights(*shift_grid).cpu()[None, None], size=(size, size), mode="nearest")[0, 0]

    def weights_for(h: int, w: int) -> torch.Tensor:
        if target is not None:
            return target.weights(h, w)
        return F.adaptive_avg_pool2d(target_px[None, None], (h, w))[0, 0]

    shifted.to(device)
    if cfg.channels_last:
        shifted.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    created = _init_dist(world, device)
    if world > 1:
        shifted = _same_shift_on_every_rank(shifted, loaded, cfg, check)
    steering = shifted.steering
    out = Path(cfg.out)
    existed = out.exists()
    lock = RunLock(cfg.out) if rank == 0 else None
    try:
        if out.exists() and not out.is_dir():
            raise LogitShiftError(f"--out {str(out)!r}: exists and is not a folder")
        if lock is not None:
            lock.acquire()  # before anything is read or deleted: a second run (even with --force) is refused
            remove_temporaries(out)  # left by a killed run
        fresh = not _holds_run(out) or (cfg.force and not cfg.resume)
        _prepare_out(out, cfg, rank, world)
        ident = _identity_config(cfg, layer, shift_layer, steering["strength"], shifted.head_dtype == torch.float64)
        main = Store(out / STORE) if rank == 0 else None
        if main is not None:
            _check_resume(main, ident)
        _barrier(world)
        store = main if world == 1 and main is not None else Store(out / PARTS / f"rank-{rank}.sqlite")
        if store is not main:
            _check_resume(store, ident)
        finished = _finished(out)
        mine = batches_of(items, cfg.batch_size)[rank::world]
        todo = [[it for it in b if it.key not in finished] for b in mine]
        todo = [b for b in todo if b]
        total = sum(len(b) for b in mine)
        done_before = total - sum(len(b) for b in todo)
        try:
            job = Job(cfg, loaded.preprocess, shifted, layer, methods, scores, extra, labels, weights_for, device)
            _run_batches(job, todo, store, rank, world, total, done_before, on_batch, _first_index(items))
        except LogitShiftError:
            if fresh and world == 1:  # a refusal leaves no half-made run behind: what this run wrote goes
                store.close()
                _discard(out, existed)
            raise
        if store is not main:
            store.close()
        _barrier(world)
        summary = None
        if rank == 0:
            assert main is not None
            parts = sorted((out / PARTS).glob("rank-*.sqlite")) if (out / PARTS).is_dir() else []
            if parts:
                main.merge(parts)
                for part in parts:
                    remove(part)
                shutil.rmtree(out / PARTS, ignore_errors=True)
            samples = (
                write_samples(
                    out,
                    main.rows(),
                    items,
                    loaded.preprocess,
                    shifted,
                    layer,
                    methods,
                    scores,
                    target_px,
                    cfg.construction == "paper",
                    device,
                )
                if cfg.plots
                else []
            )
            if cfg.save_maps:
                _merge_maps(out, {r["image"] for r in main.images() if r["status"] == "done"}, cfg.save_maps)
            summary = write_summary(
                out,
                main,
                items,
                skipped,
                cfg,
                ident,
                loaded.name,
                DEFAULT_STRENGTH[cfg.construction],
                world,
                time.perf_counter() - start,
                samples,
                steering,
            )
            main.close()
        _barrier(world)
        return summary
    finally:
        if lock is not None:
            lock.release()
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _finished(out: Path) -> set[str]:
    """Images finished in the main store or in any rank's part (the world size may have changed)."""
    done: set[str] = set()
    paths = [out / STORE] + (sorted((out / PARTS).glob("rank-*.sqlite")) if (out / PARTS).is_dir() else [])
    for path in paths:
        if path.exists():
            with Store(path) as st:
                done |= st.finished()
    return done


def _first_index(items: Sequence[Item]) -> dict[str, int]:
    """Each item's place in the listing (names the maps part of the batch it starts)."""
    return {it.key: i for i, it in enumerate(items)}


def _merge_maps(out: Path, done: set[str], path: str) -> Path:
    """The batches' map parts as one file (listing order, one map per label), then the parts go.

    Images evaluated by an earlier run without ``--save-maps`` have no maps: a line on stderr says how many.
    """
    from ..view.display import LABELS, load_maps

    parts = sorted((out / MAPS).glob("part-*.npz")) if (out / MAPS).is_dir() else []
    if not parts:
        raise LogitShiftError(f"--save-maps {path!r}: no maps were kept (every image was evaluated by an earlier run without --save-maps)")
    maps: list[torch.Tensor] = []
    labels: dict[str, list] = {k: [] for k in LABELS}
    seen: set[tuple] = set()
    for part in parts:
        d = load_maps(part)
        for i in range(d["maps"].shape[0]):
            key = tuple(d[k][i].item() for k in LABELS)
            if key in seen:  # a batch redone after a kill, or an extra class that is the top-1
                continue
            seen.add(key)
            maps.append(torch.from_numpy(d["maps"][i]))
            for k in LABELS:
                labels[k].append(d[k][i].item())
    written = save_maps(path, maps, **labels)
    missing = len(done - set(labels["image"]))
    if missing:
        sys.stderr.write(f"--save-maps: {missing} evaluated images have no maps (evaluated by a run without --save-maps)\n")
    shutil.rmtree(out / MAPS, ignore_errors=True)
    return written


def _worker_init(_worker: int) -> None:
    """A DataLoader worker lets go of the run lock it inherited, so the lock dies with the run (files.RunLock)."""
    drop_inherited_locks()


@dataclass
class Job:
    """What every batch of a run explains, and how: the same for every rank and every batch."""

    cfg: EvalConfig
    preprocess: Preprocess
    shifted: ShiftedModel
    layer: str
    methods: list[Attribution]
    scores: list[str]
    extra: list[int]  # --class, as indices
    labels: dict[str, int] | None  # --labels, by item key
    weights_for: Callable[[int, int], torch.Tensor]  # the target's weights on an h×w map
    device: torch.device


def _run_batches(
    job: Job,
    todo: list[list[Item]],
    store: Store,
    rank: int,
    world: int,
    total: int,
    done_before: int,
    on_batch: Callable[[int], None] | None,
    index: dict[str, int] | None = None,
) -> None:
    """Explain the batches ``todo`` of this rank, committing each batch's rows to ``store`` as it finishes (a run
    killed between two batches loses at most the batch in flight); ``index`` names the --save-maps parts."""
    from tqdm import tqdm

    cfg, device = job.cfg, job.device

    loader = torch.utils.data.DataLoader(
        BatchLoader(todo, job.preprocess),
        batch_size=None,
        shuffle=False,
        num_workers=cfg.workers,
        collate_fn=_identity,
        prefetch_factor=2 if cfg.workers > 0 else None,
        worker_init_fn=_worker_init,
    )
    desc = "evaluate" if world == 1 else f"evaluate rank {rank}"
    bar = tqdm(
        total=total,
        initial=done_before,
        desc=desc,
        unit="img",
        disable=not cfg.progress,
        file=sys.stderr,
        position=rank if world > 1 else None,
        dynamic_ncols=True,
    )
    done = done_before
    try:
        for batch in loader:
            rows: list[dict[str, Any]] = []
            good: list[Item] = batch["good"]
            if good:
                x = batch["x"].to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
                classes: list[int | torch.Tensor] = list(job.extra)
                if job.labels is not None:
                    classes.append(torch.tensor([job.labels[it.key] for it in good]))
                result = engine.explain(
                    job.shifted, x, job.layer, job.methods, job.scores, ("original", "shifted"), classes, top_k=cfg.top_k
                )
                # every batch: an image the check set did not foresee must not pass with changed probabilities
                _check_equivalence(result.logits, cfg.tolerance, job.shifted)
                rows = batch_rows(result, good, job.weights_for)
                if cfg.save_maps and index is not None:  # the parts are written before the batch is committed
                    saved, names = explained_maps(result.maps, result.targets, [it.key for it in good])
                    for hw in dict.fromkeys(tuple(m.shape) for m in saved):  # one part per map size: raw maps, no resampling
                        mine = [i for i, m in enumerate(saved) if tuple(m.shape) == hw]
                        name = f"part-{index[good[0].key]:09d}-{hw[0]}x{hw[1]}.npz"
                        save_maps(
                            Path(cfg.out) / MAPS / name, [saved[i] for i in mine], **{k: [v[i] for i in mine] for k, v in names.items()}
                        )
            store.commit_batch(
                rows,
                done=[(it.key, it.name) for it in good],
                bad=[(it.key, it.name, reason) for it, reason in batch["bad"]],
                rank=rank,
            )
            n = len(good) + len(batch["bad"])
            done += n
            bar.update(n)
            if on_batch is not None:
                on_batch(done)
    finally:
        bar.close()


def _check_equivalence(logits: dict[str, torch.Tensor], tolerance: float, shifted) -> None:
    eq = compare(logits["original"].cpu(), logits["shifted"].cpu())
    if not eq.ok(tolerance):
        strength = ", ".join(f"{f}={k:.3g}" for f, k in shifted.steering["strength"].items())
        wide = shifted.head_dtype == torch.float64
        raise LogitShiftError(
            f"strength {strength}: shifted model changes probabilities by up to {eq.max_abs_prob_diff:.2e} "
            f"(top-1 agreement {eq.top1_agree:.2f}, |t| up to {eq.max_abs_shift:.3g}) on a batch beyond the check images, over the "
            f"tolerance {tolerance:g}; use a smaller strength" + ("" if wide else " or a float64 head (--float64-head)")
        )


def batch_rows(result, good: Sequence[Item], weights_for: Callable[[int, int], torch.Tensor]) -> list[dict[str, Any]]:
    """One row per (image, class, method, score, variant) of an :class:`~logitshift.attribution.engine.Explained` batch."""
    probs = {v: torch.softmax(z.double(), dim=1).cpu() for v, z in result.logits.items()}
    top1 = {v: p.argmax(dim=1) for v, p in probs.items()}
    diff = (probs["original"] - probs["shifted"]).abs().max(dim=1).values if "shifted" in probs else torch.zeros(len(good))
    base_top1 = result.top1.cpu()
    targets = [t.cpu() for t in result.targets]
    rows = []
    for (slot, method, score, variant), maps in result.maps.items():
        maps = maps.detach().double().cpu()
        mass = target_mass(maps, weights_for(*maps.shape[-2:]))
        if variant == "original":
            rho = torch.ones(len(good), dtype=torch.float64)
        else:
            rho = spearman(maps, result.maps[(slot, method, score, "original")])
        for i, item in enumerate(good):
            c = int(targets[slot][i])
            if any(int(targets[earlier][i]) == c for earlier in range(slot)):
                continue  # this image's class in an earlier slot (its top-1, a top-k class, a --class): already a row
            rows.append(
                {
                    "image": item.key,
                    "name": item.name,
                    "class": c,
                    "is_top1": int(c == int(base_top1[i])),
                    "method": method,
                    "score": score,
                    "variant": variant,
                    "target_mass": float(mass[i]),
                    "spearman_vs_original": float(rho[i]),
                    "max_abs_prob_diff": float(diff[i]),
                    "prob": float(probs[variant][i, c]),
                    "top1": int(top1[variant][i]),
                }
            )
    return rows


# ----------------------------------------------------------------------------- summary


#: how many images per method the summary shows maps of (the extremes and the median of the distribution)
SAMPLES = ("largest", "median", "smallest")


def pick_samples(rows: Sequence[dict[str, Any]], methods: Sequence[str], scores: Sequence[str], paper: bool) -> list[dict[str, Any]]:
    """Per method, the images at the top, the median and the bottom of the shifted model's map distribution.

    Region construction: by the target mass of the logit map (the explanation
    moved most / typically / least); the paper's construction (no target): by
    its ρ against the original map. Only each image's predicted class.
    """
    score = "logit" if "logit" in scores else scores[0]
    metric = "spearman_vs_original" if paper else "target_mass"
    words = "ρ vs the original" if paper else "target mass"
    picks: list[dict[str, Any]] = []
    for m in methods:
        cand = sorted(
            (
                r
                for r in rows
                if (r["method"], r["score"], r["variant"]) == (m, score, "shifted") and r["is_top1"] and r[metric] is not None
            ),
            key=lambda r: (r[metric], r["image"]),
        )
        if not cand:
            continue
        seen: set[str] = set()
        for why, r in zip(SAMPLES, (cand[-1], cand[len(cand) // 2], cand[0])):
            if r["image"] in seen:
                continue
            seen.add(r["image"])
            picks.append(
                {
                    "method": m,
                    "image": r["image"],
                    "name": r["name"],
                    "class": r["class"],
                    "why": f"{why} {score} {words}",
                    "value": r[metric],
                }
            )
    return picks


def write_samples(
    out: Path,
    rows: Sequence[dict[str, Any]],
    items: Sequence[Item],
    preprocess,
    shifted,
    layer: str,
    methods: Sequence[Any],
    scores: Sequence[str],
    target_px: torch.Tensor,
    paper: bool,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Figures of the maps of :func:`pick_samples`' images (rows original / shifted, one column per score) under ``out/samples``."""
    picks = pick_samples(rows, [m.name for m in methods], scores, paper)
    specs = {it.key: it.spec for it in items}
    picks = [p for p in picks if p["image"] in specs]
    if not picks:
        return []
    keys = list(dict.fromkeys(p["image"] for p in picks))
    images = {k: load_image(specs[k], preprocess) for k in keys}
    x = torch.stack([images[k].tensor for k in keys]).to(device)
    used = [m for m in methods if m.name in {p["method"] for p in picks}]
    result = engine.explain(shifted, x, layer, used, scores, ("original", "shifted"))
    size = x.shape[-1]
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, p in enumerate(picks):
        i, m = keys.index(p["image"]), p["method"]
        signed = signed_method(m)
        cells = [
            [(scaled(result.maps[(0, m, s, v)][i : i + 1], size, signed)[0], f"{v} · {s}") for s in scores] for v in ("original", "shifted")
        ]
        name = f"samples/{n:02d}_{m}_{re.sub(r'[^A-Za-z0-9._-]', '_', p['name'])[:40]}.png"
        grid_figure(
            out / name,
            images[p["image"]].rgb,
            cells,
            signed=signed,
            target=target_px.cpu().numpy(),
            suptitle=f"{p['name']} · {m} · class {p['class']} ({p['why']} {p['value']:.2f})",
            side=2.6,
            dpi=90,
            target_label="the corner cell the shift reads" if paper else "the shift's target",
        )
        written.append({**p, "figure": name})
    return written


def write_summary(
    out: Path,
    store: Store,
    items: Sequence[Item],
    skipped: int,
    cfg: EvalConfig,
    ident: dict[str, Any],
    model_name: str,
    default_strength: float | str,
    world: int,
    seconds: float,
    samples: Sequence[dict[str, Any]] = (),
    steering: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """rows.csv, the plots, summary.md and (last) summary.json, each written atomically.

    ``steering``: what :func:`logitshift.shift.steer.steer` chose and measured on the check images.
    """

    rows = store.rows()
    images = store.images()
    bad = [{"image": r["image"], "name": r["name"], "reason": r["reason"]} for r in images if r["status"] == "bad"]
    listed = {it.key for it in items}
    handled = {r["image"] for r in images}
    per_image: dict[str, dict[str, Any]] = {}
    for r in rows:
        e = per_image.setdefault(r["image"], {"diff": r["max_abs_prob_diff"], "top1": {}})
        e["top1"][r["variant"]] = r["top1"]
    diffs = [e["diff"] for e in per_image.values()]
    agree = [len(set(e["top1"].values())) == 1 for e in per_image.values()]
    table = [t.to_json() for t in summarize(rows)]
    plots = write_plots(out / "plots", rows) if cfg.plots and rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "rows.csv", buf.getvalue())
    summary = {
        "command": "evaluate",
        "complete": listed <= handled,
        "model": model_name,
        **{
            k: ident[k]
            for k in (
                "weights",
                "layer",
                "shift_layer",
                "construction",
                "strength",
                "float64_head",
                "methods",
                "scores",
                "classes",
                "top_k",
                "labels",
            )
        },
        "region": cfg.region if cfg.construction == "region" else "cell (0, 0) of the shift layer",
        "default_strength": default_strength,
        "tolerance": cfg.tolerance,
        "variants": ["original", "shifted"],
        "batch_size": cfg.batch_size,
        "world_size": world,
        "images": {
            "listed": len(items),
            "evaluated": sum(1 for r in images if r["status"] == "done"),
            "bad": len(bad),
            "missing": len(listed - handled),
            "skipped_non_images": skipped,
        },
        "bad_images": bad,
        "rows": len(rows),
        "equivalence": {
            "max_abs_prob_diff": max(diffs) if diffs else None,
            "images_over_tolerance": sum(1 for d in diffs if d > cfg.tolerance),
            "top1_agree": (sum(agree) / len(agree)) if agree else None,
        },
        "table": table,
        "samples": list(samples),
        "steering": steering,
        "files": {"store": STORE, "rows": "rows.csv", "markdown": "summary.md", "plots": [f"plots/{p}" for p in plots]},
        "seconds": round(seconds, 2),
        **provenance(),
    }
    record = EvaluateRecord.from_json(summary, "evaluate summary", strict=True)  # every key written is a typed field
    record.finding = evaluate_finding(record)
    atomic_write(out / "summary.md", markdown(record.to_json()))
    record.write(out)
    return record.to_json()


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: what was run, equivalence, the metrics table, bad files."""
    im, eq = summary["images"], summary["equivalence"]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "# logitshift evaluate",
        "",
        summary["finding"],
        "",
        f"Model `{summary['model']}`, layer `{summary['layer']}`; {summary['construction']} shift at "
        f"`{summary['shift_layer']}`, strength {_strength_text(summary['strength'])}, target {summary['region']}.",
        f"Images: {im['listed']} listed, {im['evaluated']} evaluated, {im['bad']} unreadable, {im['missing']} missing; "
        f"{summary['rows']} rows.",
        "",
        "## Equivalence of the shifted model",
        "",
        f"max |Δprob| {eq['max_abs_prob_diff'] if eq['max_abs_prob_diff'] is not None else '–'}; "
        f"images over the tolerance {summary['tolerance']:g}: {eq['images_over_tolerance']}; "
        f"top-1 agreement {fmt(eq['top1_agree'])}.",
        "",
        "## Explanations",
        "",
        "| method | score | variant | rows | target mass (mean) | target mass (median) | Spearman vs original (mean) | Spearman (min) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for t in summary["table"]:
        tm, sp = t["target_mass"], t["spearman_vs_original"]
        lines.append(
            f"| {t['method']} | {t['score']} | {t['variant']} | {t['rows']} | {fmt(tm.get('mean'))} | {fmt(tm.get('median'))} "
            f"| {fmt(sp.get('mean'))} | {fmt(sp.get('min'))} |"
        )
    if summary["bad_images"]:
        lines += ["", "## Unreadable images", "", "| image | reason |", "|---|---|"]
        for b in summary["bad_images"]:
            lines.append(f"| {b['image']} | {b['reason'].replace('|', '/')} |")
    if summary["files"]["plots"]:
        lines += ["", "## Distributions", ""] + [f"![{Path(p).stem}]({p})" for p in summary["files"]["plots"]]
    return "\n".join(lines) + "\n"


def _strength_text(strength: float | dict[str, float]) -> str:
    return ", ".join(f"{f} {k:.3g}" for f, k in strength.items()) if isinstance(strength, dict) else f"{strength:g}"


def write_plots(folder: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Distribution plots (PNG): target mass and Spearman per method·score and variant; max |Δprob| per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    combos = sorted({(r["method"], r["score"]) for r in rows})
    names = []

    def save(fig, name: str) -> None:
        atomic_write(folder / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)
        names.append(f"{name}.png")

    for metric, label, variants in (
        ("target_mass", "share of positive map mass in the target", ("original", "shifted")),
        ("spearman_vs_original", "Spearman vs the original model's map", ("shifted",)),
    ):
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(combos) * len(variants)), 3.6))
        data, labels, colors = [], [], []
        for method, score in combos:
            for v in variants:
                vals = [r[metric] for r in rows if r["method"] == method and r["score"] == score and r["variant"] == v]
                data.append(vals or [float("nan")])
                labels.append(f"{method}\n{score}\n{v}")
                colors.append("#4c72b0" if v == "original" else "#dd8452")
        parts = ax.boxplot(data, patch_artist=True, showfliers=True, medianprops={"color": "black"})
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        for patch, color in zip(parts["boxes"], colors):
            patch.set_facecolor(color)
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(color="#4c72b0" if v == "original" else "#dd8452", label=f"{v} model") for v in variants],
            loc="upper right",
            fontsize=7,
        )
        ax.set_ylabel(label)
        ax.set_ylim(-1.05 if metric.startswith("spearman") else -0.02, 1.05)
        ax.set_title(f"{metric} over {len({r['image'] for r in rows})} images")
        save(fig, metric)
    per_image = {r["image"]: r["max_abs_prob_diff"] for r in rows}
    fig, ax = plt.subplots(figsize=(5, 3.4))
    vals = [max(v, 1e-18) for v in per_image.values()]
    lo, hi = min(vals), max(vals)
    import numpy as np

    bins: Any = np.logspace(np.log10(lo), np.log10(hi), 30) if hi > lo * 1.0001 else 10
    ax.hist(vals, bins=bins, color="#55a868")
    if hi > lo * 1.0001:
        ax.set_xscale("log")
    ax.set_xlabel("max |Δprob| between original and shifted model (per image)")
    ax.set_ylabel("images")
    save(fig, "max_abs_prob_diff")
    return names
