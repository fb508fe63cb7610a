"""``logitshift evaluate``'s sample figures: per method, the images at the top, the median and the bottom.

:func:`pick_samples` chooses them from the store's rows (the shifted model's logit map of each image's
predicted class, by its target mass, or by its ρ against the original under the paper's construction);
:func:`write_samples` draws their maps (rows original / shifted, one column per score) under ``OUT/samples``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..attribution import engine
from ..core.images import Item, load_image
from ..view.figures import grid_figure, scaled, signed_method
from .records import Sample

SAMPLES = ("largest", "median", "smallest")


def pick_samples(rows: Sequence[dict[str, Any]], methods: Sequence[str], scores: Sequence[str], paper: bool) -> list[Sample]:
    """Per method, the images at the top, the median and the bottom of the shifted model's map distribution.

    Region construction: by the target mass of the logit map (the explanation
    moved most / typically / least); the paper's construction (no target): by
    its ρ against the original map. Only each image's predicted class.
    """
    score = "logit" if "logit" in scores else scores[0]
    metric = "spearman_vs_original" if paper else "target_mass"
    words = "ρ vs the original" if paper else "target mass"
    picks: list[Sample] = []
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
                Sample(method=m, image=r["image"], name=r["name"], class_=r["class"], why=f"{why} {score} {words}", value=r[metric])
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
) -> list[Sample]:
    """Figures of the maps of :func:`pick_samples`' images (rows original / shifted, one column per score) under ``out/samples``."""
    picks = pick_samples(rows, [m.name for m in methods], scores, paper)
    specs = {it.key: it.spec for it in items}
    picks = [p for p in picks if p.image in specs]
    if not picks:
        return []
    keys = list(dict.fromkeys(p.image for p in picks))
    images = {k: load_image(specs[k], preprocess) for k in keys}
    x = torch.stack([images[k].tensor for k in keys]).to(device)
    used = [m for m in methods if m.name in {p.method for p in picks}]
    result = engine.explain(shifted, x, layer, used, scores, ("original", "shifted"))
    size = x.shape[-1]
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, p in enumerate(picks):
        i, m = keys.index(p.image), p.method
        signed = signed_method(m)
        cells = [
            [(scaled(result.maps[(0, m, s, v)][i : i + 1], size, signed)[0], f"{v} · {s}") for s in scores] for v in ("original", "shifted")
        ]
        name = f"samples/{n:02d}_{m}_{re.sub(r'[^A-Za-z0-9._-]', '_', p.name)[:40]}.png"
        grid_figure(
            out / name,
            images[p.image].rgb,
            cells,
            signed=signed,
            target=target_px.cpu().numpy(),
            suptitle=f"{p.name} · {m} · class {p.class_} ({p.why} {p.value:.2f})",
            side=2.6,
            dpi=90,
            target_label="the corner cell the shift reads" if paper else "the shift's target",
        )
        p.figure = name
        written.append(p)
    return written
