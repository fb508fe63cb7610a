"""The page of ``logitshift demo``: the finding, the equivalence check, the paper's effects, one panel per image and class."""

from __future__ import annotations

from ..attribution import METHOD_LABELS
from ..runs.records import SPATIAL_AVERAGE, DemoRecord, DemoRow
from .common import equivalence
from .kit import Embedder, Section, colour_bar, esc, fmt, heat, legend, stat, svg_strip, table
from .run import Run

MAP_KEYS = ("original_logit", "original_prob", "shifted_logit", "shifted_prob")


def render(rec: DemoRecord, run: Run, embed: Embedder) -> tuple[str, list[Section]]:
    paper = rec.construction == "paper"
    #: the paper's construction adds K·Σ_k A_k00 to every class's map in cell (0, 0): a map that averages the
    #: gradient over space (Grad-CAM) shows no corner, so its corner share means nothing and is not charted
    corner = paper and rec.method not in SPATIAL_AVERAGE
    sections = [_equivalence(rec)]
    effects = _paper_effects(rec)
    if effects:
        sections.append(effects)
    sections.append(_panels(rec, run, embed, paper, corner))
    return rec.finding, sections


def _equivalence(rec: DemoRecord) -> Section:
    per_image: dict[str, float] = {}
    for r in rec.results:
        if r.max_abs_prob_diff is not None:
            per_image[r.image] = max(per_image.get(r.image, 0.0), r.max_abs_prob_diff)
    agree = [r.top1_agree for r in rec.results if r.top1_agree is not None]
    worst = rec.max_abs_prob_diff if rec.max_abs_prob_diff is not None else max(per_image.values(), default=None)
    extra = [stat("largest |t(x)|", esc(fmt(rec.max_abs_shift)))] if rec.max_abs_shift is not None else []
    rows = [
        {
            "image": r.image,
            "class": r.class_,
            "class_name": r.class_name,
            "prob": r.prob,
            "predicted": r.predicted,
            "max_abs_prob_diff": r.max_abs_prob_diff,
            "top1_agree": r.top1_agree,
        }
        for r in rec.results
    ]
    cols = [
        ("image", "image"),
        ("class", "class"),
        ("class_name", "class name"),
        ("prob", "p"),
        ("predicted", "predicted"),
        ("max_abs_prob_diff", "max |Δprob|"),
        ("top1_agree", "top-1 agrees"),
    ]
    return equivalence(
        rec.tolerance,
        worst,
        per_image,
        (sum(agree), len(agree)) if agree else None,
        table(cols, rows) if rows else "",
        extra,
    )


