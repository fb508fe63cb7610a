"""Gradient-weighted attention (Chefer, Gur & Wolf, ICCV 2021, "Generic attention-model explainability").

For a score ``s`` (see :mod:`logitshift.core.scores`), per block
``Ā_b = mean_heads ReLU(∂s/∂A_b ⊙ A_b)`` and, from ``R = I``,
``R ← R + Ā_b R`` block by block; the map is the class token's row
``R[0, patches]`` on the patch grid.

It reads the score's gradient, so a logit shift reaches it: ``∂z'_c/∂A_b =
∂z_c/∂A_b + ∂t/∂A_b`` for every block below the layer the shift term reads.
``tests/test_transformers.py`` shows the shifted logit map move while the
probability maps stay put.

Example::

    >>> maps = AttentionGradient().maps(vit, x, target=285, score="logit")
"""

from __future__ import annotations

import torch

from .base import AttentionMethod


class AttentionGradient(AttentionMethod):
    name = "attngrad"
    label = "gradient-weighted attention"

    def relevance(self, p, probs, target, score, variant):
        grads = torch.autograd.grad(p.score(target, score, variant).sum(), probs, retain_graph=True, allow_unused=True)
        n, _, length, _ = probs[0].shape
        rel = torch.eye(length, dtype=probs[0].dtype, device=probs[0].device).expand(n, length, length)
        with torch.no_grad():
            for a, g in zip(probs, grads):
                if g is None:
                    continue
                rel = rel + torch.relu(g * a).mean(dim=1) @ rel
        return rel
