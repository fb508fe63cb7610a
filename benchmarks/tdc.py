"""The audit as a detector, in the Trojan Detection Challenge's shape (issue 25): a fixed, seeded population of honest
and manipulated models, AUROC, AUPR and false-positive rate at 95 % true-positive rate, with and without the
structural tests, the limit families apart.

Honest: digits CNNs (``tests/digits.py``) trained with SGD, Adam, AdamW, label smoothing, BCE, an Adam-tuned head,
dropout, batch norm, mixup and distillation (10 classes), and SGD, Adam, BCE, batch norm (2 classes); 4 images each.
Not in this population (not run: the machine was shared with other jobs at a load average above 30): the small ViT
and the real-weight EfficientNet-Lite0/1/2 and fine-tuned heads of ``benchmarks/detection.py``.
Manipulated: the adaptive round 2 (``benchmarks/adaptive.py``, one family per place the audit did not look before
issue 25: ``logit-norm``, ``max-one-class``, ``path-gated``, ``two-heads``) and ``few-class`` (region and tanh-norm
shifts on the 2-class CNNs), each at several strengths, on the SGD model. Limits (reported apart): ``linear-head``
(``W + K·1uᵀ``, an honest linear classifier by construction) and ``input-triggered`` (a region shift switched on only
by a bright 2×2 corner patch that no audited image has: an example-based audit cannot see it).

A row *fools* when some map a user explains (Grad-CAM at the default layer, saliency, Integrated Gradients, for the
top-2 classes; for ``input-triggered``, on triggered copies of the images) has Spearman < 0.5 against the honest
model's. Scores: the audit's (``full``: every test) and the effect alone (``effect``: effect / 0.1, the loophole-free
detector: it needs no structure an attacker can patch).

    python benchmarks/tdc.py            # writes benchmarks/results/tdc.json and tdc.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptive import LogitNorm, MaxShift, PathGated, Tail, TwoHeads, Wrapped, region, tanh_norm  # noqa: E402
from digits import RECIPES, audit_images, digits, trained  # noqa: E402

from logitshift.attribution import get_method  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.metrics import spearman  # noqa: E402

FOOLED = 0.5
LIMITS = ("linear-head", "input-triggered")


class RowShift(nn.Module):
    """``W + K·1uᵀ``: the logits plus ``K·uᵀh`` (``h`` the classifier's input)."""

    def __init__(self, base: nn.Module, k: float, seed: int = 0) -> None:
        super().__init__()
        self.base, self.k = base, k
        self.u = torch.randn(base.fc.in_features, generator=torch.Generator().manual_seed(seed))

    def forward(self, x):
        h = torch.flatten(self.base.pool(self.base.features(x)), 1)
        return self.base.fc(h) + self.k * (h @ self.u)[:, None]


def trigger(x: torch.Tensor) -> torch.Tensor:
    """The images with a bright 2×2 patch in the bottom-right corner."""
    out = x.clone()
    out[..., -2:, -2:] = 3.0
    return out


class Triggered(nn.Module):
    """A region shift on only when the bottom-right 2×2 patch is brighter than any digit pixel (> 2)."""

    def __init__(self, base: nn.Module, k: float) -> None:
        super().__init__()
        self.inner, self.k = Tail(base, "features", region(k)), k
        self.base = base

    def forward(self, x):
        on = (x[..., -2:, -2:].flatten(1).mean(dim=1) > 2.0).to(x.dtype)[:, None]
        return self.base(x) * (1 - on) + self.inner(x).to(x.dtype) * on


def worst(honest: nn.Module, model: nn.Module, x: torch.Tensor, ig: bool = False) -> float:
    """The lowest Spearman between honest and manipulated maps a user explains (top-2 classes; Grad-CAM at
    ``features``, saliency, and with ``ig`` Integrated Gradients)."""
    with torch.no_grad():
        top2 = honest(x).topk(2, dim=1).indices
    out = 1.0
    for method, layer in (("gradcam", "features"), ("saliency", None), *((("ig", None),) if ig else ())):
        for r in range(2):
            a = get_method(method).maps(honest, x, top2[:, r], layer=_named(honest, layer))
            b = get_method(method).maps(model, x, top2[:, r], layer=_named(model, layer))
            out = min(out, float(spearman(a, b).min()))
    return out


def _named(model: nn.Module, layer: str | None) -> str | None:
    """The full name of the module called ``layer`` in ``model`` (the shortest, when wrapped)."""
    if layer is None:
        return None
    return min((n for n, _ in model.named_modules() if n.split(".")[-1] == layer), key=len)


def one_class_images(model: nn.Module, label: int = 3, count: int = 6) -> torch.Tensor:
    xs, _ = digits(10)
    with torch.no_grad():
        return xs[model(xs).argmax(1) == label][-count:]


def population():
    """(name, family, honest base, model builder, audit images, fooling images) for every row, seeded."""
    rows = []
    for classes, recipes in ((10, RECIPES), (2, ("sgd", "adam", "bce", "batchnorm"))):
        for recipe in recipes:
            rows.append((f"{recipe}-c{classes}", "honest", recipe, classes, None, None))
    for k in (1.0, 3.0):
        rows.append((f"logit-norm-k{k:g}", "logit-norm", "sgd", 10, lambda b, k=k: Wrapped(b, LogitNorm(k)), None))
    for k in (2.0, 5.0):
        rows.append((f"max-one-class-k{k:g}", "max-one-class", "sgd", 10, lambda b, k=k: Wrapped(b, MaxShift(k)), "one-class"))
    for k in (1e3,):
        rows.append((f"path-gated-k{k:g}", "path-gated", "sgd", 10, lambda b, k=k: PathGated(b, k, _path_floor()), None))
    for k in (10.0,):
        rows.append((f"two-heads-k{k:g}", "two-heads", "sgd", 10, lambda b, k=k: TwoHeads(b, k, dict_output=True), None))
    for k in (1e-1, 1.0):
        rows.append((f"few-class-region-k{k:g}", "few-class", "sgd", 2, lambda b, k=k: Tail(b, "features", region(k)), None))
        rows.append((f"few-class-tanh-k{k:g}", "few-class", "sgd", 2, lambda b, k=k: Tail(b, "features", tanh_norm(k)), None))
    for k in (0.3, 3.0):
        rows.append((f"linear-head-k{k:g}", "linear-head", "sgd", 10, lambda b, k=k: RowShift(b, k), None))
    for k in (1.0,):
        rows.append((f"input-triggered-k{k:g}", "input-triggered", "sgd", 10, lambda b, k=k: Triggered(b, k), "triggered"))
    return rows


def _path_floor() -> float:
    xs, _ = digits(10)
    return 0.9 * float(xs.abs().flatten(1).mean(dim=1).min())


class Logits(nn.Module):
    """A dict-output model's ``logits`` entry (what the maps of :func:`worst` read), for a fair comparison."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        return self.model(x)[self.key]


def run_row(name, family, recipe, classes, build, images) -> dict:
    base = trained(recipe, classes)
    model = base if build is None else build(base).eval()
    x = one_class_images(base, count=4) if images == "one-class" else audit_images(classes, 4)
    start = time.process_time()
    result = audit_model(model, x)
    seconds = time.process_time() - start
    fooling = None
    if build is not None:
        probe = trigger(x) if images == "triggered" else x
        if family == "two-heads":
            honest_heads = TwoHeads(base, 0.0, dict_output=True).eval()
            fooling = min(worst(Logits(honest_heads, key), Logits(model, key), probe) for key in ("logits", "aux"))
        else:
            fooling = worst(base, model, probe, ig=family == "path-gated")
    tests = result.tests()
    return {
        "name": name,
        "family": family,
        "manipulated": build is not None,
        "fools": fooling is not None and fooling < FOOLED,
        "worst_spearman": fooling,
        "finding": result.finding,
        "flagged": result.shifted,
        "full": result.score,
        "effect": tests["effect"]["ratio"],
        "cpu_seconds": round(seconds, 2),
    }


# ----------------------------------------------------------------------------- metrics


def auroc(scores: list[float], labels: list[bool]) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def aupr(scores: list[float], labels: list[bool]) -> float:
    """Average precision: mean over positives of the precision at their rank (ties broken against the detector)."""
    order = sorted(zip(scores, labels), key=lambda t: (-t[0], t[1]))
    hits, total, out = 0, sum(labels), 0.0
    for i, (_, y) in enumerate(order, 1):
        if y:
            hits += 1
            out += hits / i
    return out / total if total else float("nan")


def fpr_at_tpr(scores: list[float], labels: list[bool], tpr: float = 0.95) -> float:
    """The false-positive rate at the lowest threshold that flags at least ``tpr`` of the positives."""
    pos = sorted((s for s, y in zip(scores, labels) if y), reverse=True)
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    cut = pos[max(0, int(-(-tpr * len(pos) // 1)) - 1)]
    return sum(n >= cut for n in neg) / len(neg)


def metrics(rows: list[dict], families: tuple[str, ...] | None, key: str) -> dict:
    """Positives: manipulated rows (of ``families``, all non-limit ones when None) that fool; negatives: honest."""
    chosen = [
        r
        for r in rows
        if not r["manipulated"] or (r["fools"] and (r["family"] in families if families is not None else r["family"] not in LIMITS))
    ]
    scores, labels = [r[key] for r in chosen], [r["manipulated"] for r in chosen]
    return {
        "positives": sum(labels),
        "negatives": len(labels) - sum(labels),
        "auroc": auroc(scores, labels),
        "aupr": aupr(scores, labels),
        "fpr_at_95_tpr": fpr_at_tpr(scores, labels),
        "flagged_at_1": sum(1 for s, y in zip(scores, labels) if y and s > 1.0),
    }


def markdown(out: dict) -> str:
    rows = out["rows"]
    honest = [r for r in rows if not r["manipulated"]]
    fp = sum(r["flagged"] for r in honest)
    main = out["metrics"]["adaptive"]["full"]
    lines = [
        "# Detection in the Trojan Detection Challenge's shape (issue 25)",
        "",
        f"**Finding: on the adaptive round 2 and few-class rows, the default audit flags {main['flagged_at_1']} of "
        f"{main['positives']} fooling models at {fp} of {len(honest)} honest models flagged; AUROC {main['auroc']:.3f}, "
        f"AUPR {main['aupr']:.3f}, FPR at 95 % TPR {main['fpr_at_95_tpr']:.3f}.** "
        f"The limits, measured: {_limit_line(out)}.",
        "",
        f"Population: {len(honest)} honest digits CNNs (trained, not random; recipes in the table), "
        f"{len(rows) - len(honest)} manipulated rows. `python benchmarks/tdc.py`, {out['seconds']:.0f} s wall "
        f"(this 2-core machine shared with other jobs, load average {out['load']:.1f}).",
        "",
        "| rows | detector | positives / negatives | AUROC | AUPR | FPR at 95 % TPR | flagged (score > 1) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, label in (("adaptive", "round 2 + few-class"), ("limits", "limits: linear-head, input-triggered")):
        for key, det in (("full", "audit (every test)"), ("effect", "effect only (loophole-free)")):
            m = out["metrics"][group][key]
            lines.append(
                f"| {label} | {det} | {m['positives']} / {m['negatives']} | {m['auroc']:.3f} | {m['aupr']:.3f} | "
                f"{m['fpr_at_95_tpr']:.3f} | {m['flagged_at_1']} |"
            )
    lines += ["", "| model | family | fools (worst Spearman) | finding | score | effect / 0.1 |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        ws = "" if r["worst_spearman"] is None else f"{'yes' if r['fools'] else 'no'} ({r['worst_spearman']:.2f})"
        lines.append(f"| {r['name']} | {r['family']} | {ws} | {r['finding']} | {r['full']:.3g} | {r['effect']:.3g} |")
    return "\n".join(lines) + "\n"


def _limit_line(out: dict) -> str:
    parts = []
    for family in LIMITS:
        fam = [r for r in out["rows"] if r["family"] == family and r["fools"]]
        parts.append(f"`{family}` {sum(r['flagged'] for r in fam)} of {len(fam)} fooling rows flagged")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tdc"))
    args = p.parse_args(argv)
    import os

    torch.manual_seed(0)
    start = time.time()
    rows = []
    for spec in population():
        rows.append(run_row(*spec))
        print(f"{rows[-1]['name']}: {rows[-1]['finding']} (fools: {rows[-1]['fools']})", file=sys.stderr, flush=True)
    out: dict = {"rows": rows, "seconds": time.time() - start, "load": os.getloadavg()[0], "metrics": {}}
    for group, families in (("adaptive", None), ("limits", LIMITS)):
        out["metrics"][group] = {key: metrics(rows, families, key) for key in ("full", "effect")}
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    Path(args.out + ".md").write_text(markdown(out))
    print(markdown(out).splitlines()[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
