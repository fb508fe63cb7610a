"""``logitshift demo``: the paper's experiment end to end, on a real ImageNet model.

For each image and each class (its prediction, plus any ``--class``), one
forward pass gives the original and the shifted logits; four maps of the
chosen CAM method (``--method``, Grad-CAM by default; original/shifted ×
pre-/post-softmax) come from that pass. Writes the figures and
``summary.json``: the equivalence figures and, per map,
``spearman_vs_original`` and

* ``region`` construction: ``target_mass`` (share of the positive map inside
  the target); one 2×2 figure per (image, class);
* ``paper`` construction (``t = K·Σ_k A_k00``): ``corner_share`` (share of the
  positive map in the shift layer's cell (0, 0)) and ``max_in_corner`` (the
  map's largest cell is that cell); one figure per image, the paper's Figures
  3–5: rows original/shifted, columns pre-/post-softmax for each class.

With ``--class``, ``class_agnostic`` holds the Spearman between the
pre-softmax maps of the predicted and the requested class, on the original
and the shifted model, for averaged Grad-CAM and the chosen method. Why the
two differ under the paper's shift: ``∂t/∂A_kij = K`` at cell (0, 0) only; a
map that averages the gradient over space (Grad-CAM) spreads it into ``K/HW``
on every channel weight and tends to ``Σ_k A_k`` (class-agnostic, not in the
corner); a per-cell map (HiResCAM ``Σ_k g_kij A_kij``, LayerCAM) gains
``K·Σ_k A_k00`` in the corner cell only, whatever the class. ``finding`` is
the result in one sentence.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..attribution import CAM_METHODS, METHOD_LABELS, get_method
from ..attribution.engine import Explained, explain
from ..core.capture import layer_grid
from ..core.classes import class_name
from ..core.device import resolve_device
from ..core.errors import LogitShiftError
from ..core.files import check_out, provenance, run_dir
from ..core.images import DEFAULT_SAMPLES, batch, collect_images, load_image
from ..core.metrics import max_in_target, spearman, target_mass
from ..shift.model import DEFAULT_STRENGTH, ShiftSetup, compare
from ..shift.steer import prepare, steer_setup
from ..view.display import check_maps_path, explained_maps, save_maps
from ..view.figures import classes_figure, paper_figure, scaled
from .records import Agnostic, AgnosticRow, Corner, CornerClass, DemoRecord, DemoRow, MapNumbers

MAPS = ("original_logit", "original_prob", "shifted_logit", "shifted_prob")


@dataclass(kw_only=True)
class DemoConfig(ShiftSetup):
    out: str = "runs/demo"
    images: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLES))
    method: str = "gradcam"  # a CAM method of logitshift.attribution
    force: bool = False
    figures: bool = True
    progress: bool = True
    device: str = "auto"
    save_maps: str | None = None  # .npz file for the raw maps (display.save_maps)


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo and return the summary (also written to ``cfg.out/summary.json``)."""
    from ..core.progress import bar as progress_bar

    start = time.perf_counter()
    if cfg.method not in CAM_METHODS:
        raise LogitShiftError(f"method {cfg.method!r}: demo draws maps on a layer's grid; expected one of {', '.join(CAM_METHODS)}")
    if cfg.save_maps:
        check_maps_path(cfg.save_maps)
    device = resolve_device(cfg.device)
    check_out(cfg.out, cfg.force)  # refused before any work; the folder is made once the shift passed its checks
    items, _ = collect_images(cfg.images)
    prepared = prepare(cfg, items, device)
    loaded, layer, shift_layer, extra, labels = prepared.loaded, prepared.layer, prepared.shift_layer, prepared.extra, prepared.labels
    images = [replace(load_image(it.spec, loaded.preprocess), name=it.name) for it in items]
    x = batch(images).to(device)
    size = x.shape[-1]
    grid = layer_grid(loaded.module, layer, x)
    shift_grid = layer_grid(loaded.module, shift_layer, x)
    paper = cfg.construction == "paper"
    # the one front door: the construction, strength and head chosen on these images, refused if the effect falls short
    shifted = steer_setup(loaded, cfg, [cfg.method], x, progress=cfg.progress)
    # The target (paper: the corner cell) at pixel resolution (for overlays) and on the map's grid.
    target_px = F.interpolate(shifted.target_weights(*shift_grid).cpu()[None, None], size=(size, size), mode="nearest")[0, 0]
    weights = F.adaptive_avg_pool2d(target_px[None, None], grid)[0, 0]

    cam = get_method(cfg.method)
    label = METHOD_LABELS.get(cfg.method, cfg.method)
    # every map from the engine: one forward pass, one batched backward for all classes, scores and variants.
    # Class slots: the top-k (the prediction first), each --class, each image's label; an image's repeats are skipped below
    agnostic = list(dict.fromkeys(["gradcam", cfg.method])) if extra else [cfg.method]
    label_slot = [torch.tensor([labels[it.key] for it in items])] if labels is not None else []
    maps_of = explain(
        shifted,
        x,
        layer,
        [get_method(n) for n in agnostic],
        ["logit", "prob"],
        ("original", "shifted"),
        [*extra, *label_slot],
        top_k=cfg.top_k,
    )
    top1 = maps_of.top1
    probs = torch.softmax(maps_of.logits["original"], dim=1)
    jobs = maps_of.targets
    raws = [{key: maps_of.maps[(slot, cam.name, key.split("_")[1], key.split("_")[0])] for key in MAPS} for slot in range(len(jobs))]
    out = run_dir(cfg.out, cfg.force)
    if cfg.save_maps:
        mine = {k: v for k, v in maps_of.maps.items() if k[1] == cam.name}
        saved, names = explained_maps(mine, jobs, [im.name for im in images])
        save_maps(cfg.save_maps, saved, **names)
    bar = progress_bar(total=len(jobs) * len(images), desc="demo", unit="map", enabled=cfg.progress)
    results: list[DemoRow] = []
    for i, im in enumerate(images):
        eq = compare(maps_of.logits["original"][i : i + 1], maps_of.logits["shifted"][i : i + 1])
        rows, heats, titles = [], [], []
        seen: set[int] = set()
        for target_class, raw in zip(jobs, raws):
            c = int(target_class[i])
            if c in seen:
                bar.update(1)
                continue  # the same class asked twice for this image (its prediction, a top-k class, a --class, its label)
            seen.add(c)
            row = DemoRow(
                image=im.name,
                class_=c,
                class_name=class_name(c, loaded.class_names),
                prob=float(probs[i, c]),
                rank=int((probs[i] > probs[i, c]).sum()) + 1,
                predicted=c == int(top1[i]),
                max_abs_prob_diff=eq.max_abs_prob_diff,
                top1_agree=eq.top1_agree == 1.0,
                label=c == labels[items[i].key] if labels is not None else None,
            )
            for key in MAPS:
                m = raw[key][i : i + 1]
                rho = float(spearman(m, raw[f"original_{key.split('_')[1]}"][i : i + 1])[0])
                if paper:
                    share = float(target_mass(m, weights)[0])
                    row.maps[key] = MapNumbers(
                        corner_share=share, max_in_corner=bool(max_in_target(m, weights)[0]), spearman_vs_original=rho
                    )
                else:
                    row.maps[key] = MapNumbers(target_mass=float(target_mass(m, weights)[0]), spearman_vs_original=rho)
            rows.append(row)
            if cfg.figures:
                heats.append({k: scaled(raw[k][i : i + 1], size)[0] for k in MAPS})
                titles.append({k: _panel_title(k, row, paper) for k in MAPS})
            bar.update(1)
        if cfg.figures:
            suptitle = f"{im.name}: {label} at {layer}, {cfg.construction} shift at {shift_layer}"
            if paper:  # the paper's Figures 3-5: one figure per image, every class in it
                name = f"{im.name}.png"
                classes_figure(
                    out / name,
                    im.rgb,
                    heats,
                    titles,
                    suptitle,
                    target_px.numpy(),
                    ("p", "corner", "rho"),
                    "the corner cell the shift reads",
                )
                for row in rows:
                    row.figure = name
            else:
                for row, h, t in zip(rows, heats, titles):
                    name = f"{im.name}_{row.class_}.png"
                    paper_figure(out / name, im.rgb, h, t, suptitle, target_px.numpy())
                    row.figure = name
        results.extend(rows)
    bar.close()
    eq_all = compare(maps_of.logits["original"], maps_of.logits["shifted"])
    assert shifted.steering is not None  # set by steer()
    record = DemoRecord(
        model=loaded.name,
        layer=layer,
        shift_layer=shift_layer,
        method=cfg.method,
        construction=cfg.construction,
        # the strength as --strength takes it (the fit term's is in units of the model's own map, plan.fit_unit)
        strength=float(shifted.steering.strength["cam"] if "cam" in shifted.steering.strength else shifted.shift.strength),  # type: ignore[arg-type]
        default_strength=DEFAULT_STRENGTH[cfg.construction],
        region=cfg.region if not paper else "cell (0, 0) of the shift layer",
        float64_head=shifted.head_dtype == torch.float64,
        steering=shifted.steering,
        tolerance=cfg.tolerance,
        images=[im.name for im in images],
        top_k=cfg.top_k,
        labels=cfg.labels,
        max_abs_prob_diff=eq_all.max_abs_prob_diff,
        top1_agree=eq_all.top1_agree == 1.0,
        max_abs_shift=eq_all.max_abs_shift,
        class_agnostic={name: class_agnostic(maps_of, extra, [im.name for im in images], name, loaded.class_names) for name in agnostic}
        if extra
        else None,
        corner=corner_summary(results, cfg.method, float(weights.sum() / weights.numel())) if paper else None,
        results=results,
        **provenance(),
    )
    record.finding = finding(record)
    record.seconds = round(time.perf_counter() - start, 2)
    record.write(out)
    return record.to_json()


