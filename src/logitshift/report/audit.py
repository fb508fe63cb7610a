"""The page of ``logitshift audit``: the finding, the verdict, each test, the evidence per layer, the maps it changes."""

from __future__ import annotations

from typing import Any

from ..runs.records import AuditRecord
from .kit import Embedder, Section, esc, figure, num, table
from .run import Run


def render(rec: AuditRecord, run: Run, embed: Embedder) -> tuple[str, list[Section]]:
    word = rec.verdict.lower() or "unknown"
    cls = word if word in ("clean", "shifted") else "unknown"
    detail = []
    for label, value in (("score", rec.score), ("κ max", rec.kappa), ("κ threshold", rec.threshold)):
        if value is not None:
            detail.append(f"{label} {value:.3g}")
    if rec.where:
        detail.append(f"evidence at {rec.where}")
    if rec.classes:
        detail.append(f"{rec.classes} classes")
    if not rec.verdict:
        run.notes.append(f"the audit verdict is missing from {run.summary_name}")
    body = (
        f'<div class="verdict {cls}"><span class="word">{esc(word)}</span><span class="detail">{esc(" · ".join(detail))}</span></div>'
        '<p class="lede">The effect compares, for every method and audited layer, the logit map with the map without the part of '
        "the common mode that a structural test proves is a shift, and with the map whose common mode is held to the largest size honest "
        "classes give (exactly 0 for an honest model; a map counts as changed below Spearman 0.9). "
        "The bypass test measures the part of the common-mode gradient that does not flow through the classifier's input (zero for an honest "
        "model, whatever its size); the head test, how much the classifier's common-mode gradient varies from image to image. "
        "κ compares the common mode's size (plain, and weighted by the activations as CAMs weight it) with the spread of the class gradients: "
        "evidence only; so is immune (the plain disagreement of the logit map with the centered-logit map, whatever moved it) except in an "
        "audit run with --strict. The score is the largest of the deciding ratios (bypass, head, feature, effect / 0.1, and immune / 0.1 "
        f"under --strict): above 1 the verdict is shifted.{' This audit was run with --strict.' if rec.strict else ''}</p>"
    )
    if rec.tests:
        rows = [
            {
                "test": k,
                "value": t.get("value"),
                "ratio": t.get("ratio"),
                "layer": t.get("layer", ""),
                "fired": "yes" if t.get("fired") else "no",
                "role": "decides" if t.get("decides", True) else "evidence only",
            }
            for k, t in rec.tests.items()
        ]
        cols = [("test", "test"), ("value", "statistic"), ("ratio", "ratio (fires above 1)"), ("layer", "layer"), ("fired", "fired")]
        body += "<h3>Tests</h3>" + table([*cols, ("role", "role")], rows)
    if rec.evidence:
        body += "<h3>Evidence per layer</h3>" + evidence(rec)
    else:
        run.notes.append(f"the audit's evidence is missing from {run.summary_name}")
    body += effects(rec.effects)
    figs = [p for p in run.images if p.stem.lower().startswith("audit")]
    if not figs:
        run.notes.append("the audit figure (audit.png) is missing")
    body += (
        '<div class="gallery wide">'
        + "".join(figure(embed.img(p, "where the shift acts: κ per layer and per cell", wide=True), p.name) for p in figs)
        + "</div>"
    )
    return rec.headline, [Section("audit", "Audit verdict", body)]


def effects(items: list[dict[str, Any]]) -> str:
    hit = sorted((m for m in items if (num(m.get("effect")) or 0) > 0), key=lambda m: -m["effect"])[:12]
    if not hit:
        return ""
    rows = [
        {
            "method": m.get("method"),
            "layer": m.get("layer"),
            "effect": m.get("effect"),
            "structural": max(m.get("structural") or [0]),
            "size": max(m.get("size") or [0]),
        }
        for m in hit
    ]
    cols = [("method", "method"), ("layer", "layer"), ("effect", "effect (1 − Spearman)"), ("structural", "structural"), ("size", "size")]
    return "<h3>Maps the common mode changes</h3>" + table(cols, rows)


def evidence(rec: AuditRecord) -> str:
    """Per-layer rows (κ max, norms, disagreement), then κ per image × layer."""

    def mean(v: Any) -> Any:
        xs = [x for x in v if num(x) is not None] if isinstance(v, list) else None
        return sum(xs) / len(xs) if xs else v if not isinstance(v, list) else None

    def top(v: Any) -> Any:
        xs = [x for x in v if num(x) is not None] if isinstance(v, list) else None
        return max(xs) if xs else v if not isinstance(v, list) else None

    rows = []
    for e in rec.evidence:
        shape = e.get("shape")
        rows.append(
            {
                "layer": e.get("layer"),
                "shape": "×".join(map(str, shape)) if isinstance(shape, list) else shape,
                "kappa_max": e.get("kappa_max", top(e.get("kappa"))),
                "common": mean(e.get("common_norm")),
                "class": mean(e.get("class_norm")),
                "disagreement": e.get("disagreement_max", top(e.get("disagreement"))),
                "bypass": e.get("bypass_max", top(e.get("bypass"))),
            }
        )
    cols = [
        ("layer", "layer"),
        ("shape", "shape"),
        ("kappa_max", "κ max"),
        ("common", "mean ‖∇ mean z‖"),
        ("class", "mean ‖∇(z_c − mean z)‖"),
        ("disagreement", "max 1 − Spearman"),
        ("bypass", "max bypass fraction"),
    ]
    out = table([c for c in cols if any(r.get(c[0]) is not None for r in rows)], rows)
    kappas = [e.get("kappa") for e in rec.evidence]
    if rec.images and all(isinstance(k, list) and len(k) == len(rec.images) for k in kappas):
        per_image = [{"image": n, **{str(e.get("layer")): k[i] for e, k in zip(rec.evidence, kappas)}} for i, n in enumerate(rec.images)]  # type: ignore[index]
        out += "<h3>κ per image and layer</h3>" + table(
            [("image", "image")] + [(str(e.get("layer")), str(e.get("layer"))) for e in rec.evidence], per_image
        )
    return out
