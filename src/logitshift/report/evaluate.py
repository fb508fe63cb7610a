"""The page of ``logitshift evaluate``: the finding, heatmaps at the extremes of the distribution, the statistics, the equivalence."""

from __future__ import annotations

from ..attribution import METHOD_LABELS
from ..runs.records import EvaluateRecord
from ..view.figures import signed_method
from .common import equivalence, stats_table
from .kit import Embedder, Section, colour_bar, esc, figure, fmt, heat, legend, stat, table
from .run import Run


def render(rec: EvaluateRecord, run: Run, embed: Embedder) -> tuple[str, list[Section]]:
    paper = rec.construction == "paper"
    im = rec.images
    if im.missing:
        run.notes.append(f"{im.missing} listed image(s) were never evaluated (the run stopped early; resume it with --resume)")
    if not rec.complete:
        run.notes.append(f"{run.summary_name} says the evaluation is not complete")
    sections = []
    if rec.samples:
        sections.append(samples(rec, embed, paper))
    cards = [
        stat(f"images {k}", esc(fmt(getattr(im, k))), "bad" if k in ("bad", "missing") and getattr(im, k) else "")
        for k in ("listed", "evaluated", "bad", "missing")
    ]
    cards.append(stat("result rows", esc(fmt(rec.rows))))
    body = f'<div class="stats">{"".join(cards)}</div>'
    if rec.table:
        body += overview(rec, paper)
        body += "<h3>Statistics per method, score and model</h3>" + stats_table(rec.table)
    if rec.bad_images:
        rows = [{"image": b.image, "reason": b.reason} for b in rec.bad_images]
        body += f"<h3>Files not evaluated ({len(rows)})</h3>" + table([("image", "file"), ("reason", "reason")], rows)
    if rec.files.plots:
        body += (
            '<h3>Distributions</h3><div class="gallery">'
            + "".join(figure(embed.img(p, p.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("_", " ")), p) for p in rec.files.plots)
            + "</div>"
        )
    sections.append(Section("evaluation", "Evaluation", body))
    eq = rec.equivalence
    extra = [stat("images over the tolerance", str(eq.images_over_tolerance), "ok" if eq.images_over_tolerance == 0 else "bad")]
    if eq.top1_agree is not None:
        extra.append(stat("top-1 agreement", f"{100 * eq.top1_agree:.1f}% of images", "ok" if eq.top1_agree == 1 else "bad"))
    sections.append(equivalence(rec.tolerance, eq.max_abs_prob_diff, {}, None, "", extra))
    return rec.finding, sections


def samples(rec: EvaluateRecord, embed: Embedder, paper: bool) -> Section:
    """Per method, the maps of the images at the top, the median and the bottom of the distribution."""
    by_method: dict[str, list] = {}
    for s in rec.samples:
        by_method.setdefault(s.method, []).append(s)
    what = "ρ against the original model's map" if paper else "share of the shifted model's logit map inside the target"
    body = (
        f'<p class="lede">For each method, the images where the {esc(what)} is largest, median and smallest: rows are the original and '
        "the shifted model, columns the scores. Click a figure to enlarge it.</p>"
        + '<div class="explain">'
        + colour_bar()
        + (colour_bar(signed=True) if any(signed_method(m) for m in by_method) else "")
        + legend([("dashed outline", "the corner cell the shift reads" if paper else "the shift's target")])
        + "</div>"
    )
    for m, items in by_method.items():
        figs = "".join(
            figure(embed.img(s.figure, f"{m}: {s.name}, {s.why}"), f"{s.name} (class {s.class_}): {s.why} {fmt(s.value)}") for s in items
        )
        body += f'<h3>{esc(METHOD_LABELS.get(m, m))}</h3><div class="gallery samples" data-method="{esc(m)}">{figs}</div>'
    return Section("samples", "Maps", body)


def overview(rec: EvaluateRecord, paper: bool) -> str:
    """Methods × scores: the shifted model's mean target mass (region) and median ρ, over all images."""
    head = '<th scope="col">method</th>' + "".join(f'<th scope="col" class="center">{esc(s)}</th>' for s in rec.scores)
    trs = []
    for m in rec.methods:
        tds = [f'<th scope="row">{esc(m)}</th>']
        for s in rec.scores:
            t, o = rec.stat(m, s, "shifted"), rec.stat(m, s, "original")
            if t is None:
                tds.append('<td class="cell">—</td>')
                continue
            rho = f"ρ {fmt(t.spearman_vs_original.median)}"
            if paper:
                tds.append(f'<td class="cell" data-v="{t.spearman_vs_original.median}"><div class="m">{esc(rho)}</div></td>')
            else:
                before = f" ({fmt(o.target_mass.mean)} before)" if o is not None else ""
                tds.append(
                    f'<td class="cell" style="{heat(t.target_mass.mean)}" data-v="{t.target_mass.mean}"><div class="m">{esc(fmt(t.target_mass.mean))}</div>'
                    f'<div class="s">{esc(rho + before)}</div></td>'
                )
        trs.append("<tr>" + "".join(tds) + "</tr>")
    what = (
        "median ρ of the shifted model's map against the original's (the paper's construction has no target to measure)"
        if paper
        else "mean share of the shifted model's map inside the target (darker: more), median ρ against the original's, and the original's mean share"
    )
    return (
        f'<h3>Methods × scores, shifted model</h3><p class="lede">{esc(what)}.</p>'
        f'<div class="table-wrap fit"><table class="sortable matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'
    )
