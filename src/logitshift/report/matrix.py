"""The page of ``logitshift matrix``: the finding, then methods × scores as one coloured table with thumbnails."""

from __future__ import annotations

from typing import Any

from ..runs.records import MatrixRecord
from ..view.figures import signed_method
from .common import equivalence
from .kit import VERDICT_STYLE, Embedder, Section, colour_bar, esc, fmt, legend
from .run import Run


def render(rec: MatrixRecord, run: Run, embed: Embedder) -> tuple[str, list[Section]]:
    tiles = grid_tiles(embed, rec.figure) if rec.figure else {}
    if rec.figure:  # the grid is shown as the table's thumbnails, not repeated as a large image
        embed.used.add(embed.resolve(rec.figure))
        if not embed.resolve(rec.figure).is_file():
            embed.missing.append(rec.figure)
    signed = any(signed_method(m) for m in rec.methods)
    body = (
        '<p class="lede">Each cell: the mean share of the shifted model\'s map inside the target (large = the explanation was steered), '
        "ρ = the smallest Spearman over the images of the shifted model's map against the original model's (1 = unchanged), and the verdict. "
        f"Thumbnails: image {esc(rec.images[0] if rec.images else '?')}. "
        "Click a column header to sort the methods by it; click a thumbnail to enlarge it.</p>"
        + '<div class="explain">'
        + colour_bar()
        + (colour_bar(signed=True) if signed else "")
        + legend([("dashed outline", "the shift's target"), ("number", "target mass"), ("ρ", "min Spearman vs the original")])
        + "</div>"
        + matrix_table(rec, tiles, embed)
    )
    agree = None if rec.top1_agree is None else (int(rec.top1_agree), 1)
    eq = equivalence(None, rec.max_abs_prob_diff, {}, agree)
    return rec.finding, [Section("matrix", "Methods × scores", body), eq]


def grid_tiles(embed: Embedder, ref: str) -> dict[tuple[str, str], Any]:
    """Thumbnails of the figure's cells, drawn from the maps it was drawn from (``ref`` with ``.npz``,
    :func:`logitshift.view.tiles.save_tiles`): ``{(method, "original" | score): PIL image}``; {} without that file."""
    path = embed.resolve(ref).with_suffix(".npz")
    if not path.is_file() or not path.is_relative_to(embed.root.resolve()):
        return {}
    from PIL import Image

    from ..core.errors import LogitShiftError
    from ..view.tiles import load_tiles, tile

    try:
        tiles = load_tiles(path)
    except LogitShiftError:
        return {}
    return {key: Image.fromarray(tile(tiles, key)) for key in tiles.maps}


def matrix_table(rec: MatrixRecord, tiles: dict[tuple[str, str], Any], embed: Embedder) -> str:
    """Methods (rows) × scores (columns), coloured by the verdict; the original model's map first when the grid has it."""
    methods = list(dict.fromkeys([*rec.methods, *(c.method for c in rec.rows)]))
    scores = list(dict.fromkeys([*rec.scores, *(c.score for c in rec.rows)]))
    cells = {(c.method, c.score): c for c in rec.rows}
    reference = any((m, "original") in tiles for m in methods)
    seen: set[str] = set()
    head = '<th scope="col">method</th>'
    if reference:
        head += '<th scope="col" class="center">original model · logit</th>'
    head += "".join(f'<th scope="col" class="center">{esc(s)}</th>' for s in scores)
    trs = []
    for m in methods:
        tds = [f'<th scope="row" data-v="{esc(m)}">{esc(m)}</th>']
        if reference:
            before = [c.target_mass_original for s in scores if (c := cells.get((m, s))) and c.target_mass_original is not None]
            mass0 = sum(before) / len(before) if before else None
            thumb = embed.img_pil(tiles[(m, "original")], f"{m}: original model, logit") if (m, "original") in tiles else ""
            tds.append(
                f'<td class="cell ref" data-v="{"" if mass0 is None else mass0}"><div class="m">{esc(fmt(mass0)) if mass0 is not None else ""}</div>'
                f'<div class="s">original</div>{thumb}</td>'
            )
        for s in scores:
            c = cells.get((m, s))
            if c is None:
                tds.append('<td class="cell" data-v="">—</td>')
                continue
            style = VERDICT_STYLE.get(c.verdict, "")
            if c.verdict in VERDICT_STYLE:
                seen.add(c.verdict)
            thumb = embed.img_pil(tiles[(m, s)], f"{m}: shifted model, {s}") if (m, s) in tiles else ""
            surprise = f'<div class="surprise">⚠ expected {esc(c.expected or "otherwise")}</div>' if c.as_expected is False else ""
            mass, rho = c.target_mass_shifted, c.spearman_min
            tds.append(
                f'<td class="cell" style="{style}" data-v="{"" if mass is None else mass}">'
                f'<div class="m">{esc(fmt(mass)) if mass is not None else ""}</div>'
                f'<div class="s">{("ρ " + esc(fmt(rho))) if rho is not None else ""}{(" · " + esc(c.verdict)) if c.verdict else ""}</div>{surprise}{thumb}</td>'
            )
        trs.append("<tr>" + "".join(tds) + "</tr>")
    meaning = {
        "fooled": "fooled: the map was steered into the target (the explanation failed)",
        "changed": "changed: the map moved, not into the target",
        "unchanged": "unchanged: ρ ≥ 0.99 on every image (the explanation resisted)",
    }
    swatches = " ".join(f'<span class="swatch" style="{VERDICT_STYLE[v]}"></span>{esc(meaning[v])}' for v in VERDICT_STYLE if v in seen)
    n_ok = sum(1 for c in rec.rows if c.as_expected)
    count = f'<p class="legend">{n_ok} of {len(rec.rows)} cells as expected (logit fooled, immune scores unchanged).</p>'
    return (
        f'<p class="legend">colour: {swatches}</p>{count}'
        f'<div class="table-wrap fit"><table class="sortable matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'
    )
