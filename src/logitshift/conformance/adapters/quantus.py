"""Quantus faithfulness metrics, with its ``softmax`` switch off (logits) and on, and on :class:`logitshift.defend.ScoreWrapper`.

Small settings (stated in the table): FaithfulnessCorrelation with
``nr_runs = samples``, subsets of 224·28 pixels; PixelFlipping in 8 steps;
RegionPerturbation (MoRF) of 8 regions of 28×28 pixels; baseline "black".
Per image: FaithfulnessCorrelation's correlation (higher is better),
PixelFlipping's mean curve (lower), RegionPerturbation's mean curve (AOPC,
higher). Each metric scores the honest map and the attacker's map.
"""

from __future__ import annotations

import numpy as np
import torch

from ...defend import ScoreWrapper
from ..explainer import Context, Explainer, absent, adapter, need

#: metric, better, factory options given the image size
METRICS = ("FaithfulnessCorrelation", "PixelFlipping", "RegionPerturbation")
BETTER = {"FaithfulnessCorrelation": "higher", "PixelFlipping": "lower", "RegionPerturbation": "higher"}
#: label -> (softmax switch, immune score wrapper or None)
VARIANTS = {"softmax=False": (False, None), "softmax=True": (True, None), "ScoreWrapper(centered)": (False, "centered")}


def _metric(q, name: str, ctx: Context):
    size = ctx.size
    common = {"disable_warnings": True, "display_progressbar": False}
    if name == "FaithfulnessCorrelation":
        return q.FaithfulnessCorrelation(
            nr_runs=ctx.samples, subset_size=size * 28, perturb_baseline="black", abs=False, normalise=True, **common
        )
    if name == "PixelFlipping":
        return q.PixelFlipping(features_in_step=size * size // 8, perturb_baseline="black", **common)
    return q.RegionPerturbation(patch_size=28, regions_evaluation=8, perturb_baseline="black", order="morf", **common)


def _runner(name: str, softmax: bool, wrap: str | None, ctx: Context):
    def run(model, x, classes):
        q = need("quantus", "quantus")
        fwd = ScoreWrapper(model, wrap).eval() if wrap else model
        ref = ctx.reference.float().numpy()
        vals = []
        for j in range(ref.shape[1]):
            np.random.seed(0)
            torch.manual_seed(0)
            metric = _metric(q, name, ctx)
            out = metric(
                model=fwd,
                x_batch=x.detach().cpu().numpy(),
                y_batch=classes.cpu().numpy(),
                a_batch=ref[:, j : j + 1],
                device="cpu",
                softmax=softmax,
                channel_first=True,
            )
            vals.append([float(np.mean(v)) for v in out])
        return torch.tensor(vals, dtype=torch.float64).T

    return run


@adapter("quantus")
def explainers(ctx: Context) -> list[Explainer]:
    q = need("quantus", "quantus")
    out = []
    for name in METRICS:
        if not hasattr(q, name):
            out.append(Explainer("quantus", name, "*", "metric", absent(name, "quantus"), metric=BETTER[name]))
            continue
        for label, (softmax, wrap) in VARIANTS.items():
            out.append(
                Explainer(
                    "quantus",
                    name,
                    label,
                    "metric",
                    _runner(name, softmax, wrap, ctx),
                    immune=softmax or wrap is not None,
                    metric=BETTER[name],
                    cacheable=True,
                )
            )
    return out
