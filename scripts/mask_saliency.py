"""Draw a word into a mask PNG, steer the saliency map of the logit to it, and plot the result.

    .venv/bin/python scripts/mask_saliency.py --word HI --out docs/mask_saliency.png

Columns: the image with the mask's outline; saliency (``max_c |∂s/∂x|``) of
the original model's logit; of the shifted model's logit (the word appears);
of the shifted model's probability (unchanged). Each map is shown in
grey levels clipped at its 99th percentile. Prints the mask's share of
saliency mass against its share of the area.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from logitshift.attribution import Saliency
    from logitshift.core.files import atomic_write
    from logitshift.core.images import batch, load_image
    from logitshift.core.metrics import target_mass
    from logitshift.core.models import load_model
    from logitshift.core.targets import text_mask
    from logitshift.shift.steer import steer
    from logitshift.view.figures import _plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--word", default="HI")
    ap.add_argument("--images", nargs="+", default=["chelsea", "coffee", "astronaut"])
    ap.add_argument("--out", default="docs/mask_saliency.png")
    args = ap.parse_args(argv)

    loaded = load_model()
    images = [load_image(s, loaded.preprocess) for s in args.images]
    x = batch(images)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "mask.png"
        target = text_mask(args.word, x.shape[-1], png)  # the PNG is what `--target` would read
        shifted = steer(loaded, str(png), methods=["saliency"], check=x)
    c = loaded.module(x).argmax(1)
    sal = Saliency()
    maps = {
        "original model · logit": sal.maps(shifted, x, c, "logit", "original"),
        "shifted model · logit": sal.maps(shifted, x, c, "logit", "shifted"),
        "shifted model · probability": sal.maps(shifted, x, c, "prob", "shifted"),
    }
    area = float(target.mask.mean())
    for k, m in maps.items():
        share = target_mass(m, target.mask)
        print(f"{k}: mask share of saliency {[round(float(v), 3) for v in share]} (mask area {area:.3f})")

    plt = _plt()
    fig, axes = plt.subplots(len(images), 4, figsize=(10, 2.6 * len(images)), dpi=90, squeeze=False)
    for i, im in enumerate(images):
        axes[i, 0].imshow(im.rgb)
        axes[i, 0].contour(target.mask.numpy(), levels=[0.5], colors="yellow", linewidths=0.8)
        axes[i, 0].set_title(f"{im.name} + mask '{args.word}'", fontsize=9)
        for j, (k, m) in enumerate(maps.items(), start=1):
            v = m[i]
            v = (v / torch.quantile(v.flatten(), 0.99).clamp_min(1e-12)).clamp(0, 1)
            share = float(target_mass(m[i : i + 1], target.mask)[0])
            axes[i, j].imshow(v.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_title(f"{k}\nmask share {share:.2f} (area {area:.2f})", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    fig.suptitle(
        f"Saliency of EfficientNet-Lite0, shifted by an input term shaped like '{args.word}' (probabilities unchanged)", fontsize=10
    )
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, format="png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
