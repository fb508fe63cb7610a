"""Numbers that say whether an explanation was steered.

* :func:`target_mass`: the share of a map's positive mass inside the target,
  ``Σ ReLU(m)·w / Σ ReLU(m)`` with ``w`` the target's coverage of each cell.
  An all-zero map has mass 0 (stated convention: it points nowhere).
* :func:`max_in_target`: whether a map's largest cell lies in the target
  (a cell the target covers at least half); an all-zero map: no.
* :func:`spearman`: rank correlation between two maps of the same shape
  (ties get average ranks). Two constant maps correlate 1 if equal, else 0;
  one constant map against a varying one gives 0 (instead of NaN).
"""

from __future__ import annotations

import numpy as np
import torch


def target_mass(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass inside the target (N×h×w maps, h×w weights)."""
    pos = torch.relu(maps.detach().double()).flatten(1)
    w = weights.to(pos).flatten()
    total = pos.sum(dim=1)
    inside = (pos * w).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))


def max_in_target(maps: torch.Tensor, weights: torch.Tensor) -> list[bool]:
    """Whether each map's largest cell (N×h×w maps) is a cell the target covers at least half (h×w weights ≥ 0.5)."""
    flat = maps.detach().flatten(1)
    cover = weights.flatten().to(flat.device)[flat.argmax(dim=1)]
    return [bool(c >= 0.5 and m > 0) for c, m in zip(cover, flat.amax(dim=1))]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of two batches of maps (N×...)."""
    from scipy.stats import rankdata  # imported here: scipy.stats costs seconds at start-up

    xa = a.detach().double().flatten(1).cpu().numpy()
    xb = b.detach().double().flatten(1).cpu().numpy()
    out = np.empty(len(xa))
    for i, (u, v) in enumerate(zip(xa, xb)):
        cu, cv = np.ptp(u) == 0, np.ptp(v) == 0
        if cu or cv:
            out[i] = 1.0 if (cu and cv and np.array_equal(u, v)) else 0.0
            continue
        ru, rv = rankdata(u), rankdata(v)
        out[i] = np.corrcoef(ru, rv)[0, 1]
    return torch.from_numpy(out)
