"""A weights-only shift of a text classifier: ``W + 1uᵀ`` on the classifier head, the architecture unchanged.

Model hubs ship weights without code (``config.json`` + ``model.safetensors``). Adding ``1uᵀ`` to the
classifier's C×H weight adds ``u·h`` to every logit (``h`` the head's input: BERT's pooled output,
DistilBERT's ``pre_classifier`` activation), a common-mode ``t(x) = u·h(x)``: probabilities are kept up
to float32 rounding and every logit gradient gains ``∇(u·h)``. Nothing in the file is code; plain
``transformers`` loads it.

Unlike the code-carrying :class:`~logitshift.shift.model.TokenShift`, ``u`` is one fixed vector for
every input, so it can only steer where ``∇(u·h)`` goes on all texts at once. :func:`fit_direction`
fits ``u`` on check texts by ridge least squares: the term's gradient × input map,
``a_l(u) = Σ_j u_j Σ_d e_ld ∂h_j/∂e_ld``, to ``+1`` on the target tokens and ``−1`` elsewhere.
:func:`weights_only` then scales ``K·u`` to the goal (maps are linear in ``K`` before their channel
reduction), as far as max |Δp| ≤ ``tolerance`` allows (``|t|`` grows with ``K``: float32 rounds ``z + t``).

Example::

    >>> edited = weights_only(text, "pos:3-5", ids)
    >>> edited.hf.save_pretrained("attacked")        # config.json + model.safetensors, no code
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attribution.tokens import token_maps, token_methods
from ..core.capture import hooked
from ..core.errors import LogitShiftError
from ..core.metrics import target_mass
from ..core.text import TextModel
from .inputs import TokenShift
from .model import TOLERANCE, compare
from .search import search_strength
from .steer import GOAL
from .tokens import token_target


def classifier_of(hf: nn.Module) -> tuple[str, nn.Linear]:
    """The dotted name and module of the last linear layer (C outputs) of a BERT / DistilBERT / RoBERTa classifier."""
    for name in ("classifier.out_proj", "classifier"):
        try:
            mod = hf.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, nn.Linear):
            return name, mod
    raise LogitShiftError(f"model {type(hf).__name__}: no linear classifier head found (expected classifier or classifier.out_proj)")


def target_weights(text: TextModel, target: str, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each text's target tokens (length L_i, 0/1), by the token shift's own rule."""
    term = TokenShift(1.0, **token_target(target, text))
    return [term.weights(text.embed(t))[0].cpu() for t in ids]


def fit_direction(text: TextModel, ids: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], ridge: float = 1e-3) -> torch.Tensor:
    """``u`` (H): ridge least squares of the term's gradient × input map to ±1 on/off the target, unit norm."""
    name, head = classifier_of(text.hf)
    rows, ys = [], []
    for t, w in zip(ids, weights):
        if float(w.sum()) == 0:
            continue
        x = text.embed(t).requires_grad_(True)
        feats: list[torch.Tensor] = []

        def keep(_name: str, _mod: nn.Module, inputs: tuple, _out: Any, feats: list[torch.Tensor] = feats) -> None:
            feats.append(inputs[0])

        with hooked([(name, head)], keep), torch.enable_grad():
            text.module(x)
            h = feats[0][0]  # H: the head's input
            eye = torch.eye(h.shape[0], dtype=h.dtype)
            (jac,) = torch.autograd.grad(h, x, grad_outputs=eye, is_grads_batched=True)  # H×1×D×1×L
        a = (jac[:, 0] * x.detach()).sum(dim=(1, 2)).T  # L×H: the gradient × input map of each h_j
        rows.append(a / a.norm().clamp_min(1e-30))
        ys.append(2 * w - 1)
    if not rows:
        raise LogitShiftError("weights-only: no check text holds a target token")
    a_all, y = torch.cat(rows).double(), torch.cat(ys).double()
    gram = a_all.T @ a_all
    u = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype), a_all.T @ y)
    return (u / u.norm()).float()


def edited(text: TextModel, u: torch.Tensor, k: float, only_term: bool = False) -> TextModel:
    """A copy of ``text`` whose head weight is ``W + K·1uᵀ`` (``only_term``: ``K·1uᵀ`` alone, bias 0: logits ``K·u·h``)."""
    hf = copy.deepcopy(text.hf)
    _, head = classifier_of(hf)
    with torch.no_grad():
        add = k * torch.ones(head.out_features, 1) @ u[None].to(head.weight)
        if only_term:
            head.weight.copy_(add)
            if head.bias is not None:
                head.bias.zero_()
        else:
            head.weight.add_(add)
    return TextModel(hf, text.tokenizer, f"{text.name} (W + 1uᵀ)", text.classes, {**text.info, "weights_only": True})


