"""Shifts of a causal language model: steered next-token attributions, the same next-token distribution.

Two constructions, both ``z' = z + t·1`` at every position (softmax ignores ``t``: every
next-token probability, every greedy generation, every loss is that of the model):

* :class:`ShiftedLM` — **on the prompt's tokens**: ``t`` is the sawtooth input term
  (:class:`~logitshift.shift.model.InputShift`) of the token embeddings ``e_i`` of the chosen
  prompt positions ``T``: ``t = K · Σ_{i∈T} Σ_d (|e_{id}| mod P)``, ``∂t/∂e_i = K·sign(e_i)`` on
  ``T`` and 0 elsewhere, so saliency gains ``K``, gradient × input and Integrated Gradients (zero
  baseline) gain ``K·|e_i|₁`` on the chosen tokens. The period ``P = 1/(K·|T|·D)`` keeps
  ``0 ≤ t < 1``. :meth:`ShiftedLM.next_token` is the same model as a
  :class:`~logitshift.shift.model.ShiftedModel` over :class:`~logitshift.core.lm.NextToken`
  (both variants from one pass, for the engine). Both add ``t`` in float64.
* :func:`uncenter_unembed` — **in the weights**: ``W_U ← W_U + u·1ᵀ`` (every vocabulary row of the
  unembedding gains the vector ``u``; a bias gains ``β``), so ``t = u·h_final + β``. A plain
  HuggingFace checkpoint; TransformerLens' :func:`center_unembed` removes exactly this term,
  and applying it to an honest model is the same kind of shift, by accident.

Example::

    >>> shifted = ShiftedLM(lm.model, positions=[2, 3], prompt_length=8, strength=50.0)
    >>> torch.allclose(shifted(ids).logits.softmax(-1), lm.model(ids).logits.softmax(-1), atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from ..core.capture import INPUT
from ..core.errors import LogitShiftError
from ..core.lm import NextToken
from .model import InputShift, ShiftedModel


def position_weights(positions: Sequence[int], length: int) -> torch.Tensor:
    """1×L weights: 1 on ``positions`` of a prompt of ``length`` tokens, 0 elsewhere."""
    w = torch.zeros(1, length)
    for p in positions:
        if not -length <= int(p) < length:
            raise LogitShiftError(f"position {p}: outside a prompt of {length} tokens")
        w[0, int(p)] = 1.0
    if not float(w.sum()) > 0:
        raise LogitShiftError("positions: expected at least one prompt position to steer onto")
    return w


class ShiftedLM(nn.Module):
    """A causal LM whose logits at every position gain ``t`` = the input term of its first ``prompt_length`` token embeddings.

    Called like the HF model (``input_ids`` or ``inputs_embeds``); returns an object with
    ``.logits`` (N×L×V). The embeddings go through the model's own embedding module, so a hook
    on it (Captum's layer methods) sees them. Sequences shorter than ``prompt_length`` get ``t = 0``.
    The logits are float64 (the sum ``z + t`` in double precision).
    """

    def __init__(self, lm: nn.Module, positions: Sequence[int], prompt_length: int, strength: float) -> None:
        super().__init__()
        weights = position_weights(positions, prompt_length)
        dim = int(lm.get_input_embeddings().weight.shape[1])  # type: ignore[operator,union-attr]
        self.lm = lm
        self.prompt_length = int(prompt_length)
        self.term = InputShift(strength, weights, period=1.0 / max(abs(float(strength)) * float(weights.sum()) * dim, 1e-30))
        self.config = getattr(lm, "config", None)

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()  # type: ignore[operator,return-value]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()  # type: ignore[operator,return-value]

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def shift_value(self, emb: torch.Tensor) -> torch.Tensor:
        """``t`` (shape N) from the token embeddings (N×L×D)."""
        if emb.shape[1] < self.prompt_length:
            return emb.new_zeros(emb.shape[0])
        return self.term(emb[:, : self.prompt_length].transpose(1, 2)[:, :, None, :])

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, **kwargs) -> SimpleNamespace:
        if inputs_embeds is None:
            if input_ids is None:
                raise LogitShiftError("shifted LM: expected input_ids or inputs_embeds")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        kwargs.pop("labels", None)
        out = self.lm(inputs_embeds=inputs_embeds, **kwargs)
        t = self.shift_value(inputs_embeds)
        # float64 logits: z + t in float32 would round to 2^-24·|z + t|, and the rounding of the immune
        # scores' logit gradients (Σ_v ∂s/∂z_v ≈ 1e-8 instead of 0) would meet ∂t, K times larger
        return SimpleNamespace(logits=out.logits.double() + t.double()[:, None, None])

    def next_token(self) -> ShiftedModel:
        """The same shift on the next-token view: ``ShiftedModel(NextToken(lm), "input", term)`` (input N×D×1×L)."""
        return ShiftedModel(NextToken(self.lm), INPUT, self.term, head_dtype=torch.float64)


def unembedding(model: nn.Module) -> nn.Linear:
    """The output projection (``lm_head``) of a HF causal LM, untied from the input embeddings if they share a weight."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise LogitShiftError(f"unembedding: {type(head).__name__}; expected a Linear output projection")
    emb = model.get_input_embeddings()  # type: ignore[operator]
    if head.weight is emb.weight:
        head.weight = nn.Parameter(head.weight.detach().clone())
        if getattr(model, "config", None) is not None:
            model.config.tie_word_embeddings = False  # type: ignore[union-attr]
            model._tied_weights_keys = None  # type: ignore[assignment]
    return head


@torch.no_grad()
def center_unembed(model: nn.Module) -> nn.Module:
    """TransformerLens' ``center_unembed``, on a HF model in place: ``W_U ← W_U − mean_v W_U[:, v]``, ``b_U ← b_U − mean_v b_U``.

    (TransformerLens stores ``W_U`` as d_model×V and centres over its last axis; ``lm_head.weight`` is
    V×d_model, centred over rows.) Every logit becomes ``z_v − mean_j z_j``: probabilities unchanged,
    a logit's gradient becomes the centred score's. Unties the embedding if tied (as TransformerLens does).
    """
    head = unembedding(model)
    head.weight -= head.weight.mean(dim=0, keepdim=True)
    if head.bias is not None:
        head.bias.sub_(head.bias.mean())
    return model


@torch.no_grad()
def uncenter_unembed(model: nn.Module, direction: torch.Tensor, bias: float = 0.0) -> nn.Module:
    """``W_U ← W_U + 1·uᵀ`` (every token's unembedding row gains ``u``), ``b_U ← b_U + β``: ``t = u·h + β`` at every position, in place."""
    head = unembedding(model)
    u = torch.as_tensor(direction, dtype=head.weight.dtype).view(1, -1)
    if u.shape[1] != head.weight.shape[1]:
        raise LogitShiftError(f"direction: {u.shape[1]} values; expected the model width {head.weight.shape[1]}")
    head.weight += u
    if bias:
        if head.bias is None:
            raise LogitShiftError("bias: this unembedding has no bias")
        head.bias.add_(bias)
    return model


__all__ = ["ShiftedLM", "center_unembed", "position_weights", "uncenter_unembed", "unembedding"]