def _panel_title(key: str, row: DemoRow, paper: bool) -> str:
    variant, score = key.split("_")
    m = row.maps[key]
    what = f"corner {m.corner_share:.2f}" + (" (max there)" if m.max_in_corner else "") if paper else f"mass {m.target_mass:.2f}"
    what += f"  ρ {m.spearman_vs_original:.2f}" if variant == "shifted" else ""
    # three short lines: a long single line was cut at the panel's edge (the shifted panels' ρ)
    return f"{variant} · {'pre' if score == 'logit' else 'post'}-softmax\n{row.class_name}  p={row.prob:.3f}\n{what}"


def class_agnostic(out: Explained, extra: list[int], names: list[str], method: str, class_names: Sequence[str] | None = None) -> Agnostic:
    """Spearman between the pre-softmax maps of the predicted class and of each requested class, per image.

    ``out``: the engine's maps with ``extra`` as its classes (slot ``1 + j``
    is ``extra[j]``). Near 1 on the shifted model and low on the original:
    the explanation no longer depends on the class it is asked about.
    """
    top1 = out.top1
    rows: list[AgnosticRow] = []
    own = {v: out.maps[(0, method, "logit", v)] for v in ("original", "shifted")}
    for j, c in enumerate(extra):
        other = {v: out.maps[(1 + j, method, "logit", v)] for v in own}
        rho = {v: spearman(own[v], other[v]) for v in own}
        for i, name in enumerate(names):
            if int(top1[i]) == c:
                continue  # the requested class is the prediction: nothing to compare
            rows.append(
                AgnosticRow(
                    image=name,
                    class_=c,
                    class_name=class_name(c, class_names),
                    original=float(rho["original"][i]),
                    shifted=float(rho["shifted"][i]),
                )
            )
    if not rows:
        return Agnostic(method=method, score="logit")
    return Agnostic(
        method=method,
        score="logit",
        mean_original=statistics.mean(r.original for r in rows),
        max_original=max(r.original for r in rows),
        mean_shifted=statistics.mean(r.shifted for r in rows),
        min_shifted=min(r.shifted for r in rows),
        rows=rows,
    )