def _paper_effects(rec: DemoRecord) -> Section | None:
    """The paper construction's two effects: the corner (per-cell maps) and the class-agnostic map (averaged Grad-CAM)."""
    if rec.corner is None and not rec.class_agnostic:
        return None
    body = ""
    c = rec.corner
    if c is not None and c.classes and c.method not in SPATIAL_AVERAGE:
        method = METHOD_LABELS.get(c.method, c.method)
        body += (
            f'<h3>The upper-left corner ({esc(method)})</h3><p class="lede">Share of the positive pre-softmax map in the cell (0, 0) the shift '
            f"reads (the cell is {esc(fmt(c.area_share))} of the grid) and on how many image×class pairs the map's maximum is there. "
            "A map that keeps the gradient per cell (HiResCAM, LayerCAM) gains K·Σ_k A_k00 in that cell whatever the class; "
            "one that averages it over space (Grad-CAM) does not.</p>"
        )
        rows = [
            {
                "class": k.class_,
                "shifted": k.shifted_logit_mean_share,
                "shifted_max": f"{k.shifted_logit_max_in_corner}/{k.pairs}",
                "original": k.original_logit_mean_share,
                "original_max": f"{k.original_logit_max_in_corner}/{k.pairs}",
                "post": k.shifted_prob_mean_share,
                "post_rho": k.shifted_prob_min_spearman,
            }
            for k in c.classes
        ]
        body += table(
            [
                ("class", "class"),
                ("shifted", "shifted: corner share"),
                ("shifted_max", "max there"),
                ("original", "original: corner share"),
                ("original_max", "max there"),
                ("post", "post-softmax share"),
                ("post_rho", "post-softmax min ρ"),
            ],
            rows,
        )
    if rec.class_agnostic:
        body += (
            '<h3>The class-agnostic map</h3><p class="lede">Spearman between the pre-softmax maps of the predicted class and of the requested '
            "class, on the original and the shifted model: near 1 means the explanation no longer depends on the class asked about.</p>"
        )
        for name, entry in rec.class_agnostic.items():
            cards = [
                stat(label, esc(fmt(v)))
                for label, v in (
                    ("mean ρ, original", entry.mean_original),
                    ("mean ρ, shifted", entry.mean_shifted),
                    ("min ρ, shifted", entry.min_shifted),
                )
                if v is not None
            ]
            body += f"<h4>{esc(METHOD_LABELS.get(name, name))}</h4>" + f'<div class="stats">{"".join(cards)}</div>'
            if entry.rows:
                rows = [{"image": r.image, "class_name": r.class_name, "original": r.original, "shifted": r.shifted} for r in entry.rows]
                body += table(
                    [("image", "image"), ("class_name", "requested class"), ("original", "ρ original"), ("shifted", "ρ shifted")], rows
                )
    return Section("effects", "The paper's effects", body) if body else None


def _panels(rec: DemoRecord, run: Run, embed: Embedder, paper: bool, corner: bool) -> Section:
    expected = list(rec.images)
    seen = {r.image for r in rec.results}
    absent = [i for i in expected if i not in seen]
    if absent:
        from .kit import names

        run.notes.append(f"{len(absent)} image(s) listed in {run.summary_name} have no results: " + names(absent))
    method = METHOD_LABELS.get(rec.method, rec.method)
    groups: dict[str, list[DemoRow]] = {}
    for i, r in enumerate(rec.results):
        groups.setdefault(r.figure or f"#{i}", []).append(r)
    cards = []
    for group in groups.values():
        first = group[0]
        title = f"{first.image} · " + ", ".join(f"{r.class_name} ({r.class_})" for r in group)
        fig = (
            embed.img(first.figure, f"{title}: {method} of the original and the shifted model, pre- and post-softmax")
            if first.figure
            else '<div class="missing-img">no figure recorded for this row</div>'
        )
        badges = []
        for r in group:
            name = f"{r.class_name}: " if len(group) > 1 else ""
            if r.predicted is not None:
                badges.append(f'<span class="badge">{esc(name)}{"predicted class" if r.predicted else "requested class"}</span>')
            if r.prob is not None:
                badges.append(f'<span class="badge">{esc(name)}p = {esc(fmt(r.prob))}</span>')
        diffs = [r.max_abs_prob_diff for r in group if r.max_abs_prob_diff is not None]
        if diffs:
            ok = rec.tolerance is None or max(diffs) <= rec.tolerance
            badges.append(f'<span class="badge {"ok" if ok else "bad"}">max |Δprob| {esc(fmt(max(diffs)))}</span>')
        agree = [r.top1_agree for r in group if r.top1_agree is not None]
        if agree:
            badges.append(f'<span class="badge {"ok" if all(agree) else "bad"}">top-1 {"agrees" if all(agree) else "differs"}</span>')
        key = " ".join(f"{r.image} {r.class_name} {r.class_}" for r in group).lower()
        cards.append(
            f'<article class="panel" data-key="{esc(key)}"><h3>{esc(title)}</h3><div class="badges">{"".join(badges)}</div>'
            f"<figure>{fig}</figure>{_numbers(group, paper, corner)}</article>"
        )
    what = "the corner cell (0, 0) the shift reads" if paper else "the shift's target"
    terms = [("dashed outline", what), ("ρ", "Spearman rank correlation with the original model's map, same score (1 = unchanged)")]
    if corner:
        terms.insert(1, ("corner", "share of the positive map in that cell (max: the map's largest cell is there)"))
    elif not paper:
        terms.insert(1, ("mass", "share of the positive map inside the target"))
    lede = (
        f'<p class="lede">One figure per image{" (every class in it)" if paper else " and class"}, as in the paper\'s Figures 3–5: rows are the '
        f"original and the shifted model; columns the pre-softmax (logit) and post-softmax (probability) {esc(method)} maps. "
        + (
            f"{esc(method)} averages the gradient over space, so the paper's shift shows in it as a class-agnostic map (see above), "
            "not in the corner; the corner share is not charted. "
            if paper and not corner
            else ""
        )
        + "Click a figure to enlarge it.</p>"
    )
    body = (
        lede
        + '<div class="explain">'
        + colour_bar()
        + legend(terms)
        + "</div>"
        + _overview(rec.results, paper, corner)
        + f'<div class="toolbar"><label>Filter <input id="panel-filter" type="search" placeholder="image or class name"></label><span id="panel-count">{len(cards)} shown</span></div>'
        + f'<div class="panels">{"".join(cards)}</div>'
    )
    return Section("panels", f"Panels ({len(cards)})", body)


