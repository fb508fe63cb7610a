"""Parts every page shares: the header (finding first, then what was run), the equivalence check, leftover figures,
and what a results store holds when a run stopped before its record was written."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import LogitShiftError
from ..runs.records import summarize
from ..runs.store import snapshot
from .kit import PAPER, Embedder, Section, esc, figure, finding, fmt, names, num, rel, stat, svg_strip, table
from .run import Run

#: (record attribute, label) shown in the header when the record has them
HEADER_FIELDS = (
    ("model", "model"),
    ("weights", "weights"),
    ("layer", "explanation layer"),
    ("shift_layer", "shift layer"),
    ("method", "method"),
    ("construction", "construction"),
    ("strength", "strength K"),
    ("region", "target"),
    ("target", "target"),
    ("methods", "methods"),
    ("scores", "scores"),
    ("images", "images"),
    ("float64_head", "float64 head"),
    ("tolerance", "tolerance"),
    ("seconds", "run time (s)"),
)


def _shown(key: str, value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)}: " + names([str(v) for v in value], 6)
    if hasattr(value, "evaluated"):  # evaluate's image counts
        return f"{value.evaluated} evaluated of {value.listed}" + (f" ({value.bad} unreadable)" if value.bad else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if key == "seconds" and num(value) is not None:
        return f"{value:.1f}"
    return fmt(value)


def header(run: Run, sentence: str) -> str:
    """The page header: the finding first (one sentence with its numbers), then what was run and how to cite it."""
    from .._version import __version__

    rec = run.record
    values: dict[str, Any] = {k: getattr(rec, k) for k, _ in HEADER_FIELDS if rec is not None and hasattr(rec, k)}
    if rec is None:
        values = {k: run.inferred[k] for k, _ in HEADER_FIELDS if k in run.inferred}
    cmd = run.command or "incomplete run"
    if rec is None and run.command:
        cmd += " (incomplete)"
    items = [
        f"<div><dt>{esc(label)}</dt><dd>{esc(_shown(k, values[k]))}</dd></div>"
        for k, label in HEADER_FIELDS
        if values.get(k) not in (None, "", [], {})
    ]
    date, date_label = _date(run)
    items.append(f"<div><dt>{esc(date_label)}</dt><dd>{esc(date)}</dd></div>")
    versions = rec.versions if rec is not None else {}
    vtext = " · ".join(f"{k} {v}" for k, v in versions.items()) or f"not recorded (report by logitshift {__version__})"
    items.append(f"<div><dt>versions</dt><dd>{esc(vtext)}</dd></div>")
    bits = [
        f"logitshift {versions.get('logitshift', __version__)}",
        f"“logitshift {run.command}”" if run.command else "run folder " + run.path.name,
    ]
    if values.get("model"):
        bits.append(f"model {values['model']}" + (f", layer {values['layer']}" if values.get("layer") else ""))
    if values.get("construction"):
        strength = values.get("strength")
        shown = (
            ", ".join(f"{k} {v:g}" for k, v in strength.items())
            if isinstance(strength, dict)
            else fmt(strength)
            if strength is not None
            else ""
        )
        bits.append(
            f"{values['construction']} shift"
            + (f", K={shown}" if shown else "")
            + (f" at {values['shift_layer']}" if values.get("shift_layer") else "")
        )
    bits.append(date)
    cite = "; ".join(bits) + f". After {PAPER}."
    line = getattr(rec, "command_line", "") if rec is not None else ""
    command = f'<p class="cite">Command: <code>{esc(line)}</code></p>' if line else ""
    return (
        f'<header class="page"><div class="inner"><h1>logitshift report · <span class="cmd">{esc(cmd)}</span></h1>'
        + (finding(sentence) if sentence else "")
        + f'<p class="lede">Run folder <code>{esc(run.path.resolve())}</code>. The logit shift z → z + t(x)·1 keeps every '
        "prediction and probability and changes every gradient of a logit; this page shows what it does to the explanations.</p>"
        f'<dl class="meta">{"".join(items)}</dl>{command}<p class="cite">Cite as: <code>{esc(cite)}</code></p></div></header>'
    )


def _date(run: Run) -> tuple[str, str]:
    if run.record is not None and run.record.date:
        return run.record.date, "run date"
    src = run.path / run.summary_name
    if not src.is_file():
        src = max(run.images, key=lambda p: p.stat().st_mtime, default=run.path)
    t = _dt.datetime.fromtimestamp(src.stat().st_mtime, _dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC"), f"{src.name} written"


def equivalence(
    tol: float | None,
    worst: float | None,
    per_image: dict[str, float],
    agree: tuple[int, int] | None,
    rows_html: str = "",
    extra_cards: Sequence[str] = (),
) -> Section:
    """The check that the shifted model is the same classifier: max |Δprob| against the tolerance, top-1 agreement."""
    cards = []
    if worst is not None:
        ok = tol is None or worst <= tol
        bound = (f" <small>≤ {esc(fmt(tol))}</small>" if ok else f" <small>&gt; {esc(fmt(tol))}</small>") if tol else ""
        cards.append(stat("max |Δprob|", esc(fmt(worst)) + bound, "ok" if ok else "bad"))
    if agree is not None:
        n, total = agree
        cards.append(stat("top-1 agreement", f"{n} / {total}", "ok" if n == total else "bad"))
    cards.extend(extra_cards)
    body = (
        '<p class="lede">The shifted model must be equivalent to the original: the same probabilities (max |Δprob| '
        "within the tolerance) and the same top-1 class on every image. Green: the check passed; red: it failed.</p>"
        f'<div class="stats">{"".join(cards)}</div>'
    )
    zeros = sum(1 for d in per_image.values() if d == 0)
    if per_image and zeros == len(per_image):
        body += f'<p class="legend">max |Δprob| is exactly 0 on all {zeros} images.</p>'
    elif per_image:
        label = "max |Δprob| between the original and the shifted model (log scale)" + (
            f"; {zeros} image(s) exactly 0, drawn at the left edge" if zeros else ""
        )
        body += svg_strip(
            [("max |Δprob| per image", list(per_image.values()))],
            log=True,
            ref=tol,
            ref_label=f"tolerance {fmt(tol)}" if tol else "",
            xlabel=label,
        )
    return Section("equivalence", "Equivalence", body + rows_html)


def other_figures(run: Run, embed: Embedder) -> Section | None:
    """Figures in the folder the record does not show (or every figure, when there is no record)."""
    rest = [p for p in run.images if p.resolve() not in embed.used]
    if not rest:
        return None
    title = "Figures found" if run.record is None else "Other figures"
    lede = (
        "summary.json is missing, so these figures are shown without their numbers."
        if run.record is None
        else f"Figures in the folder that {run.summary_name} does not mention (for example left over from an earlier run in the same folder)."
    )
    figs = "".join(figure(embed.img(p, p.stem.replace("_", " ")), rel(p, run.path)) for p in rest)
    return Section("figures", f"{title} ({len(rest)})", f'<p class="lede">{esc(lede)}</p><div class="gallery">{figs}</div>')


def stats_table(table_rows: Sequence[Any]) -> str:
    """Per method, score and model: rows and the distributions of target mass and ρ (records.StatRow)."""
    flat = []
    for t in table_rows:
        row: dict[str, Any] = {"method": t.method, "score": t.score, "variant": t.variant, "rows": t.rows}
        for metric, short in (("target_mass", "mass"), ("spearman_vs_original", "ρ")):
            for q in ("mean", "median", "p10", "p90"):
                row[f"{short} {q}"] = getattr(getattr(t, metric), q)
        flat.append(row)
    cols = [("method", "method"), ("score", "score"), ("variant", "model"), ("rows", "rows")]
    cols += [
        (k, k) for k in (f"{s} {q}" for s in ("mass", "ρ") for q in ("mean", "median", "p10", "p90")) if any(r[k] is not None for r in flat)
    ]
    return table(cols, flat)


def store_section(run: Run, store: Path) -> str:
    """What a results store holds, read through :func:`logitshift.runs.store.snapshot`: images done and bad, statistics per group."""
    name = rel(store, run.path)
    try:
        _config, images, rows = snapshot(store)
    except LogitShiftError as exc:
        run.notes.append(str(exc))
        return ""
    done = sum(1 for i in images if i["status"] == "done")
    bad = [{"image": i["image"], "reason": i["reason"]} for i in images if i["status"] == "bad"]
    cards = [stat("images done", str(done))] + ([stat("images not evaluated", str(len(bad)))] if bad else [])
    cards.append(stat("result rows", str(len(rows))))
    out = f'<h3>Results store <code>{esc(name)}</code></h3><div class="stats">{"".join(cards)}</div>'
    if bad:
        out += f"<h3>Files not evaluated ({len(bad)})</h3>" + table([("image", "file"), ("reason", "reason")], bad)
    if rows:
        out += "<h3>Statistics per method, score and model (so far)</h3>" + stats_table(summarize(rows))
    return out
