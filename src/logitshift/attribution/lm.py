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

``logitdiff`` is the ``logit`` score of the model ``z − z_k·1`` (:class:`Contrast`): the
engine's own logit path, the contrast token's logit subtracted inside the forward.

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

from ..core.capture import Heads
from ..core.errors import LogitShiftError
from ..core.metrics import target_mass
from . import get_method
from .engine import explain

LM_SCORES = ("logit", "logprob", "centered", "logitdiff")
LM_IMMUNE = ("logprob", "centered", "logitdiff")
LM_METHODS = ("saliency", "gradxinput", "ig")


class Contrast(nn.Module):
    """``forward(x) = f(x) − f(x)[:, k]·1`` for one contrast token ``k`` per row: its ``logit`` score is ``z_c − z_k``.

    ``variant="original"`` reads the base of a shifted model (``model.base``), ``"shifted"`` its shifted logits.
    """

    contrast: torch.Tensor

    def __init__(self, model: nn.Module, contrast: torch.Tensor, variant: str = "original") -> None:
        super().__init__()
        self.model = model
        self.variant = variant
        self.register_buffer("contrast", torch.as_tensor(contrast).long().view(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "original" and isinstance(self.model, Heads):
            z = self.model.base(x)  # type: ignore[operator]
        else:
            z = self.model(x)
        k = self.contrast.to(z.device).expand(z.shape[0]) if self.contrast.numel() == 1 else self.contrast.to(z.device)
        return z - z.gather(1, k.view(-1, 1))


def token_mass(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Share of each map's absolute mass on the chosen tokens: ``Σ_i w_i |a_i| / Σ_i |a_i|`` (N×L maps, 1×L weights; 0 for an all-zero map)."""
    return target_mass(maps.abs()[:, None, :], weights.view(1, -1))


def lm_methods(names: Sequence[str] = LM_METHODS, steps: int = 32, baseline: float | torch.Tensor = 0.0):
    """The attribution objects for ``names`` (``ig`` with ``steps`` and ``baseline``)."""
    out = []
    for n in names:
        if n not in LM_METHODS:
            raise LogitShiftError(f"method {n!r}: expected one of {', '.join(LM_METHODS)} for a language model")
        out.append(get_method(n, steps=steps, baseline=baseline) if n == "ig" else get_method(n))
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
) -> dict[tuple[str, str], torch.Tensor]:
    """``{(method, score): N×L}`` next-token attributions of token ``target`` (N) for embeddings ``x`` (N×D×1×L).

    ``variant``: ``"shifted"`` explains a shifted model's shifted logits. ``raw``: N×D×L
    attributions (before the reduction over D) instead of the maps.
    """
    for s in scores:
        if s not in LM_SCORES:
            raise LogitShiftError(f"score {s!r}: expected one of {', '.join(LM_SCORES)} for a language model")
    if "logitdiff" in scores and contrast is None:
        raise LogitShiftError("score 'logitdiff': needs a contrast token (--contrast)")
    ms = lm_methods(methods, steps, baseline)
    target = torch.as_tensor(target).long().view(-1)
    out: dict[tuple[str, str], torch.Tensor] = {}
    plain = [s for s in scores if s != "logitdiff"]
    runs = [(model, plain, variant)] if plain else []
    if "logitdiff" in scores:
        runs.append((Contrast(model, torch.as_tensor(contrast), variant), ["logit"], "original"))
    for module, ss, v in runs:
        got = explain(module, x, None, ms, ss, variants=(v,), targets=[target], raw=raw)
        for (_slot, m, s, _v), val in (got.raw if raw else got.maps).items():
            key = (m, "logitdiff" if module is not model else s)
            out[key] = val[:, :, 0, :] if raw else val[:, 0, :]
    return out


__all__ = ["LM_IMMUNE", "LM_METHODS", "LM_SCORES", "Contrast", "lm_methods", "token_attributions", "token_mass"]
