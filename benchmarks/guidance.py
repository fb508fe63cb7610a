"""Which shift-immune score should an explanation use? Measured on honest models.

For each model and each method in :data:`logitshift.attribution.METHODS`
(whatever it holds when this runs), the map of the top-1 class under each
immune score (prob, logprob, centered, contrast) is compared with the map of
the logit, which is what the method shows on an honest model: Spearman over
the map's cells/pixels, median and minimum over images.

Saturation: the share of images whose top-1 probability is ≥ 0.99, and what
it does to the maps. Natural images rarely saturate a 1000-class model, so
the second table sharpens the honest model (logits × T, an honest model with
the same predictions and explanations under the logit or centered logit
up to scale) and follows the probability's maps as ``p → 1``.

Models: EfficientNet-Lite0, -Lite1 and -Lite2 with real ImageNet weights (224,
240 and 260 px, the first 4 sample images); torchvision ``resnet18``, ``vgg11`` and ``mobilenet_v2`` with RANDOM
weights (no real weights offline; 128 px). Integrated Gradients uses 8 steps
and SmoothGrad 8 samples here (enough to compare scores; the comparison is
between scores, not against a converged integral).

Run: ``.venv/bin/python benchmarks/guidance.py`` (writes
``benchmarks/results/guidance.json`` and ``.md``; ``--markdown-only``
re-renders the ``.md`` from the saved ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from logitshift.attribution import METHODS, get_method  # noqa: E402
from logitshift.core.images import SAMPLES, batch, load_image  # noqa: E402
from logitshift.core.metrics import spearman  # noqa: E402
from logitshift.core.models import EFFICIENTNET_LITES, Preprocess, load_model, torchvision_model  # noqa: E402
from logitshift.core.scores import IMMUNE  # noqa: E402

OPTIONS = {"ig": {"steps": 8}, "smoothgrad": {"samples": 8}}
SATURATED = 0.99


class Sharpened(nn.Module):
    """An honest model with logits × T (same predictions, sharper probabilities)."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.temperature


def models(quick: bool):
    names = SAMPLES[:2] if quick else SAMPLES[:4]
    for name in ("efficientnet-lite0",) if quick else EFFICIENTNET_LITES:
        lite = load_model(name)
        x = batch([load_image(s, lite.preprocess) for s in names])
        yield f"{name} (real weights)", lite.module, "head", x, ""
    if quick:
        return
    pre = Preprocess(size=128, resize=128)
    x128 = batch([load_image(s, pre) for s in SAMPLES[:4]])
    for name in ("resnet18", "vgg11", "mobilenet_v2"):
        torch.manual_seed(0)  # the random weights, reproducibly
        loaded = torchvision_model(name, random_init=True)
        yield f"{name} (random weights)", loaded.module, loaded.layer, x128, "base."


def maps_for(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor, scores) -> dict:
    out = {}
    for name, cls in METHODS.items():
        m = get_method(name, **OPTIONS.get(name, {}))
        for s in scores:
            out[name, s] = m.maps(model, x, target, score=s, layer=layer if cls.family == "cam" else None).detach()
    return out


def agreement(model_name: str, model: nn.Module, layer: str, x: torch.Tensor) -> list[dict]:
    with torch.no_grad():
        z = model(x)
    target = z.argmax(1)
    p = torch.softmax(z.double(), 1).gather(1, target[:, None])[:, 0]
    maps = maps_for(model, layer, x, target, ("logit",) + IMMUNE)
    rows = []
    for name in METHODS:
        row = {"model": model_name, "method": name, "images": len(x), "saturated": float((p >= SATURATED).double().mean())}
        for s in IMMUNE:
            rho = spearman(maps[name, s], maps[name, "logit"]).numpy()
            row[s] = {"median": float(np.median(rho)), "min": float(rho.min())}
        rows.append(row)
    return rows


def saturation(model: nn.Module, layer: str, x: torch.Tensor, temperatures=(1, 2, 4, 8, 16)) -> list[dict]:
    """Grad-CAM and saliency of prob / centered vs logit as the honest model is sharpened."""
    rows = []
    with torch.no_grad():
        z = model(x)
    target = z.argmax(1)
    base_maps = {k: v for k, v in maps_for_subset(model, layer, x, target, ("logit",)).items()}
    for t in temperatures:
        sharp = Sharpened(model, float(t))
        with torch.no_grad():
            p = torch.softmax(sharp(x), 1).gather(1, target[:, None])[:, 0]
        maps = maps_for_subset(sharp, "model." + layer, x, target, ("prob", "centered"))
        row = {"T": t, "p_top_median": float(p.median()), "saturated": float((p >= SATURATED).float().mean())}
        for method in ("gradcam", "saliency"):
            for s in ("prob", "centered"):
                m = maps[method, s]
                rho = spearman(m, base_maps[method, "logit"]).numpy()
                row[f"{method}_{s}_median"] = float(np.median(rho))
                row[f"{method}_{s}_min"] = float(rho.min())
                row[f"{method}_{s}_zero_maps"] = int((m.flatten(1).abs().amax(1) == 0).sum())
        rows.append(row)
    return rows