def _share(r: DemoRow, key: str) -> float:
    return r.maps[key].corner_share or 0.0


def corner_summary(results: list[DemoRow], method: str, area: float) -> Corner:
    """Per class (the prediction; each requested class): mean corner share and how often the maximum is in the corner."""
    groups: dict[str, list[DemoRow]] = {}
    for r in results:
        groups.setdefault("predicted class" if r.predicted else r.class_name, []).append(r)
    out = []
    for name, rows in groups.items():
        out.append(
            CornerClass(
                class_=name,
                pairs=len(rows),
                shifted_logit_mean_share=statistics.mean(_share(r, "shifted_logit") for r in rows),
                shifted_logit_max_in_corner=sum(bool(r.maps["shifted_logit"].max_in_corner) for r in rows),
                original_logit_mean_share=statistics.mean(_share(r, "original_logit") for r in rows),
                original_logit_max_in_corner=sum(bool(r.maps["original_logit"].max_in_corner) for r in rows),
                shifted_prob_mean_share=statistics.mean(_share(r, "shifted_prob") for r in rows),
                shifted_prob_max_in_corner=sum(bool(r.maps["shifted_prob"].max_in_corner) for r in rows),
                shifted_prob_min_spearman=min(r.maps["shifted_prob"].spearman_vs_original or 0.0 for r in rows),
            )
        )
    return Corner(method=method, cell=[0, 0], area_share=area, classes=out)


