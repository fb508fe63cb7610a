"""Next-token attributions: which prompt tokens a causal LM's next-token score rests on.

The model is seen from its token embeddings (:class:`~logitshift.core.lm.NextToken`: an
N×D×1×L input, next-token logits ``z`` N×V), so :func:`~.engine.explain` serves every method
and score in one pass. For a target token ``c`` (and, for ``logitdiff``, a contrast token ``k``):

==========  ============================  ======================
score       formula                       immune to ``z + t·1``
==========  ============================  ======================
logit       ``z_c``                       no
logprob     ``z_c − logsumexp_j z_j``     yes
centered    ``z_c − mean_j z_j``          yes
logitdiff   ``z_c − z_k``                 yes
==========  ============================  ======================

``logitdiff``: every method here is linear in the score's gradient before its reduction over D
(saliency's raw attribution is the gradient; IG's path is the same for both tokens), so its raw
attribution is the ``logit`` one of ``c`` minus that of ``k`` — two class slots of one engine call.

Methods (one value per token, reduced over the D embedding dimensions): ``saliency``
``max_d |∂s/∂e_{id}|``; ``gradxinput`` ``Σ_d e_{id} ∂s/∂e_{id}``; ``ig`` ``Σ_d IG_{id}``
(Gauss–Legendre, baseline the zero embedding unless given), the same numbers as Captum's
``Saliency`` and ``LayerIntegratedGradients`` on the embedding layer.

Example::

    >>> lm = load_lm("gpt2", random_weights=True); ids = lm.encode(["a cat sat"])
    >>> maps = token_attributions(NextToken(lm.model), lm.grid(ids), torch.tensor([5]), scores=("logit", "logprob"))
    >>> maps["ig", "logprob"].shape        # N×L
    torch.Size([1, 9])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import LogitShiftError
from ..core.metrics import target_mass
from . import get_method
from .engine import explain

LM_SCORES = ("logit", "logprob", "centered", "logitdiff")
LM_IMMUNE = ("logprob", "centered", "logitdiff")
LM_METHODS = ("saliency", "gradxinput", "ig")


def token_mass(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Share of each map's absolute mass on the chosen tokens: ``Σ_i w_i |a_i| / Σ_i |a_i|`` (N×L maps, 1×L weights; 0 for an all-zero map)."""
    return target_mass(maps.abs()[:, None, :], weights.view(1, -1))


def lm_methods(names: Sequence[str] = LM_METHODS, steps: int = 32, baseline: float | torch.Tensor = 0.0, batch_size: int = 32):
    """The attribution objects for ``names`` (``ig`` with ``steps`` and ``baseline``)."""
    out = []
    for n in names:
        if n not in LM_METHODS:
            raise LogitShiftError(f"method {n!r}: expected one of {', '.join(LM_METHODS)} for a language model")
        out.append(get_method(n, steps=steps, baseline=baseline, batch_size=batch_size) if n == "ig" else get_method(n))
    return out


def token_attributions(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    methods: Sequence[str] = LM_METHODS,
    scores: Sequence[str] = ("logit",),
    contrast: torch.Tensor | None = None,
    variant: str = "original",
    steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
    raw: bool = False,
    batch_size: int = 32,
) -> dict[tuple[str, str], torch.Tensor]:
    """``{(method, score): N×L}`` next-token attributions of token ``target`` (N) for embeddings ``x`` (N×D×1×L).

    ``variant``: ``"shifted"`` explains a shifted model's shifted logits. ``raw``: N×D×L
    attributions (before the reduction over D) instead of the maps. ``batch_size``: IG points per
    pass (1 keeps the peak memory at one forward + backward of the prompt).
    """
    for s in scores:
        if s not in LM_SCORES:
            raise LogitShiftError(f"score {s!r}: expected one of {', '.join(LM_SCORES)} for a language model")
    if "logitdiff" in scores and contrast is None:
        raise LogitShiftError("score 'logitdiff': needs a contrast token (--contrast)")
    ms = lm_methods(methods, steps, baseline, batch_size)
    target = torch.as_tensor(target).long().view(-1)
    out: dict[tuple[str, str], torch.Tensor] = {}
    plain = [s for s in scores if s != "logitdiff"]
    if plain:
        got = explain(model, x, None, ms, plain, variants=(variant,), targets=[target], raw=raw)
        for (_slot, m, s, _v), val in (got.raw if raw else got.maps).items():
            out[m, s] = val[:, :, 0, :] if raw else val[:, 0, :]
    if "logitdiff" in scores:
        pair = [target, torch.as_tensor(contrast).long().view(-1).expand_as(target)]
        got = explain(model, x, None, ms, ["logit"], variants=(variant,), targets=pair, raw=True)
        for m in ms:
            diff = got.raw[0, m.name, "logit", variant] - got.raw[1, m.name, "logit", variant]
            out[m.name, "logitdiff"] = diff[:, :, 0, :] if raw else m.reduce(diff)[:, 0, :]  # type: ignore[attr-defined]
    return out


__all__ = ["LM_IMMUNE", "LM_METHODS", "LM_SCORES", "lm_methods", "token_attributions", "token_mass"]
