"""Do the logit explanations of a classifier fine-tuned with Adam differ from its centered-logit ones? (issue 13)

EfficientNet-Lite0 (real weights) with its classifier alone fine-tuned 100
steps of 4 (``benchmarks/detection.py::lite0_head_tuned``: SGD, Adam, AdamW;
predictions unchanged), and the untouched model. For each, the audit's
finding, κ, and for every audited method at every audited layer the Spearman
between the top-1 logit map and the centered-logit map (``z_c − mean_R z``,
the shift-immune score), per image: ``immune`` in ``logitshift.audit.effect``.
"Differs" means Spearman < 0.9 (the benchmark's "changes a map").

Run: ``.venv/bin/python benchmarks/common_mode_heads.py`` (writes
``benchmarks/results/common_mode_heads.md``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection import lite0_base, lite0_head_tuned  # noqa: E402

from logitshift.audit.verdict import audit_model  # noqa: E402

CHANGED_BELOW = 0.9


def finding(found: list[tuple[str, str, float, int, int]]) -> str:
    """The page's result first: κ and the audit's finding of each head, and how many maps their common mode moves."""
    parts = [f"{name} κ {kappa:.2f}, *{what}*, {differ} / {total} maps differ" for name, what, kappa, differ, total in found]
    return (
        "**Finding:** fine-tuning only the classifier grows its common mode, and the audit says what that does to the "
        "maps (a logit map counts as differing from its centered-logit map below Spearman 0.9): " + "; ".join(parts) + "."
    )


def main() -> int:
    torch.set_num_threads(2)
    start = time.perf_counter()
    bases = [lite0_base(2)] + [lite0_head_tuned(o, 2) for o in ("sgd", "adam", "adamw")]
    lines = [
        "# Common mode of fine-tuned classifiers: logit maps vs centered-logit maps",
        "",
        "EfficientNet-Lite0, real weights, 2 images (chelsea, coffee); classifier fine-tuned 100 steps of 4 on the "
        "model's own predictions (`benchmarks/detection.py::lite0_head_tuned`). Per model: the audit's finding, κ, "
        f"and how many (method, layer) pairs have a top-1 logit map whose Spearman with the centered-logit map is below "
        f"{CHANGED_BELOW} on some image, with the lowest Spearman.",
        "",
        "| model | finding | κ | size effect | maps differing (ρ < 0.9) / maps | lowest ρ (logit vs centered) | at |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    detail = []
    found = []  # (name, finding, κ, maps differing, maps)
    for b in bases:
        r = audit_model(b.module, b.x)
        methods = r.effects.methods
        rho = {(m.method, m.layer): 1.0 - max(m.immune) for m in methods}
        differ = [k for k, v in rho.items() if v < CHANGED_BELOW]
        worst = min(rho, key=rho.get)
        lines.append(
            f"| {b.name} | {r.finding} | {r.kappa:.3g} | {r.tests()['effect']['size']:.3f} | {len(differ)} / {len(rho)} | "
            f"{rho[worst]:.2f} | {worst[0]} at {worst[1]} |"
        )
        detail.append((b.name, rho))
        found.append((b.name, r.finding, r.kappa, len(differ), len(rho)))
        print(lines[-1], flush=True)
    lines[2:2] = [finding(found), ""]
    lines += ["", "## Spearman (logit map vs centered-logit map), lowest over the images", ""]
    keys = list(detail[0][1])
    lines.append("| method at layer | " + " | ".join(name for name, _ in detail) + " |")
    lines.append("|---|" + "---:|" * len(detail))
    for k in keys:
        lines.append(f"| {k[0]} at {k[1]} | " + " | ".join(f"{rho.get(k, float('nan')):.2f}" for _, rho in detail) + " |")
    lines += ["", f"{time.perf_counter() - start:.0f} s wall, {torch.get_num_threads()} threads."]
    out = ROOT / "benchmarks" / "results" / "common_mode_heads.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
