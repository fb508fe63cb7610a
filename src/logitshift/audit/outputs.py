"""Which outputs and classes the audit reads: each softmax group of a model with several outputs
(:func:`output_groups`, :func:`select_output`) and the classes users explain per image (:func:`explained_classes`)."""

from __future__ import annotations

import torch

from ..core.capture import as_logits
from ..core.errors import LogitShiftError


def output_groups(out: object) -> list[object]:
    """The keys of a model output's softmax groups: every N×C floating tensor (C ≥ 2) of a tuple/list or dict
    output, in order; ``[None]`` for one tensor (or an object :func:`~logitshift.core.capture.as_logits` reads)."""
    if isinstance(out, (tuple, list)):
        keys: list[object] = [i for i, v in enumerate(out) if _is_group(v)]
    elif isinstance(out, dict):
        keys = [k for k, v in out.items() if _is_group(v)]
    else:
        return [None]
    return keys if len(keys) > 1 else [None]


def _is_group(v: object) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 2 and v.is_floating_point() and v.shape[1] >= 2


def select_output(out: object, key: object = None) -> torch.Tensor:
    """Output ``key`` of a tuple/list/dict output (a key of :func:`output_groups`); ``None``: the logits as
    :func:`~logitshift.core.capture.as_logits` finds them."""
    if key is None:
        return as_logits(out)
    part = out[key] if isinstance(out, dict) else out[key] if isinstance(out, (tuple, list)) and isinstance(key, int) else None
    return as_logits(part, f"model output {key!r}")


def explained_classes(z: torch.Tensor, explain: int | torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The classes explained on each row, N×k: ``explain`` given per audited image (k×… indices, one row per
    image), or an int k: the top-k classes of each image by logit; rows that are method points take their
    image's classes (``source``)."""
    images = int(source.max()) + 1
    if isinstance(explain, int):
        k = max(1, min(explain, z.shape[1]))
        per_image = z.detach()[:images].topk(k, dim=1).indices
    else:
        per_image = explain.to(z.device).long().view(images, -1)
        bad = per_image[(per_image < 0) | (per_image >= z.shape[1])]
        if bad.numel():
            raise LogitShiftError(f"class {int(bad[0])}: the model has {z.shape[1]} outputs (0…{z.shape[1] - 1})")
    return per_image[source.to(z.device)]
