"""Conformance for language-model explainers: does a next-token explanation survive ``z + t·1``?

Each explainer runs on the model and on twins with the same next-token distribution:

* ``token`` — :class:`~logitshift.shift.lm.ShiftedLM`: a sawtooth term of the embeddings of the
  chosen prompt positions (steers gradients onto those tokens);
* ``unembedding`` — :func:`~logitshift.shift.lm.uncenter_unembed` with ``u`` fitted (ridge least
  squares on the check prompts) so that ``u·ln_b = K`` on the chosen component ``b`` and 0 on the
  others: steers direct logit attribution onto that component, a plain checkpoint;
* ``center`` — TransformerLens' ``center_unembed``, applied as TransformerLens does on loading:
  the accidental shift (nothing is steered; a logit-reading explainer *moves*).

Verdicts and thresholds are those of :mod:`.cells` (immune: Spearman ≥ 0.999 on every prompt;
fooled: mean target mass ≥ 0.5; else moved); the mass is the share of ``|attribution|`` on the
chosen tokens (components). Adapters (``@lm_adapter``): ``logitshift`` (saliency, gradient × input,
IG × logit / logprob / centered / logitdiff), ``captum-llm`` (``LLMGradientAttribution`` with
LayerIntegratedGradients and LayerGradientXActivation; ``LLMAttribution`` with FeatureAblation,
ShapleyValueSampling, Lime, KernelShap × log_prob / prob), ``dla`` (direct logit attribution ×
logit / logitdiff / centered), ``inseq`` (needs the package; see docs/language_models.md).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..attribution.dla import components, dla, normed
from ..attribution.lm import token_attributions, token_mass
from ..core.errors import LogitShiftError
from ..core.lm import LanguageModel, NextToken
from ..core.metrics import spearman
from ..shift.lm import ShiftedLM, center_unembed, position_weights, uncenter_unembed
from .cells import Cell, verdict
from .explainer import Explainer, MissingLibrary, need


@dataclass
class LMContext:
    """The check prompts (N×L ids), the explained token (greedy next) and contrast (runner-up), the chosen positions."""

    lm: LanguageModel
    ids: torch.Tensor
    target: torch.Tensor
    contrast: torch.Tensor
    chosen: tuple[int, ...] = (2, 3)
    component: int = 1  # the block DLA is steered onto (0: embeddings)
    steps: int = 16
    samples: int = 16


def lm_context(lm: LanguageModel, ids: torch.Tensor, **kw) -> LMContext:
    with torch.no_grad():
        top = NextToken(lm.model)(lm.grid(ids)).topk(2, dim=1).indices
    return LMContext(lm, ids, top[:, 0], top[:, 1], **kw)


LM_ADAPTERS: dict[str, Callable[[LMContext], list[Explainer]]] = {}


def lm_adapter(name: str):
    def register(fn):
        LM_ADAPTERS[name] = fn
        return fn

    return register


@lm_adapter("logitshift")
def _own(ctx: LMContext) -> list[Explainer]:
    out = []
    for m in ("saliency", "gradxinput", "ig"):
        for s in ("logit", "logprob", "centered", "logitdiff"):

            def run(model, ids, target, m=m, s=s):
                x = token_grid_of(model, ids)
                return token_attributions(NextToken(model), x, target, (m,), (s,), ctx.contrast, steps=ctx.steps)[m, s]

            out.append(Explainer("logitshift", m, s, "token+center", run, immune=s != "logit"))
    return out


def token_grid_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids).detach().transpose(1, 2)[:, :, None, :]  # type: ignore[operator]


def _text_inputs(ca_llm, tokenizer, ids: torch.Tensor) -> list:
    """One TextTokenInput per prompt; refused when the tokenizer does not give back the same ids."""
    out = []
    for row in ids:
        text = tokenizer.decode(row.tolist())
        inp = ca_llm.TextTokenInput(text, tokenizer)
        if not torch.equal(inp.itp_tensor.view(-1), row):
            raise LogitShiftError("captum-llm: a prompt does not survive decode → encode with this tokenizer; choose other prompts")
        out.append(inp)
    return out


@lm_adapter("captum-llm")
def _captum(ctx: LMContext) -> list[Explainer]:
    ca = need("captum.attr", "captum")
    if ctx.lm.tokenizer is None:
        raise LogitShiftError("captum-llm: needs the model's tokenizer (a folder with tokenizer.json, or fortunes-gpt)")
    tok = ctx.lm.tokenizer
    out = []
    for name in ("LayerIntegratedGradients", "LayerGradientXActivation"):

        def grad_run(model, ids, target, name=name):
            method = getattr(ca, name)(model, model.get_input_embeddings())
            attr = ca.LLMGradientAttribution(method, tok)
            kw = {"n_steps": ctx.steps} if name == "LayerIntegratedGradients" else {}
            rows = [attr.attribute(inp, target=t.view(1), **kw).seq_attr for inp, t in zip(_text_inputs(ca, tok, ids), target)]
            return torch.stack(rows).detach()

        out.append(Explainer("captum-llm", f"LLMGradientAttribution({name})", "log_prob", "token+center", grad_run, immune=True))
    for name, targets in (
        ("FeatureAblation", ("log_prob", "prob")),
        ("ShapleyValueSampling", ("log_prob", "prob")),
        ("Lime", ("log_prob",)),
        ("KernelShap", ("log_prob",)),
    ):
        for tgt in targets:

            def run(model, ids, target, name=name, tgt=tgt):
                attr = ca.LLMAttribution(getattr(ca, name)(model), tok, attr_target=tgt)
                kw: dict = {"n_samples": ctx.samples} if name != "FeatureAblation" else {}
                kw["use_cached_outputs"] = False  # the twin is a plain forward (no generation cache)
                rows = []
                for inp, t in zip(_text_inputs(ca, tok, ids), target):
                    torch.manual_seed(0)
                    rows.append(attr.attribute(inp, target=t.view(1), **kw).seq_attr)
                return torch.stack(rows).detach()

            out.append(Explainer("captum-llm", f"LLMAttribution({name})", tgt, "token+center", run, immune=True))
    return out


@lm_adapter("dla")
def _dla(ctx: LMContext) -> list[Explainer]:
    out = []
    for s in ("logit", "logitdiff", "centered"):

        def run(model, ids, target, s=s):
            return dla(model, ids, target, s, ctx.contrast)

        out.append(Explainer("dla", "direct logit attribution", s, "unembedding+center", run, immune=s != "logit"))
    return out


@lm_adapter("inseq")
def _inseq(ctx: LMContext) -> list[Explainer]:
    need("inseq")
    raise LogitShiftError(
        "inseq: installed, but its adapter is not written (it cannot share this environment; see docs/language_models.md)"
    )


def fit_unembedding_direction(model: nn.Module, ids: torch.Tensor, component: int, strength: float, ridge: float = 1e-3) -> torch.Tensor:
    """``u`` with ``u·ln_b ≈ K·[b = component]`` for every prompt and component (ridge least squares)."""
    stack, norm = components(model, ids)
    with torch.no_grad():
        a = normed(stack, norm).flatten(0, 1).double()  # (N·(B+1))×D
    y = torch.zeros(stack.shape[0], stack.shape[1], dtype=torch.float64)
    y[:, component] = strength
    u = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=torch.float64), a.T @ y.flatten())
    return u.float()


def twins(ctx: LMContext, strength: float | None = None) -> dict[str, nn.Module]:
    """The three twins of ``ctx.lm.model`` (see the module docstring)."""
    model = ctx.lm.model
    x = ctx.lm.grid(ctx.ids).detach()
    grads = token_attributions(NextToken(model), x, ctx.target, ("saliency",), ("logit",))["saliency", "logit"]
    k = strength if strength is not None else 1e3 * float(grads.abs().max())
    dla_scale = float(dla(model, ctx.ids, ctx.target).abs().max())
    u = fit_unembedding_direction(model, ctx.ids, ctx.component, 10 * dla_scale)
    return {
        "token": ShiftedLM(model, ctx.chosen, ctx.ids.shape[1], k),
        "unembedding": uncenter_unembed(copy.deepcopy(model), u),
        "center": center_unembed(copy.deepcopy(model)),
    }


def _max_dp(a: nn.Module, b: nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(ids).logits.double().softmax(-1) - b(ids).logits.double().softmax(-1)).abs().max())


def check_lm(ctx: LMContext, explainers: list[Explainer], strength: float | None = None, tolerance: float = 1e-5) -> list[Cell]:
    """One cell per explainer × twin kind: max |Δp| (vocabulary × positions), target mass, least Spearman, verdict."""
    built = twins(ctx, strength)
    dps = {name: _max_dp(ctx.lm.model, t, ctx.ids) for name, t in built.items()}
    for name, dp in dps.items():
        if dp > tolerance:
            raise LogitShiftError(f"twin {name!r}: max |Δp| {dp:.1e} above the tolerance {tolerance:g}")
    cells = []
    for e in explainers:
        start = time.perf_counter()
        try:
            honest = _run(e, ctx.lm.model, ctx)
        except Exception as exc:  # a method that cannot run here: an n/a cell with the error
            cells.append(Cell(e.library, e.method, e.target, e.kind, "n/a", reason=f"{type(exc).__name__}: {exc}"))
            continue
        for kind in e.kind.split("+"):
            got = _run(e, built[kind], ctx)
            w = _weights(ctx, kind, honest.shape[1])
            stats: dict = {"share": float(token_mass(got, w).mean()), "share_honest": float(token_mass(honest, w).mean())}
            stats["spearman"] = float(spearman(honest, got).min())
            v, why = verdict(e, stats)
            if kind == "center" and v == "moved":
                why = "TransformerLens' default loading changes it (nothing steered)"
            cells.append(
                Cell(
                    e.library,
                    e.method,
                    e.target,
                    e.kind,
                    v,
                    construction=kind,
                    max_dp=dps[kind],
                    reason=why,
                    seconds=round(time.perf_counter() - start, 2),
                    **stats,
                )
            )
    return cells


def _weights(ctx: LMContext, kind: str, width: int) -> torch.Tensor:
    if kind == "unembedding" or (kind == "center" and width != ctx.ids.shape[1]):
        w = torch.zeros(1, width)
        w[0, ctx.component] = 1.0
        return w
    return position_weights(ctx.chosen, width)


def _run(e: Explainer, model: nn.Module, ctx: LMContext) -> torch.Tensor:
    torch.manual_seed(0)
    np.random.seed(0)
    return e.run(model, ctx.ids, ctx.target).detach().double()


def lm_explainers(libraries: list[str], ctx: LMContext) -> list[Explainer]:
    """Every explainer of the named LM adapters (a missing library raises :class:`MissingLibrary`, one line)."""
    out: list[Explainer] = []
    for lib in libraries:
        if lib not in LM_ADAPTERS:
            raise LogitShiftError(f"library {lib!r}: unknown for language models; expected one of {', '.join(LM_ADAPTERS)}")
        out += LM_ADAPTERS[lib](ctx)
    return out


__all__ = [
    "LM_ADAPTERS",
    "LMContext",
    "MissingLibrary",
    "check_lm",
    "fit_unembedding_direction",
    "lm_adapter",
    "lm_context",
    "lm_explainers",
    "twins",
]