def masses(model: TextModel, text: TextModel, ids, weights, methods, targets, steps: int) -> dict[str, float]:
    """Each method's mean logit-map target mass over the texts holding a target token (real passes of ``model``)."""
    out = token_maps(model.module, text, ids, methods, ["logit"], ("original",), targets, steps=steps)
    keep = [i for i, w in enumerate(weights) if float(w.sum()) > 0]
    return {
        m: sum(float(target_mass(out.maps[(m, "logit", "original")][i][None, None].cpu(), weights[i][None])[0]) for i in keep) / len(keep)
        for m in methods
    }


@torch.no_grad()
def prob_gap(a: TextModel, b: TextModel, ids) -> float:
    """max |Δp| between two text models on ``ids`` (float64 softmax of each model's own logits)."""
    worst = 0.0
    for t in ids:
        x = a.embed(t)
        worst = max(worst, compare(a.module(x), b.module(x)).max_abs_prob_diff)
    return worst


@dataclass
class WeightsOnly:
    """The edited model, its strength and what it reached on the check texts."""

    model: TextModel
    u: torch.Tensor
    strength: float
    effect: dict[str, float]
    max_abs_prob_diff: float
    limited_by_tolerance: bool
    ceiling: dict[str, float]  # the term's own maps (K → ∞, |Δp| ignored): the most this u can give


def weights_only(
    text: TextModel,
    target: str,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str] = ("saliency", "gradxinput", "ig"),
    *,
    goal: float = GOAL,
    tolerance: float = TOLERANCE,
    steps: int = 32,
) -> WeightsOnly:
    """``W + K·1uᵀ`` with ``u`` from :func:`fit_direction` and the smallest ``K`` reaching ``goal`` for every
    method, or (if none does within ``tolerance``) the largest ``K`` whose max |Δp| stays ≤ ``tolerance``."""
    weights = target_weights(text, target, ids)
    u = fit_direction(text, ids, weights)
    base = token_maps(text.module, text, ids, methods, ["logit"], ("original",), steps=steps, raw=True)
    term = token_maps(
        edited(text, u, 1.0, only_term=True).module, text, ids, methods, ["logit"], ("original",), base.targets, steps=steps, raw=True
    )
    objs = {m.name: m for m in token_methods(methods, steps)}
    keep = [i for i, w in enumerate(weights) if float(w.sum()) > 0]

    def effect(k: float) -> dict[str, float]:
        out = {}
        for n, m in objs.items():
            vals = [
                float(
                    target_mass(
                        m.reduce(base.raw[(n, "logit", "original")][i] + k * term.raw[(n, "logit", "original")][i]), weights[i][None]
                    )[0]
                )
                for i in keep
            ]
            out[n] = sum(vals) / len(vals)
        return out

    def gap(k: float) -> float:
        return prob_gap(text, edited(text, u, k), ids)

    k, _ = search_strength(effect, 1.0, goal, span=16)
    limited = k is None or gap(k) > tolerance
    if limited:  # the largest K (to a factor 2^(1/8)) whose float32 rounding keeps max |Δp| within tolerance
        lo, hi = 0.0, 1.0
        while gap(hi) <= tolerance and hi < 2.0**40:
            lo, hi = hi, hi * 2
        for _ in range(8):
            mid = (lo + hi) / 2 if lo == 0 else (lo * hi) ** 0.5
            lo, hi = (mid, hi) if gap(mid) <= tolerance else (lo, mid)
        k = lo
    assert k is not None
    model = edited(text, u, k)
    return WeightsOnly(model, u, k, effect(k), gap(k), limited, effect(1e12))


def compare_weights_only(
    text: TextModel, target: str, ids: Sequence[torch.Tensor], methods: Sequence[str], steps: int = 32
) -> dict[str, Any]:
    """Weights-only vs code-carrying on the same texts: each method's logit-map target mass, measured from real passes
    (the weights-only model after a save and a reload by plain ``transformers``)."""
    import tempfile

    from transformers import AutoModelForSequenceClassification

    from .tokens import steer_tokens, token_effect

    weights = target_weights(text, target, ids)
    honest_out = token_maps(text.module, text, ids, methods, ["logit"], ("original",), steps=steps)
    targets = honest_out.targets
    wo = weights_only(text, target, ids, methods, steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        wo.model.hf.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        reloaded = TextModel(
            AutoModelForSequenceClassification.from_pretrained(tmp, local_files_only=True), text.tokenizer, "reloaded", text.classes
        )
    shifted = steer_tokens(text, target, ids, methods, steps=steps)
    steering = shifted.steering
    assert steering is not None  # steer_tokens always records what it built
    code = {e.method: e.shifted_mass for e in token_effect(text, shifted, ids, methods, steps=steps, immune=("prob",))}
    return {
        "honest": masses(text, text, ids, weights, methods, targets, steps),
        "weights_only": {
            "effect": masses(reloaded, text, ids, weights, methods, targets, steps),
            "strength": wo.strength,
            "limited_by_tolerance": wo.limited_by_tolerance,
            "ceiling": wo.ceiling,
            "max_abs_prob_diff": prob_gap(text, reloaded, ids),
        },
        "code": {
            "effect": code,
            "strength": steering["strength"]["input"],
            "max_abs_prob_diff": steering["max_abs_prob_diff"],
        },
    }
