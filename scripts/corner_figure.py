"""Regenerate the README's figures of the paper's construction (the corner and the class-agnostic map).

    .venv/bin/python scripts/corner_figure.py            # both figures into docs/figures/

Runs ``logitshift demo --construction paper --class maze`` (K = 1 at ``head``,
EfficientNet-Lite0 with its real weights) on one sample photo and copies the
figure of that image, the paper's Figures 3–5 (rows original / shifted model;
for the predicted class and for "maze", pre- and post-softmax):

* ``docs/figures/paper_corner_chelsea.png``: HiResCAM on chelsea — the
  shifted pre-softmax map sits in the upper-left cell for both classes;
* ``docs/figures/paper_coffee_maze.png``: Grad-CAM on coffee — the shifted
  pre-softmax maps of both classes are the same (class-agnostic), and not in
  the corner.

Prints each run's finding (the demo's first line).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURES = (
    # (method, image, file under docs/figures)
    ("hirescam", "chelsea", "paper_corner_chelsea.png"),
    ("gradcam", "coffee", "paper_coffee_maze.png"),
)


def shrink(src: Path, dst: Path) -> None:
    """Copy a figure as a 256-colour PNG (a third of the size; the heat maps' colours survive)."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from logitshift.runs.demo import DemoConfig, run_demo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for method, image, name in FIGURES:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = DemoConfig(
                out=tmp, model=args.model, construction="paper", method=method, classes=["maze"], images=[image], progress=False
            )
            summary = run_demo(cfg)
            shrink(Path(tmp) / summary["results"][0]["figure"], out / name)
        print(f"{out / name}: {summary['finding']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
