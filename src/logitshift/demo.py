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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .attribution import (
    CAM_METHODS,
    METHOD_LABELS,
    CamMethod,
    forward_pass,
    get_method,
    normalize,
    predicted,
    upsample,
)
from .capture import layer_grid
from .classes import class_name, resolve_class
from .errors import LogitShiftError
from .figures import classes_figure, paper_figure
from .files import provenance, run_dir, write_json
from .images import DEFAULT_SAMPLES, batch, load_image
from .metrics import max_in_target, spearman, target_mass
from .models import get_layer, load_model
from .shift import DEFAULT_STRENGTH, ShiftSetup, compare, shift_model
from .targets import parse_target

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


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo and return the summary (also written to ``cfg.out/summary.json``)."""
    from tqdm import tqdm

    from .device import resolve_device

    start = time.perf_counter()
    if cfg.method not in CAM_METHODS:
        raise LogitShiftError(f"method {cfg.method!r}: demo draws maps on a layer's grid; expected one of {', '.join(CAM_METHODS)}")
    device = resolve_device(cfg.device)
    out = run_dir(cfg.out, cfg.force)
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names)
    loaded.module.to(device)
    layer = cfg.layer or loaded.layer
    shift_layer = cfg.shift_layer or layer
    get_layer(loaded.module, layer)
    get_layer(loaded.module, shift_layer)
    extra = list(dict.fromkeys(resolve_class(c, loaded.num_classes, loaded.class_names) for c in cfg.classes))
    images = [load_image(spec, loaded.preprocess) for spec in cfg.images]
    x = batch(images).to(device)
    size = x.shape[-1]
    grid = layer_grid(loaded.module, layer, x)
    shift_grid = layer_grid(loaded.module, shift_layer, x)
    paper = cfg.construction == "paper"
    target = parse_target(cfg.region, size, shift_grid) if not paper else None
    shifted = shift_model(
        loaded.module,
        shift_layer,
        cfg.construction,
        cfg.strength,
        target,
        check=x,
        tolerance=cfg.tolerance,
        head_dtype=torch.float64 if cfg.float64_head else None,
    )
    # The target (paper: the corner cell) at pixel resolution (for overlays) and on the map's grid.
    target_px = F.interpolate(shifted.target_weights(*shift_grid).cpu()[None, None], size=(size, size), mode="nearest")[0, 0]
    weights = F.adaptive_avg_pool2d(target_px[None, None], grid)[0, 0]

    cam = get_method(cfg.method)
    assert isinstance(cam, CamMethod)
    label = METHOD_LABELS.get(cfg.method, cfg.method)
    p = forward_pass(shifted, x, [layer])
    top1 = predicted(p)
    probs = torch.softmax(p.logits["original"].detach(), dim=1)
    jobs = [top1] + [torch.full_like(top1, c) for c in extra]
    raws = [{key: cam.from_pass(p, layer, t, key.split("_")[1], key.split("_")[0]) for key in MAPS} for t in jobs]
    bar = tqdm(total=len(jobs) * len(images), desc="demo", unit="map", disable=not cfg.progress, file=sys.stderr)
    results = []
    for i, im in enumerate(images):
        eq = compare(p.logits["original"][i : i + 1].detach(), p.logits["shifted"][i : i + 1].detach())
        rows, heats, titles = [], [], []
        for target_class, raw in zip(jobs, raws):
            c = int(target_class[i])
            row: dict[str, Any] = {
                "image": im.name,
                "class": c,
                "class_name": class_name(c, loaded.class_names),
                "prob": float(probs[i, c]),
                "predicted": c == int(top1[i]),
                "max_abs_prob_diff": eq.max_abs_prob_diff,
                "top1_agree": eq.top1_agree == 1.0,
                "maps": {},
            }
            for key in MAPS:
                m = raw[key][i : i + 1]
                rho = float(spearman(m, raw[f"original_{key.split('_')[1]}"][i : i + 1])[0])
                if paper:
                    share = float(target_mass(m, weights)[0])
                    row["maps"][key] = {"corner_share": share, "max_in_corner": max_in_target(m, weights)[0], "spearman_vs_original": rho}
                else:
                    row["maps"][key] = {"target_mass": float(target_mass(m, weights)[0]), "spearman_vs_original": rho}
            rows.append(row)
            if cfg.figures:
                heats.append({k: normalize(upsample(raw[k][i : i + 1], size))[0] for k in MAPS})
                titles.append({k: _panel_title(k, row, paper) for k in MAPS})
            bar.update(1)
        if cfg.figures:
            suptitle = f"{im.name}: {label} at {layer}, {cfg.construction} shift at {shift_layer}"
            if paper:  # the paper's Figures 3-5: one figure per image, every class in it
                name = f"{im.name}.png"
                classes_figure(out / name, im.rgb, heats, titles, suptitle + " (dashed: the corner cell)", target_px.numpy())
                for row in rows:
                    row["figure"] = name
            else:
                for row, h, t in zip(rows, heats, titles):
                    name = f"{im.name}_{row['class']}.png"
                    paper_figure(out / name, im.rgb, h, t, suptitle, target_px.numpy())
                    row["figure"] = name
        results.extend(rows)
    bar.close()
    eq_all = compare(p.logits["original"].detach(), p.logits["shifted"].detach())
    summary: dict[str, Any] = {
        "command": "demo",
        "model": loaded.name,
        "layer": layer,
        "shift_layer": shift_layer,
        "method": cfg.method,
        "construction": cfg.construction,
        "strength": shifted.shift.strength,
        "default_strength": DEFAULT_STRENGTH[cfg.construction],
        "region": cfg.region if not paper else "cell (0, 0) of the shift layer",
        "float64_head": cfg.float64_head,
        "tolerance": cfg.tolerance,
        "images": [im.name for im in images],
        "max_abs_prob_diff": eq_all.max_abs_prob_diff,
        "top1_agree": eq_all.top1_agree == 1.0,
        "max_abs_shift": eq_all.max_abs_shift,
    }
    if extra:
        summary["class_agnostic"] = {
            name: class_agnostic(p, layer, top1, extra, [im.name for im in images], name, loaded.class_names)
            for name in dict.fromkeys(["gradcam", cfg.method])
        }
    if paper:
        summary["corner"] = corner_summary(results, cfg.method, float(weights.sum() / weights.numel()))
    summary["finding"] = finding(summary, results)
    summary["results"] = results
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary.update(provenance())
    write_json(Path(out) / "summary.json", summary)
    return summary


def _panel_title(key: str, row: dict, paper: bool) -> str:
    variant, score = key.split("_")
    m = row["maps"][key]
    what = f"corner {m['corner_share']:.2f}" + (" (max there)" if m["max_in_corner"] else "") if paper else f"mass={m['target_mass']:.2f}"
    return f"{variant} · {'pre' if score == 'logit' else 'post'}-softmax\n{row['class_name']}  p={row['prob']:.3f}  {what}"


def class_agnostic(
    p, layer: str, top1: torch.Tensor, extra: list[int], names: list[str], method: str, class_names: Sequence[str] | None = None
) -> dict:
    """Spearman between the pre-softmax maps of the predicted class and of each requested class, per image.

    Near 1 on the shifted model and low on the original: the explanation no
    longer depends on the class it is asked about.
    """
    cam = get_method(method)
    assert isinstance(cam, CamMethod)
    rows: list[dict[str, Any]] = []
    own = {v: cam.from_pass(p, layer, top1, "logit", v) for v in ("original", "shifted")}
    for c in extra:
        other = {v: cam.from_pass(p, layer, torch.full_like(top1, c), "logit", v) for v in own}
        rho = {v: spearman(own[v], other[v]) for v in own}
        for i, name in enumerate(names):
            if int(top1[i]) == c:
                continue  # the requested class is the prediction: nothing to compare
            rows.append(
                {
                    "image": name,
                    "class": c,
                    "class_name": class_name(c, class_names),
                    "original": float(rho["original"][i]),
                    "shifted": float(rho["shifted"][i]),
                }
            )
    if not rows:
        return {"method": method, "score": "logit", "rows": []}
    return {
        "method": method,
        "score": "logit",
        "mean_original": statistics.mean(r["original"] for r in rows),
        "max_original": max(r["original"] for r in rows),
        "mean_shifted": statistics.mean(r["shifted"] for r in rows),
        "min_shifted": min(r["shifted"] for r in rows),
        "rows": rows,
    }


def corner_summary(results: list[dict], method: str, area: float) -> dict:
    """Per class (the prediction; each requested class): mean corner share and how often the maximum is in the corner."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault("predicted class" if r["predicted"] else r["class_name"], []).append(r)
    out = []
    for name, rows in groups.items():
        entry: dict[str, Any] = {"class": name, "pairs": len(rows)}
        for key in ("shifted_logit", "original_logit", "shifted_prob"):
            entry[f"{key}_mean_share"] = statistics.mean(r["maps"][key]["corner_share"] for r in rows)
            entry[f"{key}_max_in_corner"] = sum(r["maps"][key]["max_in_corner"] for r in rows)
        entry["shifted_prob_min_spearman"] = min(r["maps"]["shifted_prob"]["spearman_vs_original"] for r in rows)
        out.append(entry)
    return {"method": method, "cell": [0, 0], "area_share": area, "classes": out}