def maps_for_subset(model, layer, x, target, scores) -> dict:
    out = {}
    for name in ("gradcam", "saliency"):
        m = get_method(name)
        for s in scores:
            out[name, s] = m.maps(model, x, target, score=s, layer=layer if name == "gradcam" else None).detach()
    return out


def finding(result: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    rows, sat = result["agreement"], result["saturation"]
    others = ", ".join(f"{min(r[s]['median'] for r in rows):.3f} ({s})" for s in IMMUNE if s != "centered")
    text = (
        f"**Finding:** on these honest models the centered logit's map is the logit's: over every method and model its lowest "
        f"median Spearman is {min(r['centered']['median'] for r in rows):.3f} (worst image "
        f"{min(r['centered']['min'] for r in rows):.3f}), while the other immune scores' medians fall to {others}."
    )
    if sat:
        top = sat[-1]
        low = min(sat, key=lambda r: r["gradcam_prob_median"])
        text += (
            f" Sharpened (logits × T up to {top['T']}, median p(top-1) {top['p_top_median']:.3f}), EfficientNet-Lite0's prob "
            f"Grad-CAM falls to a median {low['gradcam_prob_median']:.3f} (T = {low['T']}, {low['gradcam_prob_zero_maps']} map "
            f"exactly zero) and its saliency to {min(r['saliency_prob_median'] for r in sat):.3f}, while the centered maps' worst "
            f"image stays at {min(r[f'{m}_centered_min'] for r in sat for m in ('gradcam', 'saliency')):.3f}."
        )
    return text


def markdown(result: dict) -> str:
    lines = [
        "# Guidance: immune scores against the logit on honest models",
        "",
        finding(result),
        "",
        f"Generated by `benchmarks/guidance.py` in {result['seconds']:.0f} s (torch {result['torch']}, "
        f"{result['threads']} CPU threads; 1-minute load average {result.get('load_average_at_start', float('nan')):.1f} at the start: "
        "a shared machine, so the time is not a speed figure). Cells: Spearman of the immune score's map against the logit's map "
        "for the top-1 class, median over images (minimum in brackets). IG: 8 steps; SmoothGrad: 8 samples.",
        "",
        "| model | method | saturated (p ≥ 0.99) | " + " | ".join(IMMUNE) + " |",
        "|---|---|---:|" + "---:|" * len(IMMUNE),
    ]
    for r in result["agreement"]:
        cells = " | ".join(f"{r[s]['median']:.3f} ({r[s]['min']:.2f})" for s in IMMUNE)
        lines.append(f"| {r['model']} | {r['method']} | {r['saturated']:.0%} | {cells} |")
    lines += [
        "",
        "## Saturation (EfficientNet-Lite0, logits × T)",
        "",
        "Spearman against the original logit map, median (min); `zero` = maps that are exactly zero "
        "(the float32 gradient of p underflowed).",
        "",
        "| T | median p(top-1) | saturated | Grad-CAM prob | Grad-CAM centered | saliency prob | saliency centered | zero prob maps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["saturation"]:
        lines.append(
            f"| {r['T']} | {r['p_top_median']:.3f} | {r['saturated']:.0%} | "
            f"{r['gradcam_prob_median']:.3f} ({r['gradcam_prob_min']:.2f}) | {r['gradcam_centered_median']:.3f} ({r['gradcam_centered_min']:.2f}) | "
            f"{r['saliency_prob_median']:.3f} ({r['saliency_prob_min']:.2f}) | {r['saliency_centered_median']:.3f} ({r['saliency_centered_min']:.2f}) | "
            f"{r['gradcam_prob_zero_maps'] + r['saliency_prob_zero_maps']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the default model on 2 images only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--markdown-only", action="store_true", help="re-render the .md from the saved .json (no measurement)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    stem = "guidance-quick" if args.quick else "guidance"
    if args.markdown_only:
        (out / f"{stem}.md").write_text(markdown(json.loads((out / f"{stem}.json").read_text())))
        return 0
    torch.set_num_threads(2)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    agree, sat = [], []
    for name, module, layer, x, _ in tqdm(list(models(args.quick)), desc="guidance", unit="model", file=sys.stderr):
        agree += agreement(name, module, layer, x)
        if name.startswith("efficientnet-lite0"):
            sat = saturation(module, layer, x)
    result = {
        "agreement": agree,
        "saturation": sat,
        "seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_at_start": load,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
