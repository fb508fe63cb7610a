"""Attention rollout (Abnar & Zuidema, 2020), on a ViT's attention probabilities.

Per block, ``Â_b = ½(mean_heads A_b) + ½ I`` (the residual connection),
rows renormalised to sum to 1; ``R = Â_L ⋯ Â_1``; the map is the class
token's row ``R[0, patches]`` on the patch grid.

It reads no score: neither the class nor the logits enter it, only the
attention of the forward pass, which the logit shift leaves unchanged
(``z' = z + t(x)·1`` is added after the trunk). So it is **immune** to the
shift by construction — and, for the same reason, not class-specific.
``tests/test_transformers.py`` measures both variants equal.

Example::

    >>> maps = AttentionRollout().maps(vit, x, target=0)      # N×14×14 for vit_b_16
"""

from __future__ import annotations

import torch

from .base import AttentionMethod


class AttentionRollout(AttentionMethod):
    name = "rollout"
    label = "attention rollout"

    def relevance(self, p, probs, target, score, variant):
        n, _, length, _ = probs[0].shape
        eye = torch.eye(length, dtype=probs[0].dtype, device=probs[0].device)
        rel = eye.expand(n, length, length)
        with torch.no_grad():
            for a in probs:
                hat = 0.5 * a.mean(dim=1) + 0.5 * eye
                hat = hat / hat.sum(dim=-1, keepdim=True)
                rel = hat @ rel
        return rel
