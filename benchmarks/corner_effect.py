"""Where does the paper's upper-left-corner effect come from?

The paper's shift ``t = K·Σ_k A[k,0,0]`` read at the Grad-CAM layer itself
makes the logit Grad-CAM class-agnostic (it tends to ``Σ_k A_k``) but does not
by itself put the map in the corner (notes §3). This script measures, for
several arrangements of the layer the shift reads (``shift``) and the layer
Grad-CAM explains (``cam``), on the real EfficientNet-Lite0 and on a
VGG19-shaped model (torchvision's architecture; random weights, since no real
VGG19 weights can be had offline):

* ``corner``: share of the positive logit-Grad-CAM mass inside the image area
  of the shift layer's cell (0, 0), averaged over the 4 sample images;
* ``agnostic``: Spearman between the logit maps for the predicted class and for
  "maze" (1 = the map no longer depends on the class).

Run: ``.venv/bin/python benchmarks/corner_effect.py`` (writes
``benchmarks/results/corner_effect.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from logitshift.attribution import GradCAM, forward_pass, predicted  # noqa: E402
from logitshift.images import DEFAULT_SAMPLES, batch, load_image  # noqa: E402
from logitshift.metrics import spearman, target_mass  # noqa: E402
from logitshift.models import load_model, torchvision_model  # noqa: E402
from logitshift.shift import PaperShift, ShiftedModel, layer_grid  # noqa: E402

ARRANGEMENTS = {
    "efficientnet-lite0": [
        ("head", "head", "same layer (post-ReLU6 feature map)"),
        ("head", "head.1", "CAM before the activation (BN output), shift after it"),
        ("head", "head.0", "CAM at the 1×1 conv output, shift after BN+ReLU6"),
        ("head", "blocks.15", "CAM one block earlier, shift at the feature map"),
        ("blocks.15", "head", "shift one block earlier than the CAM layer"),
    ],
    "vgg19 (random weights)": [
        ("features.35", "features.35", "same layer (last conv, post-ReLU, 14×14)"),
        ("features.36", "features.36", "same layer (after the last max-pool, 7×7)"),
        ("features.36", "features.35", "CAM at last ReLU, shift after the max-pool (the authors' hook)"),
        ("features.36", "features.34", "CAM at last conv (pre-ReLU), shift after the max-pool"),
        ("features.35", "features.34", "CAM at last conv (pre-ReLU), shift after its ReLU"),
    ],
}


def measure(module, x, shift_layer, cam_layer, strength):
    shifted = ShiftedModel(module, shift_layer, PaperShift(strength))
    gh, gw = layer_grid(module, shift_layer, x)
    ch, cw = layer_grid(module, cam_layer, x)
    size = x.shape[-1]
    corner_px = F.interpolate(PaperShift(1).target_weights(gh, gw)[None, None], size=(size, size), mode="nearest")[0, 0]
    weights = F.adaptive_avg_pool2d(corner_px[None, None], (ch, cw))[0, 0]
    p = forward_pass(shifted, x, [cam_layer])
    top1 = predicted(p)
    maze = torch.full_like(top1, 646)
    cam = GradCAM()
    row = {}
    for variant in ("original", "shifted"):
        own = cam.from_pass(p, cam_layer, top1, "logit", variant)
        other = cam.from_pass(p, cam_layer, maze, "logit", variant)
        row[variant] = (float(target_mass(own, weights).mean()), float(spearman(own, other).mean()))
    return row, corner_px.mean().item()


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    lines = [
        "# The paper's corner effect: which arrangement of layers shows it",
        "",
        "Paper's shift `t = K·Σ_k A[k,0,0]` (K = 1), logit Grad-CAM, 4 sample images.",
        "`corner` = share of the positive map inside the area of the shift layer's cell (0,0);",
        "`agnostic` = Spearman(map for the predicted class, map for 'maze'). Produced by `benchmarks/corner_effect.py`.",
        "",
        "| model | shift reads | Grad-CAM at | arrangement | corner area | corner (orig → shifted) | agnostic (orig → shifted) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model_name, arrangements in ARRANGEMENTS.items():
        loaded = load_model() if model_name == "efficientnet-lite0" else torchvision_model("vgg19", random_init=True)
        x = batch([load_image(s, loaded.preprocess) for s in DEFAULT_SAMPLES])
        for shift_layer, cam_layer, what in arrangements:
            row, area = measure(loaded.module, x, shift_layer, cam_layer, 1.0)
            (c0, a0), (c1, a1) = row["original"], row["shifted"]
            line = f"| {model_name} | `{shift_layer}` | `{cam_layer}` | {what} | {area:.3f} | {c0:.3f} → {c1:.3f} | {a0:.2f} → {a1:.2f} |"
            print(line, flush=True)
            lines.append(line)
    out = Path(__file__).with_name("results") / "corner_effect.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
