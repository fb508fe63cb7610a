"""A folder of ordinary photos of mixed sizes, made offline from scikit-image and matplotlib samples (crops, rescales,
grey and colour, JPEG and PNG): what a user's own ``photos/`` looks like to the defaults of demo and evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def sources() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data as data
    from PIL import Image

    hopper = np.asarray(Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB"))
    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "hubble": data.hubble_deep_field(),
        "cells": data.immunohistochemistry(),
        "camera": data.camera(),
        "coins": data.coins(),
        "hopper": hopper,
        "wheel": data.colorwheel(),
    }


def make_photos(folder: Path, n: int = 20, seed: int = 0) -> list[Path]:
    """``n`` photos in ``folder``: each source twice, as a random crop (40–100 % of each side) rescaled by 0.3–1.5."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = list(sources().items())
    paths = []
    for i in range(n):
        name, img = items[i % len(items)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(img[y : y + ch, x : x + cw])
        scale = rng.uniform(0.3, 1.5)
        crop = crop.resize((max(16, int(cw * scale)), max(16, int(ch * scale))), Image.BILINEAR)
        path = folder / f"{name}_{i:02d}.{'jpg' if i % 2 else 'png'}"
        crop.save(path, quality=90) if path.suffix == ".jpg" else crop.save(path)
        paths.append(path)
    return paths