def finding(summary: dict, results: list[dict]) -> str:
    """The result in one sentence with its numbers."""
    label = METHOD_LABELS.get(summary["method"], summary["method"])
    k = f"K={summary['strength']:g} at {summary['shift_layer']}"
    dp = f"max |Δp| {summary['max_abs_prob_diff']:.1e}, top-1 {'unchanged' if summary['top1_agree'] else 'CHANGED'}"
    agnostic = (summary.get("class_agnostic") or {}).get("gradcam") or {}
    if summary["construction"] == "paper":
        groups = summary["corner"]["classes"]
        shares = " / ".join(f"{g['shifted_logit_mean_share']:.2f} ({g['class']})" for g in groups)
        before = statistics.mean(r["maps"]["original_logit"]["corner_share"] for r in results)
        hits = sum(r["maps"]["shifted_logit"]["max_in_corner"] for r in results)
        text = (
            f"The paper's shift ({k}) puts {shares} of the pre-softmax {label} map in the upper-left cell "
            f"(original {before:.2f}; the maximum is there on {hits}/{len(results)} image×class pairs)"
        )
        if agnostic.get("rows"):
            other = " / ".join(dict.fromkeys(f"'{r['class_name']}'" for r in agnostic["rows"]))
            text += (
                f" and makes the pre-softmax Grad-CAM class-agnostic (Spearman between the maps of the predicted class and {other}: "
                f"{agnostic['mean_shifted']:.2f}, original {agnostic['mean_original']:.2f})"
            )
        return text + f", while {dp}."
    fooled = [r for r in results if r["predicted"]]
    mass = statistics.mean(r["maps"]["shifted_logit"]["target_mass"] for r in fooled)
    before = statistics.mean(r["maps"]["original_logit"]["target_mass"] for r in fooled)
    return (
        f"The region shift ({k}) moves {mass:.2f} of the pre-softmax {label} map of the predicted class into the target "
        f"(original {before:.2f}), while {dp}."
    )


