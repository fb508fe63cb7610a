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

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..attribution import Attribution, engine, get_method
from ..core.capture import layer_grid
from ..core.errors import LogitShiftError
from ..core.files import RunLock, drop_inherited_locks, refuse_links, remove_temporaries
from ..core.images import IMAGE_EXTENSIONS, Item, collect_images, load_image, storable  # noqa: F401  (IMAGE_EXTENSIONS, storable: re-exported)
from ..core.models import Preprocess
from ..core.scores import check_score
from ..core.targets import parse_target
from ..shift.model import DEFAULT_STRENGTH, ShiftedModel, ShiftSetup, compare
from ..shift.steer import prepare, steer_setup
from ..view.display import check_maps_path, explained_maps, save_maps
from .ranks import barrier, dist_env, init_dist, rank_device, same_shift_on_every_rank
from .records import Sample
from .rows import batch_rows
from .samples import write_samples
from .store import Store, remove
from .summary import write_summary

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


# ----------------------------------------------------------------------------- the run


def _prepare_out(out: Path, cfg: EvalConfig, rank: int, world: int) -> None:
    previous = (out / STORE).exists() or (out / "summary.json").exists() or (out / PARTS).exists()
    if out.exists() and not out.is_dir():
        raise LogitShiftError(f"--out {str(out)!r}: exists and is not a folder")
    if previous and not (cfg.resume or cfg.force):
        raise LogitShiftError(f"--out {str(out)!r}: holds a previous run; pass --resume to continue it or --force to start over")
    barrier(world)  # every rank has checked before rank 0 deletes anything
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
    barrier(world)


def _identity_config(cfg: EvalConfig, layer: str, shift_layer: str, strength: dict[str, float], float64_head: bool) -> dict[str, Any]:
    """The settings that decide the rows, as resolved (the strength and head chosen, not ``auto``)."""
    d = asdict(cfg)
    d.update(layer=layer, shift_layer=shift_layer, strength=dict(strength), float64_head=float64_head, method_options=resolved_options(cfg))
    return {k: d[k] for k in IDENTITY}


