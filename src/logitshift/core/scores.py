"""The scalar an explanation differentiates, defined once and used everywhere.

For logits ``z`` (N×C) and one target class ``c`` per row:

==========  ===================================  ======================
name        formula                              immune to ``z + t(x)·1``
==========  ===================================  ======================
logit       ``z_c``                              no (pre-softmax)
prob        ``softmax(z)_c``                     yes (post-softmax)
logprob     ``z_c - logsumexp_j z_j``            yes
centered    ``z_c - mean_j z_j``                 yes
contrast    ``z_c - logsumexp_{j≠c} z_j``        yes
==========  ===================================  ======================

Every immune score is a function of logit *differences* only, so an
input-dependent common-mode term ``t(x)`` cancels from its value and from its
gradient. Example::

    >>> z = torch.tensor([[2.0, 1.0, 0.0]])
    >>> score(z, torch.tensor([0]), "centered")
    tensor([1.])
"""

from __future__ import annotations

import torch

from .errors import LogitShiftError
from .names import IMMUNE as IMMUNE
from .names import SCORES as SCORES


def check_score(name: str) -> str:
    if name not in SCORES:
        raise LogitShiftError(f"score {name!r}: unknown; expected one of {', '.join(SCORES)}")
    return name


def score(logits: torch.Tensor, target: torch.Tensor, name: str = "logit") -> torch.Tensor:
    """Score of class ``target[i]`` for each row ``i`` of ``logits`` (returns shape N)."""
    check_score(name)
    if logits.dim() != 2:
        raise LogitShiftError(f"logits: expected shape N×C, got {tuple(logits.shape)}")
    target = torch.as_tensor(target, device=logits.device).long().view(-1, 1)
    z_c = logits.gather(1, target).squeeze(1)
    if name == "logit":
        return z_c
    if name == "prob":
        return torch.softmax(logits, dim=1).gather(1, target).squeeze(1)
    if name == "logprob":
        return torch.log_softmax(logits, dim=1).gather(1, target).squeeze(1)
    if name == "centered":
        return z_c - logits.mean(dim=1)
    others = logits.scatter(1, target, float("-inf"))
    return z_c - torch.logsumexp(others, dim=1)