# ----------------------------------------------------------------------------- command line


def add_command(subparsers) -> None:
    """Register ``logitshift demo``."""
    import argparse

    from .cli import model_flags, shift_flags

    demo = subparsers.add_parser(
        "demo",
        help="reproduce the paper: pre/post-softmax Grad-CAM of an original and a shifted model",
        description="Reproduce Lerma & Lucas (arXiv:2307.03305) on a real ImageNet model, offline.",
        epilog="examples:\n  logitshift demo --out runs/demo --images chelsea coffee --class maze --construction paper\n"
        "  logitshift demo --construction paper --method hirescam --class maze --model efficientnet-lite2 --out runs/corner",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    model_flags(demo)
    shift_flags(demo)
    demo.add_argument("--images", nargs="+", default=None, help="image files or sample names (default: chelsea coffee rocket astronaut)")
    demo.add_argument(
        "--method",
        default="gradcam",
        choices=CAM_METHODS,
        help="CAM method of the maps (default gradcam; hirescam or layercam show the paper's corner)",
    )
    demo.add_argument("--class", dest="classes", action="append", default=[], help="extra class to explain, by name or index (repeatable)")
    demo.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.add_argument("--report", action="store_true", help="also write report.html, one self-contained HTML page, into --out")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .cli import shift_setup
    from .images import DEFAULT_SAMPLES

    cfg = DemoConfig(
        **shift_setup(args),
        out=args.out,
        images=args.images or list(DEFAULT_SAMPLES),
        force=args.force,
        method=args.method,
        progress=not args.no_progress,
        device=args.device,
    )
    summary = run_demo(cfg)
    figures = len({r["figure"] for r in summary["results"] if r.get("figure")})
    print(f"{summary['finding']}\n{figures} figures and summary.json in {args.out} ({summary['seconds']:.1f} s)")
    if getattr(args, "report", False):
        from .report import write_report

        print(f"report: {write_report(args.out)}")
    return 0
