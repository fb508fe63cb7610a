"""Deletion and insertion AUC (Petsiuk et al. 2018), computed here, for any score of :mod:`logitshift.core.scores`.

For a map ``m`` and fractions ``f = 0, 1/S, …, 1`` (``S = steps``):
deletion sets the ``f`` most relevant pixels (by ``m``) to 0 — the mean
colour after normalisation — and averages the score of ``c`` over ``f``
(lower: the map found what matters); insertion starts from the all-zero
image and puts the ``f`` most relevant pixels back (higher is better). Each
metric scores the honest map and the attacker's map (:class:`..explainer.Context`).
"""

from __future__ import annotations

import torch

from ...core.scores import IMMUNE, score
from ..explainer import Context, Explainer, adapter

STEPS = 8
SCORES = ("logit", "prob", "centered")


def curve(model, x: torch.Tensor, c: torch.Tensor, m: torch.Tensor, how: str, name: str, steps: int = STEPS) -> torch.Tensor:
    """Mean score over the deletion (or insertion) curve, one per image (x: N×C×H×W, m: N×H×W)."""
    n, _, h, w = x.shape
    order = m.flatten(1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    rank = rank.view(n, 1, h, w)
    vals = []
    with torch.no_grad():
        for i in range(steps + 1):
            k = round(i * h * w / steps)
            top = (rank < k).to(x.dtype)
            xi = x * (1 - top) if how == "deletion" else x * top
            vals.append(score(model(xi), c, name).double())
    return torch.stack(vals, dim=1).mean(dim=1)


def _runner(how: str, name: str, ctx: Context):
    def run(model, x, classes):
        ref = ctx.reference.to(x.dtype)
        return torch.stack([curve(model, x, classes, ref[:, j], how, name) for j in range(ref.shape[1])], dim=1)

    return run


@adapter("deletion-insertion")
def explainers(ctx: Context) -> list[Explainer]:
    out = []
    for how, better in (("deletion", "lower"), ("insertion", "higher")):
        for s in SCORES:
            out.append(
                Explainer("logitshift", f"{how} AUC", s, "metric", _runner(how, s, ctx), immune=s in IMMUNE, metric=better, cacheable=True)
            )
    return out
