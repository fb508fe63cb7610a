"""Tiles: one map over its image as a small picture, drawn from the saved maps (a figure's ``.npz`` beside it).

A figure grid of rows × columns of maps (``logitshift matrix``'s ``matrix.png``) saves the maps it
was drawn from with :func:`save_tiles` (``matrix.npz``: the image, the target mask and each cell's
raw map with its row, column and whether it is signed); the report reads them back with
:func:`load_tiles` and draws each cell with :func:`tile`: the map scaled as every figure scales it
(:func:`logitshift.view.figures.scaled`), coloured over the image by
:func:`logitshift.view.display.overlay`, the target's edge in white.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import LogitShiftError
from ..core.files import atomic_write
from .display import overlay
from .figures import scaled


@dataclass
class Tiles:
    """An image (H×W×3 uint8), its target mask (H×W bool) and the raw maps of a grid, by (row, column)."""

    rgb: np.ndarray
    target: np.ndarray
    maps: dict[tuple[str, str], tuple[np.ndarray, bool]]  # (row, column) → (raw h×w map, signed)


def save_tiles(
    path: str | os.PathLike, rgb: np.ndarray, target: np.ndarray | None, maps: Mapping[tuple[str, str], tuple[torch.Tensor, bool]]
) -> Path:
    """Write ``maps`` ((row, column) → (raw h×w map, signed)) with the image and target to ``path`` (``.npz``, no pickle)."""
    img = np.asarray(rgb)
    img = img if img.dtype == np.uint8 else (np.clip(img.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    mask = np.zeros(img.shape[:2], dtype=bool) if target is None else np.asarray(target) > 0.5
    arrays: dict[str, np.ndarray] = {
        "rgb": img,
        "target": mask,
        "row": np.asarray([r for r, _ in maps], dtype=str),
        "column": np.asarray([c for _, c in maps], dtype=str),
        "signed": np.asarray([s for _, s in maps.values()], dtype=bool),
    }
    for i, (raw, _) in enumerate(maps.values()):
        arrays[f"map{i}"] = np.asarray(raw.detach().float().cpu() if isinstance(raw, torch.Tensor) else raw, dtype=np.float32)

    def write(tmp: str | os.PathLike) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a temporary name
            np.savez_compressed(fh, allow_pickle=False, **arrays)

    return atomic_write(path, write)


def load_tiles(path: str | os.PathLike) -> Tiles:
    """Read a file of :func:`save_tiles` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rows, cols, signed = list(data["row"]), list(data["column"]), list(data["signed"])
            maps = {(str(r), str(c)): (data[f"map{i}"], bool(s)) for i, (r, c, s) in enumerate(zip(rows, cols, signed))}
            return Tiles(data["rgb"], data["target"].astype(bool), maps)
    except (OSError, ValueError, KeyError) as exc:
        raise LogitShiftError(f"tiles file {str(path)!r}: cannot be read ({str(exc).splitlines()[0][:120]})") from None


def tile(tiles: Tiles, key: tuple[str, str]) -> np.ndarray:
    """The map at ``key`` over the image (uint8 H×W×3): scaled per map, coloured by its sign, the target's edge in white."""
    raw, signed = tiles.maps[key]
    h, w = tiles.rgb.shape[:2]
    heat = scaled(torch.from_numpy(np.asarray(raw, dtype=np.float32))[None], (h, w), signed)[0]
    out = overlay(tiles.rgb, heat, signed=signed)
    mask = tiles.target
    if 0 < mask.sum() < mask.size:
        p = np.pad(mask, 1, mode="edge")
        edge = mask & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
        out[edge] = 255
    return out


__all__ = ["Tiles", "load_tiles", "save_tiles", "tile"]
