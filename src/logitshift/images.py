"""Images in, model inputs out.

:func:`load_image` accepts a file path (JPEG, PNG, anything Pillow reads, in
any mode) or the name of a sample photograph shipped with scikit-image, and
returns an :class:`Image`: the centre-cropped RGB picture (for overlays) and
the normalised tensor the model takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LogitShiftError
from .models import Preprocess

#: scikit-image samples that ship inside its wheel (no download).
SAMPLES = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle", "hubble", "camera", "immunohistochemistry")
DEFAULT_SAMPLES = ("chelsea", "coffee", "rocket", "astronaut")

#: default bound on decoded pixels (decompression bombs); ``max_pixels`` overrides.
MAX_PIXELS = 64_000_000
#: longest side over shortest side accepted: a thinner picture is no photograph a classifier was trained on
MAX_ASPECT = 50


@dataclass
class Image:
    """One preprocessed image."""

    name: str
    rgb: np.ndarray  # H×W×3 uint8, the crop the model sees
    tensor: torch.Tensor  # 3×H×W float32, normalised


def sample_array(name: str) -> np.ndarray:
    """An RGB uint8 array of a scikit-image sample photograph."""
    import skimage.data as data

    loaders = {
        "chelsea": data.chelsea,
        "cat": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "astronaut": data.astronaut,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field,
        "camera": data.camera,
        "immunohistochemistry": data.immunohistochemistry,
    }
    if name not in loaders:
        raise LogitShiftError(f"image {name!r}: no such file or sample; samples are {', '.join(SAMPLES)}")
    array = np.asarray(loaders[name]())
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def read_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB uint8, whatever its mode.

    EXIF orientation is applied; 16-bit and float images are scaled to 8 bits;
    alpha is composited on white; palette, CMYK, grayscale become RGB. Files
    over ``max_pixels`` decoded pixels are refused before decoding.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    path = Path(path)
    if not path.is_file():
        raise LogitShiftError(f"image {str(path)!r}: no such file")
    if path.stat().st_size == 0:
        raise LogitShiftError(f"image {str(path)!r}: empty file")
    try:
        with PILImage.open(path) as im:
            if im.width * im.height > max_pixels:
                raise LogitShiftError(f"image {str(path)!r}: {im.width}×{im.height} pixels exceeds the limit of {max_pixels:,}")
            if max(im.width, im.height) > MAX_ASPECT * max(1, min(im.width, im.height)):
                raise LogitShiftError(
                    f"image {str(path)!r}: {im.width}×{im.height} pixels, a side ratio over {MAX_ASPECT}:1; expected a photograph"
                )
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except LogitShiftError:
        raise
    except Exception as exc:
        raise LogitShiftError(f"image {str(path)!r}: not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from exc


def _to_rgb(im) -> np.ndarray:
    from PIL import Image as PILImage

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
        if im.mode == "F" and array.max() <= 1.0:
            top = 1.0
        gray = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return np.stack([gray] * 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(PILImage.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def resize_crop(rgb: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resize the shorter side to ``pre.resize`` and centre-crop ``pre.size``.

    Images smaller than the input are upsampled the same way. Only the crop is
    computed: the crop window of the resized picture is mapped back to the
    source and resampled from there (PIL's ``box``), so memory is that of the
    ``size``×``size`` result whatever the picture's shape (a 1×60000 strip once
    asked for 12 GB).
    """
    from PIL import Image as PILImage

    h, w = rgb.shape[:2]
    scale = pre.resize / min(h, w)
    nh, nw = max(pre.size, round(h * scale)), max(pre.size, round(w * scale))
    top, left = (nh - pre.size) // 2, (nw - pre.size) // 2
    sy, sx = h / nh, w / nw  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + pre.size) * sx, (top + pre.size) * sy)
    im = PILImage.fromarray(rgb).resize((pre.size, pre.size), PILImage.Resampling.BILINEAR, box=box, reducing_gap=None)
    return np.asarray(im)


def to_tensor(rgb: np.ndarray, pre: Preprocess) -> torch.Tensor:
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (x - mean) / std


def load_image(spec: str | os.PathLike, pre: Preprocess | None = None, max_pixels: int = MAX_PIXELS) -> Image:
    """Load a file or a named sample and preprocess it for the model."""
    pre = pre or Preprocess()
    text = str(spec)
    if not os.path.exists(text) and text in SAMPLES + ("cat",):
        rgb, name = sample_array(text), text
    elif not os.path.exists(text) and os.sep not in text and "." not in text:
        raise LogitShiftError(f"image {text!r}: no such file or sample; samples are {', '.join(SAMPLES)}")
    else:
        rgb, name = read_rgb(text, max_pixels), Path(text).stem
    crop = resize_crop(rgb, pre)
    return Image(name, crop, to_tensor(crop, pre))


def batch(images: list[Image]) -> torch.Tensor:
    """Stack preprocessed images into an N×3×H×W batch."""
    return torch.stack([im.tensor for im in images])
