"""The rows of an evaluate run: one per (image, class, method, score, variant) of an engine batch, as the
results store keeps them (:data:`logitshift.runs.store.FIELDS`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.images import Item
from ..core.metrics import spearman, target_mass


def batch_rows(result, good: Sequence[Item], weights_for: Callable[[int, int], torch.Tensor]) -> list[dict[str, Any]]:
    """One row per (image, class, method, score, variant) of an :class:`~logitshift.attribution.engine.Explained` batch."""
    probs = {v: torch.softmax(z.double(), dim=1).cpu() for v, z in result.logits.items()}
    top1 = {v: p.argmax(dim=1) for v, p in probs.items()}
    diff = (probs["original"] - probs["shifted"]).abs().max(dim=1).values if "shifted" in probs else torch.zeros(len(good))
    base_top1 = result.top1.cpu()
    targets = [t.cpu() for t in result.targets]
    rows = []
    for (slot, method, score, variant), maps in result.maps.items():
        maps = maps.detach().double().cpu()
        mass = target_mass(maps, weights_for(*maps.shape[-2:]))
        if variant == "original":
            rho = torch.ones(len(good), dtype=torch.float64)
        else:
            rho = spearman(maps, result.maps[(slot, method, score, "original")])
        for i, item in enumerate(good):
            c = int(targets[slot][i])
            if any(int(targets[earlier][i]) == c for earlier in range(slot)):
                continue  # this image's class in an earlier slot (its top-1, a top-k class, a --class): already a row
            rows.append(
                {
                    "image": item.key,
                    "name": item.name,
                    "class": c,
                    "is_top1": int(c == int(base_top1[i])),
                    "method": method,
                    "score": score,
                    "variant": variant,
                    "target_mass": float(mass[i]),
                    "spearman_vs_original": float(rho[i]),
                    "max_abs_prob_diff": float(diff[i]),
                    "prob": float(probs[variant][i, c]),
                    "top1": int(top1[variant][i]),
                }
            )
    return rows