def _numbers(group: list[DemoRow], paper: bool, corner: bool) -> str:
    """The maps' numbers laid out like the figure: rows original/shifted; per class, columns pre/post-softmax."""
    group = [r for r in group if r.maps]
    if not group:
        return ""
    trs = []
    for variant in ("original", "shifted"):
        tds = []
        for r in group:
            for score in ("logit", "prob"):
                m = r.maps.get(f"{variant}_{score}")
                if m is None:
                    tds.append('<td class="num">—</td>')
                    continue
                rho = f"ρ <b>{esc(fmt(m.spearman_vs_original))}</b>"
                if corner:
                    peak = " · <b>max</b>" if m.max_in_corner else ""
                    tds.append(
                        f'<td class="num" style="{heat(m.corner_share)}">corner <b>{esc(fmt(m.corner_share))}</b>{peak} · {rho}</td>'
                    )
                elif paper:
                    tds.append(f'<td class="num">{rho}</td>')
                else:
                    tds.append(f'<td class="num" style="{heat(m.target_mass)}">mass <b>{esc(fmt(m.target_mass))}</b> · {rho}</td>')
        trs.append(f'<tr><th scope="row">{variant}</th>{"".join(tds)}</tr>')
    if len(group) == 1:
        heads = '<th class="num">pre-softmax (logit)</th><th class="num">post-softmax (prob)</th>'
    else:
        heads = "".join(f'<th class="num">{esc(r.class_name or r.class_)} · {s}</th>' for r in group for s in ("pre", "post"))
    return f'<table class="numbers"><thead><tr><th></th>{heads}</tr></thead><tbody>{"".join(trs)}</tbody></table>'


def _overview(rows: list[DemoRow], paper: bool, corner: bool) -> str:
    keys = [k for k in MAP_KEYS if any(k in r.maps for r in rows)]
    if not keys:
        return ""
    label = {k: k.replace("_logit", " · pre-softmax").replace("_prob", " · post-softmax") for k in keys}
    rho = [(label[k], [r.maps[k].spearman_vs_original for r in rows if k in r.maps]) for k in keys]
    charts = []
    if not paper or corner:
        metric = "corner_share" if corner else "target_mass"
        share = [(label[k], [getattr(r.maps[k], metric) for r in rows if k in r.maps]) for k in keys]
        what = (
            "corner share: share of the positive map in the corner cell (0, 0)"
            if corner
            else "target mass: share of the positive map inside the target"
        )
        charts.append(svg_strip(share, lo=0, hi=1, xlabel=what + " (one dot per image and class, bar = median)"))
    charts.append(svg_strip(rho, lo=-1, hi=1, xlabel="ρ: Spearman against the original model's map, same score"))  # type: ignore[arg-type]
    return '<div class="charts">' + "".join(charts) + "</div>"
