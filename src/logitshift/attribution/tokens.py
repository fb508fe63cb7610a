"""Token attributions of a text classifier, through the one engine.

A text model's input is its word embeddings, laid out N×D×1×L
(:class:`~logitshift.core.text.EmbeddingsClassifier`): D embedding dimensions in the place of an
image's channels, one grid cell per token. The input methods then run unchanged on embeddings,
and :func:`logitshift.engine.explain` serves every score and variant from one forward pass (or
one per chunk of Integrated Gradients points); a map is one value per token:

* saliency: ``max_d |∂s/∂e_ld|`` (Captum's ``Saliency`` on the embeddings, reduced over D),
* gradient × input: ``Σ_d e_ld · ∂s/∂e_ld`` (Captum's ``InputXGradient``, summed over D),
* Integrated Gradients on the embeddings: ``Σ_d (e − b)_ld ∫₀¹ ∂s/∂e_ld(b + α(e − b)) dα``, the
  embedding-layer IG that Captum's ``LayerIntegratedGradients`` computes on
  ``model.get_input_embeddings()``, with ``b`` the zero embedding (``baseline="zero"``, the
  ``[PAD]`` row of a BERT, which is kept at zero) or the embedding of reference ids given per text.

Texts are batched by token count, so no batch needs padding (the attention mask is all ones).

Example::

    >>> tm = load_text_model("fortunes-bert")
    >>> out = token_maps(tm.module, tm, tm.encode(["the computer crashed"]), ["ig"], ["logit", "prob"])
    >>> out.maps[("ig", "logit", "original")][0]        # one value per token
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import LogitShiftError
from ..core.text import TextModel, groups
from . import get_method

#: the token methods (the input family on embeddings)
TOKEN_METHODS = ("saliency", "gradxinput", "ig")


@dataclass
class TokenMaps:
    """Every map of one call: ``maps[(method, score, variant)][i]`` is text ``i``'s map (length L_i)."""

    ids: list[torch.Tensor]
    tokens: list[list[str]]
    targets: list[int]
    logits: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    maps: dict[tuple[str, str, str], list[torch.Tensor]] = field(default_factory=dict)
    raw: dict[tuple[str, str, str], list[torch.Tensor]] = field(default_factory=dict)


def token_methods(names: Sequence[str], steps: int = 50, batch_size: int = 64) -> list:
    """The method objects for token maps (IG with ``steps`` and a zero baseline)."""
    out = []
    for n in names:
        if n not in TOKEN_METHODS:
            raise LogitShiftError(f"method {n!r}: not a token method; expected one of {', '.join(TOKEN_METHODS)}")
        out.append(get_method(n, steps=steps, batch_size=batch_size) if n == "ig" else get_method(n))
    return out


def token_maps(
    model: nn.Module,
    text: TextModel,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str],
    scores: Sequence[str] = ("logit",),
    variants: Sequence[str] | None = None,
    targets: Sequence[int] | None = None,
    *,
    steps: int = 50,
    reference: Sequence[torch.Tensor] | None = None,
    raw: bool = False,
) -> TokenMaps:
    """Maps of ``methods`` × ``scores`` × ``variants`` for each text (token ids ``ids``), one engine call per length group.

    ``model``: ``text.module`` or a :class:`~logitshift.shift.ShiftedModel` over it. ``targets``: one
    class per text (default: the original model's prediction). ``reference``: per text, the token ids
    of the Integrated Gradients baseline (same length; default: the zero embedding).
    """
    from .engine import explain

    objs = token_methods(methods, steps)
    out = TokenMaps(list(ids), [text.tokens(t) for t in ids], [0] * len(ids))
    for group in groups(ids):
        x = torch.cat([text.embed(ids[i]) for i in group])
        if reference is not None:
            if any(reference[i].numel() != ids[i].numel() for i in group):
                raise LogitShiftError("reference: expected the same number of tokens as each text")
            base = torch.cat([text.embed(reference[i]) for i in group])
            objs = [get_method("ig", steps=steps, batch_size=64, baseline=base) if m.name == "ig" else m for m in objs]
        fixed = None if targets is None else [torch.tensor([int(targets[i]) for i in group])]
        got = explain(model, x, None, objs, list(scores), variants, targets=fixed, raw=raw)
        for j, i in enumerate(group):
            out.targets[i] = int(got.targets[0][j])
            for v, z in got.logits.items():
                out.logits.setdefault(v, [torch.empty(0)] * len(ids))[i] = z[j]
        for (slot, m, s, v), maps in got.maps.items():
            if slot == 0:
                store = out.maps.setdefault((m, s, v), [torch.empty(0)] * len(ids))
                for j, i in enumerate(group):
                    store[i] = maps[j, 0]
        for (slot, m, s, v), r in got.raw.items():
            if slot == 0:
                store = out.raw.setdefault((m, s, v), [torch.empty(0)] * len(ids))
                for j, i in enumerate(group):
                    store[i] = r[j : j + 1]
    return out
