"""Direct logit attribution (TransformerLens style), on a HuggingFace GPT-2 / Llama model.

The final residual stream at the last position is a sum of components ``r_b``: the embeddings
(the input of block 0), and each block's attention output and MLP output. The final norm is linear
once its scale is frozen at the real stream's value (TransformerLens' ``apply_ln_to_stack``):

* LayerNorm: ``ln(r) = Σ_b (r_b − mean r_b)/σ ⊙ g + β``; RMSNorm: ``Σ_b r_b/rms ⊙ g``.

So the logit of token ``c`` is ``Σ_b DLA_b + (β·W_U[c] + b_U[c])`` with
``DLA_b = ln_b · d`` and the direction ``d``:

==========  =============================  ======================
score       direction ``d``                immune to ``z + t·1``
==========  =============================  ======================
logit       ``W_U[c]``                     no (``t = u·ln(r)`` adds ``u·ln_b``)
logitdiff   ``W_U[c] − W_U[k]``            yes
centered    ``W_U[c] − mean_v W_U[v]``     yes
==========  =============================  ======================

Output: N×(2·blocks+1) — one value per component (:func:`component_names`: embeddings, then each
block's attention and MLP).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import LogitShiftError

DLA_SCORES = ("logit", "logitdiff", "centered")


def parts(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The blocks and the final norm of a HF GPT-2 (``transformer.h``, ``ln_f``) or Llama (``model.layers``, ``norm``)."""
    inner = getattr(model, "transformer", None) or getattr(model, "model", None)
    blocks = getattr(inner, "h", None) or getattr(inner, "layers", None)
    norm = getattr(inner, "ln_f", None) or getattr(inner, "norm", None)
    if blocks is None or norm is None:
        raise LogitShiftError(f"direct logit attribution: {type(model).__name__} has no GPT-2 / Llama blocks and final norm")
    return list(blocks), norm


def _sub(block: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for n in names:
        m = getattr(block, n, None)
        if isinstance(m, nn.Module):
            return m
    raise LogitShiftError(f"direct logit attribution: a {type(block).__name__} block has none of {', '.join(names)}")


def component_names(model: nn.Module) -> list[str]:
    """``embed``, then ``attn.b`` and ``mlp.b`` for each block ``b`` (GPT-2: ``embed`` is token + position embeddings)."""
    blocks, _ = parts(model)
    return ["embed"] + [f"{k}.{b}" for b in range(len(blocks)) for k in ("attn", "mlp")]


def components(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
    """N×(2B+1)×D: what the embeddings, each block's attention and each block's MLP write to the residual
    stream at the last position (:func:`component_names`), and the final norm. Their sum is the stream
    the final norm reads (a block's output = its input + attention + MLP)."""
    blocks, norm = parts(model)
    got: dict[str, torch.Tensor] = {}
    hooks = [norm.register_forward_pre_hook(lambda m, a: got.__setitem__("final", a[0][:, -1]))]
    hooks.append(
        blocks[0].register_forward_pre_hook(
            lambda m, a, kw: got.__setitem__("embed", (a[0] if a else kw["hidden_states"])[:, -1]), with_kwargs=True
        )
    )
    for b, block in enumerate(blocks):
        for key, names in (("attn", ("attn", "self_attn")), ("mlp", ("mlp",))):
            hooks.append(
                _sub(block, names).register_forward_hook(
                    lambda m, a, o, k=f"{key}.{b}": got.__setitem__(k, (o[0] if isinstance(o, tuple) else o)[:, -1])
                )
            )
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    stack = torch.stack([got[n] for n in component_names(model)], dim=1)
    if not torch.allclose(stack.sum(1), got["final"], atol=1e-4 * (1 + float(got["final"].abs().max()))):
        raise LogitShiftError(
            "direct logit attribution: the components do not add up to the final residual stream (not a pre-norm GPT-2 / Llama block)"
        )
    return stack, norm


def normed(stack: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """Each component through the final norm with the scale frozen at the whole stream's (no norm bias)."""
    r = stack.sum(dim=1, keepdim=True)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-5)))
    if isinstance(norm, nn.LayerNorm):
        scale = (r - r.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True).add(eps).sqrt()
        return (stack - stack.mean(-1, keepdim=True)) / scale * norm.weight
    scale = r.pow(2).mean(-1, keepdim=True).add(eps).sqrt()
    return stack / scale * norm.weight  # type: ignore[operator]


def dla(
    model: nn.Module, ids: torch.Tensor, target: torch.Tensor, score: str = "logit", contrast: torch.Tensor | None = None
) -> torch.Tensor:
    """N×(2B+1) direct logit attributions of token ``target`` (N) at the last position (see the module docstring)."""
    if score not in DLA_SCORES:
        raise LogitShiftError(f"score {score!r}: expected one of {', '.join(DLA_SCORES)} for direct logit attribution")
    stack, norm = components(model, ids)
    w = model.get_output_embeddings().weight.detach()  # type: ignore[operator,union-attr]
    d = w[torch.as_tensor(target).long().view(-1)]
    if score == "logitdiff":
        if contrast is None:
            raise LogitShiftError("score 'logitdiff': needs a contrast token")
        d = d - w[torch.as_tensor(contrast).long().view(-1)].expand_as(d)
    elif score == "centered":
        d = d - w.mean(dim=0, keepdim=True)
    with torch.no_grad():
        return (normed(stack, norm) * d[:, None, :]).sum(-1)


__all__ = ["DLA_SCORES", "component_names", "components", "dla", "normed", "parts"]
