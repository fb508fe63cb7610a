"""``logitshift audit`` across torchvision's classifier families (random weights): honest, weakly and strongly shifted.

For one model of each torchvision family the audit runs on the honest model
and on two shifted ones. The shift is written here on a plain forward hook:
``t = K · Σ A[:, :, :H/2, :W/2]`` at the model's default Grad-CAM layer (a
linear read of the top-left quarter), with ``K`` set so that the shift's
common-mode gradient at the input, ``C·‖∇t‖``, is ``r`` times the honest
``‖∇ Σ_j z_j‖`` on the same images: ``r = 1e-3`` (weak: changes no map) and
``r = 1`` (as large as the honest common mode). Random weights only: no
torchvision weights can be had offline. 3 random images per model, 96 px
(224 for inception_v3 and swin_t), the audit's defaults but 4 layers.

Run: ``.venv/bin/python benchmarks/audit_zoo.py`` (writes
``benchmarks/results/audit_zoo.md`` and ``.json``; ``--markdown-only``
re-renders the ``.md`` from the saved ``.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.models import torchvision_model  # noqa: E402

FAMILIES = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "mnasnet1_0", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnet50",
    "resnext50_32x4d", "shufflenet_v2_x1_0", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11", "wide_resnet50_2",
]  # fmt: skip
RATIOS = (1e-3, 1.0)


class QuarterShift(nn.Module):
    """``base(x) + K·Σ A[:, :, :H/2, :W/2]·1`` with ``A`` the output of ``layer`` (float64 head)."""

    def __init__(self, base: nn.Module, layer: str, k: float) -> None:
        super().__init__()
        self.base, self.layer, self.k = base, layer, k

    def quarter(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        store: dict[str, torch.Tensor] = {}
        handle = self.base.get_submodule(self.layer).register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            z = self.base(x)
        finally:
            handle.remove()
        a = store["a"]
        return z, a[:, :, : max(1, a.shape[2] // 2), : max(1, a.shape[3] // 2)].double().sum(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, t = self.quarter(x)
        return z.double() + self.k * t[:, None]


def strength_for(base: nn.Module, layer: str, x: torch.Tensor, ratio: float) -> float:
    """``K`` such that ``C·‖∇_x t‖ = ratio · ‖∇_x Σ_j z_j‖`` on ``x``."""
    probe = QuarterShift(base, layer, 1.0)
    xg = x.clone().requires_grad_(True)
    z, t = probe.quarter(xg)
    (g_t,) = torch.autograd.grad(t.sum(), xg, retain_graph=True)
    (g_z,) = torch.autograd.grad(z.sum(), xg)
    unit = z.shape[1] * float(g_t.norm())
    return ratio * float(g_z.norm()) / unit if unit > 0 else float("nan")


def row(name: str) -> dict:
    torch.manual_seed(0)
    loaded = torchvision_model(name, random_init=True)
    size = 224 if name.startswith(("inception", "swin")) else 96
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    honest = audit_model(loaded.module, x, max_layers=4)
    out = {
        "model": name,
        "layer": loaded.layer,
        "cut": honest.head.layer if honest.head else None,
        "honest": summary(honest),
        "seconds": 0.0,
    }
    for ratio in RATIOS:
        k = strength_for(loaded.module, loaded.layer, x, ratio)
        if k != k:  # the quarter has no gradient at all
            out[f"r={ratio:g}"] = None
            continue
        out[f"r={ratio:g}"] = {**summary(audit_model(QuarterShift(loaded.module, loaded.layer, k), x, max_layers=4)), "K": k}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def summary(result) -> dict:
    tests = result.tests()
    return {
        "verdict": result.verdict,
        "score": result.score,
        "kappa": result.kappa,
        "bypass": tests["bypass"]["ratio"] if "bypass" in tests else None,
        "head": tests["head"]["ratio"] if "head" in tests else None,
    }


def finding(result: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    s = result["summary"]
    ok = [r for r in result["rows"] if "error" not in r]
    cut = [r["r=0.001"]["score"] for r in ok if r["r=0.001"] and r["cut"]]
    flagged = [r for r in ok if r["honest"]["verdict"] == "shifted"]
    text = (
        f"**Finding:** the audit flags {s['weak_flagged']} of {s['weak']} weak shifts (r = 1e-3, which changes no map; "
        f"lowest score {min(cut, default=float('nan')):.3g} on the {len(cut)} with a classifier cut) and "
        f"{s['strong_flagged']} of {s['strong']} strong ones (r = 1), and calls {s['honest_flagged']} of {s['models']} "
        "honest models shifted"
    )
    if flagged:
        text += ": " + ", ".join(
            f"{r['model']} (κ {r['honest']['kappa']:.3g}" + (", no linear classifier found: κ alone decides)" if r["cut"] is None else ")")
            for r in flagged
        )
    failed = len(result["rows"]) - len(ok)
    return text + (f"; {failed} of {len(result['rows'])} families could not be audited." if failed else ".")


def markdown(result: dict) -> str:
    lines = [
        "# `logitshift audit` across torchvision families (random weights)",
        "",
        finding(result),
        "",
        f"Generated by `benchmarks/audit_zoo.py` on {result['machine']} in {result['seconds']:.0f} s (torch {result['torch']}, "
        f"{result['threads']} threads). Shift: `K·Σ A[:, :, :H/2, :W/2]` at the default layer, `K` set so that its common-mode "
        "gradient at the input is r × the honest one. Score above 1: *shifted*. Bypass/head `–`: no linear classifier found "
        "(κ alone).",
        "",
        "| model | classifier input (cut) | honest: verdict, score (κ) | r = 1e-3: verdict, score (bypass) | r = 1: verdict, score |",
        "|---|---|---|---|---|",
    ]

    def cell(s, extra):
        if s is None:
            return "no gradient"
        value = s.get(extra)
        return f"{s['verdict']}, {s['score']:.3g}" + (f" ({'–' if value is None else f'{value:.3g}'})" if extra else "")

    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['cut'] or '–'} | {cell(r['honest'], 'kappa')} | {cell(r['r=0.001'], 'bypass')} | {cell(r['r=1'], '')} |"
        )
    s = result["summary"]
    lines += [
        "",
        f"Honest models called shifted: {s['honest_flagged']} of {s['models']} ({', '.join(s['honest_flagged_names']) or 'none'}). "
        f"Weak shifts (r = 1e-3) flagged: {s['weak_flagged']} of {s['weak']}; strong (r = 1): {s['strong_flagged']} of {s['strong']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown-only", action="store_true", help="re-render the .md from the saved .json (no measurement)")
    args = ap.parse_args(argv)
    out = ROOT / "benchmarks" / "results"
    if args.markdown_only:
        (out / "audit_zoo.md").write_text(markdown(json.loads((out / "audit_zoo.json").read_text())))
        return 0
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = []
    for name in tqdm(FAMILIES, desc="audit zoo", unit="model", file=sys.stderr):
        try:
            rows.append(row(name))
        except Exception as exc:  # one architecture the audit cannot take must not hide the others
            rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
    ok = [r for r in rows if "error" not in r]
    weak = [r["r=0.001"] for r in ok if r["r=0.001"]]
    strong = [r["r=1"] for r in ok if r["r=1"]]
    result = {
        "rows": rows,
        "summary": {
            "models": len(ok),
            "honest_flagged": sum(r["honest"]["verdict"] == "shifted" for r in ok),
            "honest_flagged_names": [r["model"] for r in ok if r["honest"]["verdict"] == "shifted"],
            "weak": len(weak),
            "weak_flagged": sum(s["verdict"] == "shifted" for s in weak),
            "strong": len(strong),
            "strong_flagged": sum(s["verdict"] == "shifted" for s in strong),
        },
        "seconds": time.perf_counter() - start,
        "machine": f"{platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "audit_zoo.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "audit_zoo.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
