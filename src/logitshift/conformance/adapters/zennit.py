"""zennit: LRP composites on the raw model (logit) and on :class:`logitshift.defend.ScoreWrapper`.

No canonizer (BatchNorm layers keep their own rule); the relevance at the
input is summed over colour channels. ``EpsilonGammaBox`` gets the input's
range as its box.
"""

from __future__ import annotations

import torch

from ...defend import ScoreWrapper
from ..explainer import Context, Explainer, adapter, maps_of, need

COMPOSITES = (
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
    "ExcitationBackprop",
    "GuidedBackprop",
)
SCORES = ("logit", "centered", "prob")


def _runner(name: str, score: str):
    def run(model, x, classes):
        composites = need("zennit.composites", "zennit")
        from zennit.attribution import Gradient

        fwd = model if score == "logit" else ScoreWrapper(model, score).eval()
        cls = getattr(composites, name)
        comp = cls(low=float(x.min()), high=float(x.max())) if name == "EpsilonGammaBox" else cls()
        x = x.detach().clone().requires_grad_(True)
        with torch.no_grad():
            width = fwd(x[:1]).shape[1]
        onehot = torch.eye(width, dtype=x.dtype)[classes]
        with Gradient(model=fwd, composite=comp) as attributor:
            _, relevance = attributor(x, onehot)
        return maps_of(relevance)

    return run


@adapter("zennit")
def explainers(ctx: Context) -> list[Explainer]:
    need("zennit.composites", "zennit")
    out = []
    for name in COMPOSITES:
        for s in SCORES:
            label = "logit" if s == "logit" else f"ScoreWrapper({s})"
            out.append(Explainer("zennit", name, label, "propagation", _runner(name, s), immune=s != "logit"))
    return out