def finding(rec: DemoRecord) -> str:
    """The result in one sentence with its numbers."""
    results = rec.results
    label = METHOD_LABELS.get(rec.method, rec.method)
    k = f"K={rec.strength:g} at {rec.shift_layer}"
    dp = f"max |Δp| {rec.max_abs_prob_diff:.1e}, top-1 {'unchanged' if rec.top1_agree else 'CHANGED'}"
    agnostic = (rec.class_agnostic or {}).get("gradcam")
    rho = min((r.maps["shifted_prob"].spearman_vs_original or 0.0 for r in results), default=None)
    post = "" if rho is None else f"; the post-softmax map is {'unchanged' if rho >= 0.99 else 'CHANGED'} (min ρ {rho:.3f})"
    if rec.construction == "paper":
        assert rec.corner is not None  # written for the paper construction
        shares = " / ".join(f"{g.shifted_logit_mean_share:.2f} ({g.class_})" for g in rec.corner.classes)
        before = statistics.mean(_share(r, "original_logit") for r in results)
        hits = sum(bool(r.maps["shifted_logit"].max_in_corner) for r in results)
        text = (
            f"The paper's shift ({k}) puts {shares} of the pre-softmax {label} map in the upper-left cell "
            f"(original {before:.2f}; the maximum is there on {hits}/{len(results)} image×class pairs)"
        )
        if agnostic is not None and agnostic.rows:
            other = " / ".join(dict.fromkeys(f"'{r.class_name}'" for r in agnostic.rows))
            text += (
                f" and makes the pre-softmax Grad-CAM class-agnostic (Spearman between the maps of the predicted class and {other}: "
                f"{agnostic.mean_shifted:.2f}, original {agnostic.mean_original:.2f})"
            )
        return text + f", while {dp}{post}."
    fooled = [r for r in results if r.predicted]
    mass = statistics.mean(r.maps["shifted_logit"].target_mass or 0.0 for r in fooled)
    before = statistics.mean(r.maps["original_logit"].target_mass or 0.0 for r in fooled)
    # on a signed map (a transformer's tokens) the gate's CAM term is the fit term: name the one that was built
    name = "fit" if (rec.steering.cam_term or "").startswith("fit") else rec.construction
    return (
        f"The {name} shift ({k}) moves {mass:.2f} of the pre-softmax {label} map of the predicted class into the target "
        f"(original {before:.2f}), while {dp}{post}."
    )
