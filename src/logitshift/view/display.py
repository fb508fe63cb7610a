"""Maps ready for people and for other programs: input-size maps in [0, 1], overlays, raw-map files.

Raw attribution maps live on a layer's grid (CAMs) or on the input pixels, in
the units of the score's gradient. Three steps turn them into something to look
at or to take elsewhere:

* :func:`display_maps` — upsample to the image size and scale per map into
  ``[0, 1]`` (or ``[-1, 1]`` for signed attributions), clipping at a
  percentile of ``|map|`` so that a few extreme pixels (common in Integrated
  Gradients and gradient × input) do not wash the rest out to one colour;
* :func:`overlay` — an RGB image with the map drawn over it (no figure, no screen);
* :func:`save_maps` / :func:`load_maps` — the raw maps with what they are
  (image ids, classes, scores, methods, variants) as named arrays in one
  ``.npz`` file that NumPy reads without logitshift.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import LogitShiftError
from ..core.files import atomic_write

#: percentile of |map| mapped to the top of the colour scale (per map)
CLIP_PERCENTILE = 99.5


def display_maps(
    maps: torch.Tensor, size: int | tuple[int, int] | None = None, *, signed: bool = False, clip: float | None = CLIP_PERCENTILE
) -> torch.Tensor:
    """N×h×w maps → N×H×W maps at ``size`` (bilinear), scaled per map.

    Unsigned (default): negative values are cut to 0 and each map is divided
    by the ``clip`` percentile of its values (``None``: by its maximum), then
    clamped to ``[0, 1]``. Signed: each map is divided by the ``clip``
    percentile of ``|map|`` and clamped to ``[-1, 1]`` (0 stays 0, for a
    diverging colour map). An all-zero map stays all zeros.
    """
    if maps.dim() != 3:
        raise LogitShiftError(f"maps: expected N×h×w, got shape {tuple(maps.shape)}")
    if clip is not None and not 0 < clip <= 100:
        raise LogitShiftError(f"clip {clip!r}: expected a percentile in (0, 100]")
    m = maps.detach().float()
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(m.shape[-2:]) != hw:
            m = F.interpolate(m[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    if not signed:
        m = m.clamp_min(0)
    mag = m.abs().flatten(1)
    top = mag.amax(dim=1) if clip is None or clip == 100 else torch.quantile(mag, clip / 100, dim=1)
    top = torch.where(top > 0, top, mag.amax(dim=1))  # a sparse map whose percentile is 0: use its maximum
    scale = torch.where(top > 0, 1 / top.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(top))
    out = m * scale[:, None, None]
    return out.clamp(-1, 1) if signed else out.clamp(0, 1)


def overlay(rgb: np.ndarray, heat: np.ndarray | torch.Tensor, *, signed: bool = False, alpha: float = 0.5) -> np.ndarray:
    """``heat`` (H×W, in [0, 1] or [-1, 1] when ``signed``) over ``rgb`` (H×W×3, floats in [0, 1] or uint8) → uint8 H×W×3.

    Colour maps: ``jet`` for unsigned maps (as the Grad-CAM literature draws
    them), ``RdBu_r`` (blue negative, white zero, red positive) for signed ones.
    """
    from matplotlib import colormaps

    img = np.asarray(rgb)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h = np.asarray(heat.detach().cpu() if isinstance(heat, torch.Tensor) else heat, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or h.shape != img.shape[:2]:
        raise LogitShiftError(f"overlay: image {img.shape} and map {h.shape} must be H×W×3 and H×W of the same size")
    colours = colormaps["RdBu_r"]((h + 1) / 2) if signed else colormaps["jet"](h)
    out = (1 - alpha) * img + alpha * colours[..., :3]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


#: the named arrays of a maps file besides ``maps`` (one entry per map)
LABELS = ("image", "class", "score", "method", "variant")


def stack_maps(maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, np.ndarray | None]:
    """N maps (each h×w) as one N×H×W tensor, and each map's own h×w (``None`` when all are the same size).

    Maps of one size are stacked as they are. Mixed sizes (a CAM on a layer's
    grid next to an input method's pixels) are brought to the largest size
    with :func:`logitshift.attribution.upsample` (bilinear), the step every
    display of a CAM takes; the second result then records each map's grid.
    """
    from ..attribution import upsample

    if not maps:
        raise LogitShiftError("maps: none to save")
    shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
    if len(set(shapes)) == 1:
        return torch.stack([m.detach().float().cpu() for m in maps]), None
    size = max(shapes, key=lambda hw: hw[0] * hw[1])
    out = torch.cat([upsample(m.detach().float().cpu()[None], size) for m in maps])
    return out, np.asarray(shapes, dtype=np.int64)


def explained_maps(
    maps: dict[tuple[int, str, str, str], torch.Tensor], targets: Sequence[torch.Tensor], images: Sequence[str]
) -> tuple[list[torch.Tensor], dict[str, list]]:
    """The maps of an engine result (``Explained.maps``, keyed ``(slot, method, score, variant)``, each N×h×w)
    as one h×w map per (image, slot, method, score, variant), and their :data:`LABELS` for :func:`save_maps`."""
    out: list[torch.Tensor] = []
    labels: dict[str, list] = {k: [] for k in LABELS}
    for (slot, method, score, variant), batch in maps.items():
        for i, image in enumerate(images):
            out.append(batch[i])
            for key, value in zip(LABELS, (image, int(targets[slot][i]), score, method, variant)):
                labels[key].append(value)
    return out, labels


def save_maps(path: str | os.PathLike, maps: torch.Tensor | np.ndarray | Sequence[torch.Tensor], **labels: Sequence) -> Path:
    """Write N maps (N×h×w, or a list of h×w maps) and one label per map for each of :data:`LABELS` to ``path`` (``.npz``).

    Written atomically; ``numpy.load(path)`` reads it back as arrays ``maps``
    (float32), ``image`` / ``score`` / ``method`` / ``variant`` (strings) and
    ``class`` (int64). A list of maps of mixed sizes is stacked by
    :func:`stack_maps` and the file gains ``grid`` (N×2: each map's own h×w).
    """
    grid = None
    if isinstance(maps, (list, tuple)):
        maps, grid = stack_maps(maps)
    assert not isinstance(maps, (list, tuple))
    arr = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, dtype=np.float32)
    missing = [k for k in LABELS if k not in labels]
    extra = [k for k in labels if k not in LABELS]
    if missing or extra:
        raise LogitShiftError(f"save_maps: labels {', '.join(LABELS)} expected; missing {missing}, unknown {extra}")
    arrays = {"maps": arr} if grid is None else {"maps": arr, "grid": grid}
    for key in LABELS:
        values = list(labels[key])
        if len(values) != arr.shape[0]:
            raise LogitShiftError(f"save_maps: {len(values)} values of {key!r} for {arr.shape[0]} maps")
        arrays[key] = np.asarray(values, dtype=np.int64) if key == "class" else np.asarray([str(v) for v in values], dtype=str)
    path = check_maps_path(path)
    return atomic_write(path, lambda tmp: _savez(tmp, arrays))


def check_maps_path(path: str | os.PathLike) -> Path:
    """A maps file name ends in ``.npz`` (commands check it before any work)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise LogitShiftError(f"maps file {str(path)!r}: expected a .npz name")
    if path.is_dir():
        raise LogitShiftError(f"maps file {str(path)!r}: is a folder")
    return path


def _savez(tmp: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a temporary name
        np.savez_compressed(fh, allow_pickle=False, **arrays)


def load_maps(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_maps` (no pickle: ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise LogitShiftError(f"maps file {str(path)!r}: cannot be read ({str(exc).splitlines()[0][:120]})") from exc
    missing = [k for k in ("maps", *LABELS) if k not in out]
    if missing:
        raise LogitShiftError(f"maps file {str(path)!r}: missing arrays {', '.join(missing)}")
    return out


__all__ = [
    "CLIP_PERCENTILE",
    "LABELS",
    "check_maps_path",
    "display_maps",
    "explained_maps",
    "load_maps",
    "overlay",
    "save_maps",
    "stack_maps",
]
