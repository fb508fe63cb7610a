"""The two audit figures of ``docs/audit.md``: EfficientNet-Lite0 (real weights) honest, and shifted.

The shifted model carries a ``region`` shift (K = 1e-3, top-left) read at
``blocks.10``; both are audited on chelsea and coffee with the audit's
defaults. Writes ``docs/figures/audit_clean.png`` and
``docs/figures/audit_region_blocks10.png`` and prints each verdict, its
tests and the wall-clock time of the audit.

Run: ``.venv/bin/python benchmarks/audit_figures.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.capture import layer_grid  # noqa: E402
from logitshift.core.images import batch, load_image  # noqa: E402
from logitshift.core.models import load_model  # noqa: E402
from logitshift.core.targets import parse_target  # noqa: E402
from logitshift.runs.audit import figure  # noqa: E402
from logitshift.shift.model import RegionShift, ShiftedModel  # noqa: E402


def main() -> int:
    torch.set_num_threads(2)
    loaded = load_model()
    x = batch([load_image(s, loaded.preprocess) for s in ("chelsea", "coffee")])
    h, w = layer_grid(loaded.module, "blocks.10", x)
    shifted = ShiftedModel(
        loaded.module, "blocks.10", RegionShift(1e-3, parse_target("top-left", x.shape[-1]).weights(h, w)), torch.float64
    )
    out = ROOT / "docs" / "figures"
    for name, model in (("audit_clean.png", loaded.module), ("audit_region_blocks10.png", shifted)):
        start = time.perf_counter()
        result = audit_model(model, x, image_names=["chelsea", "coffee"])
        seconds = time.perf_counter() - start
        figure(result, out / name)
        tests = ", ".join(f"{k} {t['ratio']:.3g}{' FIRED' if t['fired'] else ''}" for k, t in result.tests().items())
        print(f"{name}: {result.verdict} (score {result.score:.3g}; {tests}; evidence at {result.where}) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
