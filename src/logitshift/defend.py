"""Drop-in defenses: shift-immune scores for pytorch-grad-cam and Captum.

A shifted model outputs ``z' = z + t(x)·1``: the same probabilities as the
original, but every logit gradient gains ``∇t``, so an explanation of the
logit ``z_c`` can be steered anywhere. A score that depends on logit
*differences* only cancels ``t`` exactly, in value and in gradient:

==========  ===================================  ============================
score       formula                              use when
==========  ===================================  ============================
centered    ``z_c − mean_j z_j``                 default: on honest models it
                                                 gives the logit's map
                                                 (docs/defend.md), never
                                                 saturates
prob        ``softmax(z)_c``                     gradient vanishes as p → 1
logprob     ``z_c − logsumexp_j z_j``            = prob's map for Grad-CAM
contrast    ``z_c − logsumexp_{j≠c} z_j``        "why c rather than the rest"
==========  ===================================  ============================

This module depends on torch only (no other part of logitshift, no Captum or
pytorch-grad-cam import), so it can be copied into any project.

pytorch-grad-cam (targets are callables on one sample's output)::

    from logitshift.defend import CenteredLogitTarget
    cam = GradCAM(model, [layer])(x, targets=[CenteredLogitTarget(c) for c in classes])

Captum (the score is whatever the forward function returns)::

    from logitshift.defend import ScoreWrapper
    attr = LayerGradCam(ScoreWrapper(model, "centered"), layer).attribute(x, target=c)
"""

from __future__ import annotations

import torch
from torch import nn

IMMUNE_SCORES = ("prob", "logprob", "centered", "contrast")


def _check(score: str) -> str:
    if score not in IMMUNE_SCORES:
        raise ValueError(f"score {score!r}: expected one of {', '.join(IMMUNE_SCORES)} (the shift-immune scores)")
    return score


def contrast_all(logits: torch.Tensor) -> torch.Tensor:
    """``z_c − logsumexp_{j≠c} z_j`` for every class c at once (…×C → …×C).

    Computed stably without a C×C tensor: with ``M`` the largest logit, for
    every class but the argmax ``logsumexp_{j≠c} = M + log(Σ_j e^{z_j−M} − e^{z_c−M})``
    (the sum keeps the ``e^0 = 1`` of the argmax, so the subtraction never
    cancels catastrophically); for the argmax the sum runs over the others
    directly. It equals ``log p_c − log(1 − p_c)``, the log-odds of ``p_c``.

    >>> contrast_all(torch.tensor([0.0, 0.0]))
    tensor([0., 0.])
    """
    if logits.shape[-1] < 2:
        raise ValueError("contrast: needs at least two classes")
    top = logits.argmax(dim=-1, keepdim=True)
    m = logits.gather(-1, top)
    e = torch.exp(logits - m)
    total = e.sum(dim=-1, keepdim=True)
    lse_others = m + torch.log((total - e).clamp_min(torch.finfo(logits.dtype).tiny))
    others_of_top = logits.scatter(-1, top, float("-inf"))
    lse_top = torch.logsumexp(others_of_top, dim=-1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)
    return logits - torch.where(is_top, lse_top.expand_as(logits), lse_others)


def immune_scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    """Every class's immune score from logits (…×C → …×C).

    ``immune_scores(z + t, s) == immune_scores(z, s)`` for any ``t`` broadcast
    over the class axis.

    >>> immune_scores(torch.tensor([[2.0, 1.0, 0.0]]), "centered")
    tensor([[ 1.,  0., -1.]])
    """
    _check(score)
    if score == "prob":
        return torch.softmax(logits, dim=-1)
    if score == "logprob":
        return torch.log_softmax(logits, dim=-1)
    if score == "centered":
        return logits - logits.mean(dim=-1, keepdim=True)
    return contrast_all(logits)


class ScoreTarget:
    """A pytorch-grad-cam target: the immune ``score`` of ``category``.

    Called on one sample's output (shape C) or a batch (N×C), like
    pytorch-grad-cam's ``ClassifierOutputTarget``::

        cam = GradCAM(model, [layer])
        maps = cam(x, targets=[ScoreTarget(285, "centered")])
    """

    score = "centered"

    def __init__(self, category: int, score: str | None = None) -> None:
        self.category = int(category)
        if score is not None:
            self.score = _check(score)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return immune_scores(model_output, self.score)[..., self.category]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category})"


class CenteredLogitTarget(ScoreTarget):
    """``z_c − mean_j z_j`` (recommended)::

    maps = GradCAM(model, [layer])(x, targets=[CenteredLogitTarget(c)])
    """

    score = "centered"


class ProbTarget(ScoreTarget):
    """``softmax(z)_c`` (same as pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``)::

    maps = GradCAM(model, [layer])(x, targets=[ProbTarget(c)])
    """

    score = "prob"


class LogProbTarget(ScoreTarget):
    """``log softmax(z)_c``::

    maps = GradCAM(model, [layer])(x, targets=[LogProbTarget(c)])
    """

    score = "logprob"


class ContrastTarget(ScoreTarget):
    """``z_c − logsumexp_{j≠c} z_j`` (class c against all others)::

    maps = GradCAM(model, [layer])(x, targets=[ContrastTarget(c)])
    """

    score = "contrast"


TARGETS = {"prob": ProbTarget, "logprob": LogProbTarget, "centered": CenteredLogitTarget, "contrast": ContrastTarget}


class ScoreWrapper(nn.Module):
    """``model`` whose output column ``c`` is the immune score of class c (for Captum).

    Captum attributes ``forward_func(x)[:, target]``; wrapping the model picks
    the score. Layers of ``model`` stay the same module objects, so pass them
    to Captum's layer methods as usual::

        wrapped = ScoreWrapper(model, "centered")
        attr = LayerGradCam(wrapped, model.layer4).attribute(x, target=c)
    """

    def __init__(self, model: nn.Module, score: str = "centered") -> None:
        super().__init__()
        self.model = model
        self.score = _check(score)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return immune_scores(self.model(*args, **kwargs), self.score)

    def extra_repr(self) -> str:
        return f"score={self.score!r}"


__all__ = [
    "IMMUNE_SCORES",
    "TARGETS",
    "CenteredLogitTarget",
    "ContrastTarget",
    "LogProbTarget",
    "ProbTarget",
    "ScoreTarget",
    "ScoreWrapper",
    "contrast_all",
    "immune_scores",
]
