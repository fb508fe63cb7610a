"""``logitshift evaluate``'s summary: ``rows.csv``, the distribution plots, ``summary.md`` and (last) ``summary.json``.

:func:`write_summary` constructs the run's :class:`~logitshift.runs.records.EvaluateRecord` from the
results store (counts, bad files, the equivalence over every image, the per-(method, score, variant)
statistics) and writes each file atomically; :func:`markdown` and :func:`write_plots` are its pages.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.files import atomic_write, provenance
from ..core.images import Item
from ..shift.model import ShiftSetup
from ..shift.steering import Steering
from .records import BadImage, EvalFiles, EvaluateRecord, ImageCounts, Sample, evaluate_finding, summarize
from .records import Equivalence as EvalEquivalence
from .store import FIELDS, Store


def write_summary(
    out: Path,
    store: Store,
    items: Sequence[Item],
    skipped: int,
    cfg: ShiftSetup,
    plots_wanted: bool,
    batch_size: int,
    ident: dict[str, Any],
    model_name: str,
    default_strength: float | str,
    world: int,
    seconds: float,
    samples: Sequence[Sample] = (),
    steering: Steering | None = None,
) -> dict[str, Any]:
    """rows.csv, the plots, summary.md and (last) summary.json, each written atomically.

    ``steering``: what :func:`logitshift.shift.steer.steer` chose and measured on the check images.
    """

    rows = store.rows()
    images = store.images()
    bad = [BadImage(image=r["image"], name=r["name"], reason=r["reason"]) for r in images if r["status"] == "bad"]
    listed = {it.key for it in items}
    handled = {r["image"] for r in images}
    per_image: dict[str, dict[str, Any]] = {}
    for r in rows:
        e = per_image.setdefault(r["image"], {"diff": r["max_abs_prob_diff"], "top1": {}})
        e["top1"][r["variant"]] = r["top1"]
    diffs = [e["diff"] for e in per_image.values()]
    agree = [len(set(e["top1"].values())) == 1 for e in per_image.values()]
    plots = write_plots(out / "plots", rows) if plots_wanted and rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "rows.csv", buf.getvalue())
    record = EvaluateRecord(
        complete=listed <= handled,
        model=model_name,
        weights=ident["weights"],
        layer=ident["layer"],
        shift_layer=ident["shift_layer"],
        construction=ident["construction"],
        strength=ident["strength"],
        float64_head=ident["float64_head"],
        methods=ident["methods"],
        scores=ident["scores"],
        classes=ident["classes"],
        top_k=ident["top_k"],
        labels=ident["labels"],
        region=cfg.region if cfg.construction == "region" else "cell (0, 0) of the shift layer",
        default_strength=default_strength,
        tolerance=cfg.tolerance,
        variants=["original", "shifted"],
        batch_size=batch_size,
        world_size=world,
        images=ImageCounts(
            listed=len(items),
            evaluated=sum(1 for r in images if r["status"] == "done"),
            bad=len(bad),
            missing=len(listed - handled),
            skipped_non_images=skipped,
        ),
        bad_images=bad,
        rows=len(rows),
        equivalence=EvalEquivalence(
            max_abs_prob_diff=max(diffs) if diffs else None,
            images_over_tolerance=sum(1 for d in diffs if d > cfg.tolerance),
            top1_agree=(sum(agree) / len(agree)) if agree else None,
        ),
        table=summarize(rows),
        samples=list(samples),
        steering=steering,
        files=EvalFiles(plots=[f"plots/{p}" for p in plots]),
        seconds=round(seconds, 2),
        **provenance(),
    )
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
        f"max |Δprob| {'–' if eq['max_abs_prob_diff'] is None else format(eq['max_abs_prob_diff'], '.1e')}; "
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
