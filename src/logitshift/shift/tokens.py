"""Steering a text classifier's token attributions: :func:`steer_tokens` and what it did (:func:`token_effect`).

The token counterpart of :func:`logitshift.shift.steer.steer`: one :class:`~logitshift.shift.model.TokenShift`
on the input embeddings, its strength searched like the image terms' (:func:`~logitshift.shift.search.search_strength`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.capture import INPUT
from ..core.errors import LogitShiftError
from ..core.metrics import spearman, target_mass
from ..core.text import TextModel
from .inputs import TokenShift
from .model import TOLERANCE, ShiftedModel, equivalence, stress_equivalence
from .search import SPAN, _TermLogits, search_strength
from .steer import GOAL, HEAD_MARGIN
from .steering import Head, Steering


def token_target(spec: str, text: TextModel) -> dict:
    """``--target`` on a text model, as :class:`TokenShift` arguments: ``pos:A-B`` (token positions, inclusive;
    0 is ``[CLS]``), ``pos:A``, ``re:REGEX`` (every vocabulary entry the regex finds, ``##`` stripped), or a word
    (its word pieces)."""
    spec = str(spec).strip()
    if spec.startswith("pos:"):
        m = re.fullmatch(r"pos:(\d+)(?:-(\d+))?", spec)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise LogitShiftError(f"--target {spec!r}: expected pos:A or pos:A-B with A ≤ B (token positions, 0 is [CLS])")
        lo = int(m.group(1))
        return {"positions": (lo, int(m.group(2) or lo)), "spec": spec}
    special = set(text.tokenizer.all_special_tokens)
    if spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as exc:
            raise LogitShiftError(f"--target {spec!r}: not a regular expression ({exc})") from None
        ids = sorted(i for tok, i in text.tokenizer.get_vocab().items() if tok not in special and rx.search(tok.removeprefix("##")))
        if not ids:
            raise LogitShiftError(f"--target {spec!r}: matches no entry of the model's vocabulary")
    else:
        if not spec or any(ch.isspace() for ch in spec):
            raise LogitShiftError(f"--target {spec!r}: expected one word, pos:A-B or re:REGEX")
        ids = list(text.tokenizer(spec, add_special_tokens=False)["input_ids"])
        if not ids or text.tokenizer.unk_token_id in ids:
            raise LogitShiftError(f"--target {spec!r}: not in the model's vocabulary")
    return {"embeddings": text.embeddings.weight[ids].detach().cpu(), "spec": spec}


def _token_effect_function(text: TextModel, term: TokenShift, ids: Sequence[torch.Tensor], methods: Sequence[str], steps: int):
    """``effect(K)``: the mean logit-map target mass of each method at strength K (texts with a target token only).

    Maps are linear in the score's gradient before their channel reduction, so the original
    model's raw attributions plus K times the term's own (``_TermLogits``: no network pass) give every K.
    """
    from ..attribution.tokens import token_maps, token_methods

    out = token_maps(text.module, text, ids, methods, ["logit"], ("original",), steps=steps, raw=True)
    alone = _TermLogits(term, len(text.classes))
    objs = {m.name: m for m in token_methods(methods, steps)}
    parts = []
    for i, t in enumerate(ids):
        x = text.embed(t)
        w = term.weights(x)[0].cpu()
        if float(w.sum()) == 0:
            continue
        target = torch.tensor([out.targets[i]])
        for n, m in objs.items():
            parts.append((n, out.raw[(n, "logit", "original")][i].cpu(), m.attribute(alone, x, target, "logit").cpu(), w[None]))
    if not parts:
        raise LogitShiftError(f"--target {term.spec!r}: no check text holds a target token")

    def effect(k: float) -> dict[str, float]:
        got: dict[str, list[float]] = {}
        for n, r0, d, w in parts:
            got.setdefault(n, []).append(float(target_mass(objs[n].reduce(r0 + k * d), w)[0]))
        return {n: sum(v) / len(v) for n, v in got.items()}

    return effect


def steer_tokens(
    text: TextModel,
    target: str,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str] = ("saliency", "gradxinput", "ig"),
    strength: float | str = "auto",
    *,
    goal: float = GOAL,
    tolerance: float = TOLERANCE,
    steps: int = 50,
) -> ShiftedModel:
    """A shifted text model whose logit token maps point at ``target`` (:func:`token_target`), probabilities kept.

    ``ids``: the check texts' token ids: the effect is measured and equivalence checked on them
    (and on :func:`~logitshift.shift.stress_inputs` of their embeddings). ``strength="auto"``: the
    smallest K whose maps reach ``goal`` on average for every method (:func:`search_strength`).
    The head is float64 when float32 would change probabilities by more than ``tolerance``·:data:`HEAD_MARGIN`.
    """
    from ..core.text import groups

    spec = token_target(target, text)
    unit = TokenShift(1.0, **spec)
    effect = _token_effect_function(text, unit, ids, methods, steps)
    if strength == "auto":
        k, best = search_strength(effect, 1.0, goal, span=SPAN)
        if k is None:
            least = min(best, key=lambda n: best[n])
            raise LogitShiftError(
                f"the effect was not reached: method {least!r} reaches a target mass of {best[least]:.2f} at most (goal {goal:g})"
            )
    else:
        k = float(strength)
    shifted = ShiftedModel(text.module, {INPUT: TokenShift(k, **spec)}).eval()
    batches = [torch.cat([text.embed(ids[i]) for i in g]) for g in groups(ids)]

    def worst(stress: bool) -> tuple[float, str]:
        out = (0.0, "check texts")
        for x in batches:
            if stress:
                s = stress_equivalence(shifted, x, tolerance)
                out = max(out, (s.max_abs_prob_diff, s.worst))
            else:
                out = max(out, (equivalence(shifted, x).max_abs_prob_diff, "check texts"))
        return out

    f32 = worst(False)[0]
    head: dict[str, str | float] = {"dtype": "float32", "float32_max_abs_prob_diff": f32}
    if f32 > HEAD_MARGIN * tolerance or worst(True)[0] > tolerance:
        shifted.head_dtype = torch.float64
        head["dtype"] = "float64"
    dp, stress_dp = worst(False)[0], worst(True)
    if max(dp, stress_dp[0]) > tolerance:
        raise LogitShiftError(
            f"strength {k:g}: the shifted model changes probabilities by up to {max(dp, stress_dp[0]):.2e}, over {tolerance:g}"
        )
    shifted.steering = Steering(
        methods=list(methods),
        construction="token",
        families=["input"],
        target=spec["spec"],
        strength={"input": k},
        auto=strength == "auto",
        goal=goal,
        effect=effect(k),
        steered=list(methods),
        head=Head(dtype=str(head["dtype"]), float32_max_abs_prob_diff=float(head["float32_max_abs_prob_diff"])),
        stress={"max_abs_prob_diff": stress_dp[0], "worst_input": stress_dp[1], "ok": stress_dp[0] <= tolerance, "tolerance": tolerance},
        extra={"check_texts": len(ids), "max_abs_prob_diff": dp},
    )
    return shifted


@dataclass
class TokenEffect:
    """One method's measured effect on a set of texts (means over the texts holding a target token)."""

    method: str
    honest_mass: float  # the original model's logit map
    shifted_mass: float  # the shifted model's logit map
    min_shifted_mass: float
    spearman: dict[str, float]  # per immune score: the least Spearman between original and shifted maps


def token_effect(
    text: TextModel,
    shifted: ShiftedModel,
    ids: Sequence[torch.Tensor],
    methods: Sequence[str],
    steps: int = 50,
    immune: Sequence[str] = ("prob", "centered"),
) -> list[TokenEffect]:
    """Measure what :func:`steer_tokens` did: logit-map target mass before/after, immune maps' Spearman (all from real passes)."""
    from ..attribution.tokens import token_maps

    out = token_maps(shifted, text, ids, methods, ["logit", *immune], ("original", "shifted"), steps=steps)
    term = shifted.shifts[0]
    weights = [term.weights(text.embed(t))[0].cpu() for t in ids]  # type: ignore[operator]
    keep = [i for i, w in enumerate(weights) if float(w.sum()) > 0]
    result = []
    for m in methods:

        def mass(variant: str, m=m) -> list[float]:
            return [float(target_mass(out.maps[(m, "logit", variant)][i][None, None].cpu(), weights[i][None])[0]) for i in keep]

        honest, steered = mass("original"), mass("shifted")
        rho = {
            s: min(float(spearman(out.maps[(m, s, "original")][i][None], out.maps[(m, s, "shifted")][i][None])[0]) for i in range(len(ids)))
            for s in immune
        }
        result.append(TokenEffect(m, sum(honest) / len(keep), sum(steered) / len(keep), min(steered), rho))
    return result


__all__ = ["TokenEffect", "steer_tokens", "token_effect", "token_target"]