def resolved_options(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Each method's settings that change its maps (IG steps, SmoothGrad samples and noise), as resolved from
    ``method_options`` and the defaults; how its points are chunked (``batch_size``, ``memory_budget``) changes no map,
    so a run resumes under another ``--memory-budget`` and the API's defaults equal the command line's."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(cfg.methods):
        m = get_method(name, **cfg.method_options.get(name, {}))
        kept = {k: v for k, v in vars(m).items() if k not in ("batch_size", "memory_budget") and isinstance(v, (bool, int, float, str))}
        if kept:
            out[name] = kept
    return out


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
    refuse_links(out)
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

    ``on_batch(n_done)`` is called after each committed batch (benchmarks use it). ``--resume`` of a finished run
    returns its recorded summary and does no model work (:func:`_nothing_left`).
    """
    done = _nothing_left(Path(cfg.out), cfg, dist_env()[1])
    return done if done is not None else _evaluate(cfg, on_batch)


def _evaluate(cfg: EvalConfig, on_batch: Callable[[int], None] | None) -> dict[str, Any] | None:
    """:func:`run_evaluate`'s work: the model, the shift, the batches, the summary."""
    start = time.perf_counter()
    rank, world, local_rank = dist_env()
    device = rank_device(cfg.device, local_rank)
    _check_config(cfg)
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
    created = init_dist(world, device)
    if world > 1:
        shifted = same_shift_on_every_rank(shifted, loaded, cfg, check, cfg.method_options)
    steering = shifted.steering
    assert steering is not None  # set by steer()
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
        ident = _identity_config(cfg, layer, shift_layer, steering.strength, shifted.head_dtype == torch.float64)
        main = Store(out / STORE) if rank == 0 else None
        if main is not None:
            _check_resume(main, ident)
        barrier(world)
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
        barrier(world)
        summary = None
        if rank == 0:
            assert main is not None
            samples = _merge_and_draw(out, main, cfg, items, loaded.preprocess, shifted, layer, methods, scores, target_px, device)
            summary = write_summary(
                out,
                main,
                items,
                skipped,
                cfg,
                cfg.plots,
                cfg.batch_size,
                ident,
                loaded.name,
                DEFAULT_STRENGTH[cfg.construction],
                world,
                time.perf_counter() - start,
                samples,
                steering,
            )
            main.close()
        barrier(world)
        return summary
    finally:
        if lock is not None:
            lock.release()
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _check_config(cfg: EvalConfig) -> None:
    """The settings refused before any work: batch size, workers, the maps file's name."""
    if cfg.batch_size < 1:
        raise LogitShiftError(f"--batch-size {cfg.batch_size}: expected an integer >= 1")
    if cfg.workers < 0:
        raise LogitShiftError(f"--workers {cfg.workers}: expected an integer >= 0")
    if cfg.save_maps:
        check_maps_path(cfg.save_maps)


def _merge_and_draw(
    out: Path,
    main: Store,
    cfg: EvalConfig,
    items: Sequence[Item],
    preprocess: Preprocess,
    shifted: ShiftedModel,
    layer: str,
    methods: list[Attribution],
    scores: list[str],
    target_px: torch.Tensor,
    device: torch.device,
) -> list[Sample]:
    """Rank 0, after every rank: merge the ranks' parts into ``main``, draw the sample figures (``--plots``) and merge
    the maps files (``--save-maps``); returns the samples drawn."""
    parts = sorted((out / PARTS).glob("rank-*.sqlite")) if (out / PARTS).is_dir() else []
    if parts:
        main.merge(parts)
        for part in parts:
            remove(part)
        shutil.rmtree(out / PARTS, ignore_errors=True)
    paper = cfg.construction == "paper"
    samples = (
        write_samples(out, main.rows(), items, preprocess, shifted, layer, methods, scores, target_px, paper, device) if cfg.plots else []
    )
    if cfg.save_maps:
        _merge_maps(out, {r["image"] for r in main.images() if r["status"] == "done"}, cfg.save_maps)
    return samples


def _nothing_left(out: Path, cfg: EvalConfig, world: int) -> dict[str, Any] | None:
    """With ``--resume`` on one process: the recorded summary when a finished run in ``out`` already holds every image
    with these settings (nothing to load, calibrate or redraw), else ``None``.

    The settings compared are those known without the model (a resolved layer or automatic strength is compared
    only when given); anything else, and any unfinished image, leaves the decision to the full resume."""
    import json

    if not cfg.resume or world != 1 or not (out / "summary.json").is_file() or not (out / STORE).is_file() or (out / PARTS).exists():
        return None
    items = collect_images(cfg.images, cfg.lists)[0]
    with Store(out / STORE) as st:
        stored, finished = st.get_meta("config") or {}, st.finished()
    given = {**asdict(cfg), "method_options": resolved_options(cfg)}
    keys = [k for k in IDENTITY if k not in ("layer", "shift_layer", "strength", "float64_head") or given.get(k) not in (None, "auto")]
    if any(stored.get(k, IDENTITY_DEFAULTS.get(k)) != given.get(k) for k in keys) or any(it.key not in finished for it in items):
        return None
    try:
        summary = json.loads((out / "summary.json").read_text())
    except ValueError:
        return None
    lock = RunLock(cfg.out)
    lock.acquire()  # a killed run's temporaries go, as at any start (never under a running one)
    try:
        remove_temporaries(out)
    finally:
        lock.release()
    sys.stderr.write(f"logitshift evaluate: --resume: all {len(items)} images are done in {cfg.out}; nothing to do\n")
    return summary


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
    from ..core.progress import bar as progress_bar

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
    bar = progress_bar(
        total=total,
        initial=done_before,
        desc=desc,
        unit="img",
        enabled=cfg.progress,
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
        strength = ", ".join(f"{f}={k:.3g}" for f, k in shifted.steering.strength.items())
        wide = shifted.head_dtype == torch.float64
        raise LogitShiftError(
            f"strength {strength}: shifted model changes probabilities by up to {eq.max_abs_prob_diff:.2e} "
            f"(top-1 agreement {eq.top1_agree:.2f}, |t| up to {eq.max_abs_shift:.3g}) on a batch beyond the check images, over the "
            f"tolerance {tolerance:g}; use a smaller strength" + ("" if wide else " or a float64 head (--float64-head)")
        )


# ----------------------------------------------------------------------------- summary


#: how many images per method the summary shows maps of (the extremes and the median of the distribution)
