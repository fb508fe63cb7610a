"""Where an attacker wants the explanation to point: a target region.

A :class:`Target` is a weight mask over the input image (1 inside, 0 outside,
fractions on edges). It is given as

* a pixel box ``"x0,y0,x1,y1"`` (end-exclusive, in model-input pixels),
* a box of grid cells ``"cells:r0,c0,r1,c1"`` (end-exclusive) of the layer's
  H×W grid,
* a named corner ``"top-left"`` (also ``top-right``, ``bottom-left``,
  ``bottom-right``, ``center``): a box of 2/7 of each side, the paper's
  2×2-of-7×7 cells,
* a mask image (PNG): non-zero pixels are the target.

:meth:`Target.weights` resamples it to any map resolution by area, so the same
target serves a 7×7 Grad-CAM grid and a 224×224 saliency map.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import LogitShiftError
from .files import atomic_write

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"


@dataclass(frozen=True)
class Target:
    """A target region as a float mask at input resolution (size×size, values in [0, 1])."""

    mask: torch.Tensor
    spec: str

    @property
    def size(self) -> int:
        return int(self.mask.shape[-1])

    def weights(self, h: int, w: int) -> torch.Tensor:
        """The share of each cell of an h×w grid that lies inside the target."""
        if (h, w) == tuple(self.mask.shape):
            return self.mask.clone()
        return F.adaptive_avg_pool2d(self.mask[None, None], (h, w))[0, 0]


def parse_target(spec: str | os.PathLike, size: int = 224, grid: tuple[int, int] | None = None) -> Target:
    """Parse a target given on the command line or in the API.

    ``grid`` (the layer's H×W) is needed only for ``cells:`` targets.
    """
    text = str(spec).strip()
    if text in CORNERS:
        side = round(size * 2 / 7)
        lo, hi = 0, size - side
        mid = (size - side) // 2
        x0, y0 = {"top-left": (lo, lo), "top-right": (hi, lo), "bottom-left": (lo, hi), "bottom-right": (hi, hi), "center": (mid, mid)}[
            text
        ]
        return _box(text, x0, y0, x0 + side, y0 + side, size)
    if text.startswith("cells:"):
        numbers = re.fullmatch(rf"cells:{_NUM},{_NUM},{_NUM},{_NUM}", text)
        if not numbers:
            raise LogitShiftError(f"region {text!r}: expected cells:r0,c0,r1,c1 (grid cells, end-exclusive)")
        if grid is None:
            raise LogitShiftError(f"region {text!r}: cells need the layer's grid size")
        r0, c0, r1, c1 = (int(float(v)) for v in numbers.groups())
        gh, gw = grid
        if not (0 <= r0 < r1 <= gh and 0 <= c0 < c1 <= gw):
            raise LogitShiftError(f"region {text!r}: cells outside the {gh}×{gw} grid of the layer")
        mask = torch.zeros(gh, gw)
        mask[r0:r1, c0:c1] = 1.0
        up = F.interpolate(mask[None, None], size=(size, size), mode="nearest")[0, 0]
        return Target(up, text)
    numbers = re.fullmatch(rf"{_NUM},{_NUM},{_NUM},{_NUM}", text)
    if numbers:
        fx0, fy0, fx1, fy1 = (float(v) for v in numbers.groups())
        return _box(text, fx0, fy0, fx1, fy1, size)
    if text.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")) or os.path.exists(text):
        return _mask_image(text, size)
    raise LogitShiftError(f"region {text!r}: expected x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, {'/'.join(CORNERS)}, or a mask PNG")


def _box(spec: str, x0: float, y0: float, x1: float, y1: float, size: int) -> Target:
    if not (x0 < x1 and y0 < y1):
        raise LogitShiftError(f"region {spec!r}: empty box, expected x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > size or y1 > size:
        raise LogitShiftError(f"region {spec!r}: outside the {size}×{size} image")
    mask = torch.zeros(size, size)
    mask[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = 1.0
    if mask.sum() == 0:
        raise LogitShiftError(f"region {spec!r}: covers no pixel")
    return Target(mask, spec)


def _mask_image(path: str, size: int) -> Target:
    from PIL import Image as PILImage

    if not os.path.isfile(path):
        raise LogitShiftError(f"region {path!r}: no such mask file")
    try:
        with PILImage.open(path) as im:
            gray = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise LogitShiftError(f"region {path!r}: not a readable mask image ({type(exc).__name__})") from exc
    if gray.shape != (size, size):
        raise LogitShiftError(f"region {path!r}: mask is {gray.shape[1]}×{gray.shape[0]}, expected {size}×{size} (the model input)")
    mask = torch.from_numpy((gray > 0.5).astype(np.float32))
    if mask.sum() == 0:
        raise LogitShiftError(f"region {path!r}: the mask is empty (no pixel above half intensity)")
    if mask.sum() == mask.numel():
        raise LogitShiftError(f"region {path!r}: the mask covers the whole image; a target must leave something out")
    return Target(mask, path)


def text_mask(text: str, size: int = 224, path: str | os.PathLike | None = None) -> Target:
    """A target shaped like ``text``, drawn with Pillow's bundled font to fill a ``size``×``size`` mask.

    With ``path`` the mask is also written as a PNG (white text on black), the
    form ``--target`` takes on the command line. Example::

        >>> target = text_mask("HI", 224, "hi.png")   # then: logitshift attack --target hi.png ...
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    if not text.strip():
        raise LogitShiftError("text mask: empty text; expected at least one visible character")
    im = PILImage.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    font_size = size
    while font_size > 4:
        font = ImageFont.load_default(size=font_size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        if x1 - x0 <= 0.9 * size and y1 - y0 <= 0.8 * size:
            break
        font_size = int(font_size * 0.9)
    draw.text(((size - (x1 - x0)) / 2 - x0, (size - (y1 - y0)) / 2 - y0), text, fill=255, font=font)
    if path is not None:
        atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))
    mask = torch.from_numpy((np.asarray(im, dtype=np.float32) / 255.0 > 0.5).astype(np.float32))
    if mask.sum() == 0:
        raise LogitShiftError(f"text mask {text!r}: draws no pixel at size {size}")
    return Target(mask, str(path) if path is not None else f"text:{text}")
