"""Images in, model inputs out.

:func:`load_image` accepts a file path (JPEG, PNG, anything Pillow reads, in
any mode) or the name of a sample photograph shipped with scikit-image, and
returns an :class:`Image`: the centre-cropped RGB picture (for overlays) and
the normalised tensor the model takes. :func:`collect_images` turns what a
user names on the command line (``--images``: files, folders, ``@list``
files, sample names) into a list of :class:`Item` with display names that are
unique per input path (:func:`unique_names`: ``a/x.png`` and ``b/x.png``
become ``a-x`` and ``b-x``), and :func:`load_images` loads them all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import LogitShiftError
from .models import Preprocess
from .names import DEFAULT_SAMPLES as DEFAULT_SAMPLES

#: scikit-image samples that ship inside its wheel (no download).
SAMPLES = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle", "hubble", "camera", "immunohistochemistry")

#: files a folder given as ``--images`` contributes (others are counted as skipped)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

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


def read_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, need: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8, whatever its mode.

    EXIF orientation is applied; 16-bit and float images are scaled to 8 bits;
    alpha is composited on white; palette, CMYK, grayscale become RGB. Files
    over ``max_pixels`` decoded pixels are refused before decoding.

    ``need``: the shorter side the caller will resize to. A JPEG is then
    decoded at a reduced scale (``draft``: 1/2, 1/4 or 1/8, never below
    ``need``), and any picture whose shorter side is at least 4·``need`` is
    box-reduced by ``k = ⌊min(h, w) / (2·need)⌋`` right after decoding
    (:func:`_reduced`), so that the conversions to RGB work on a small picture:
    memory is then about one decoded copy in the file's own sample format
    (measured per kind in ``benchmarks/results/decode_memory.md``).
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
            if need and im.format == "JPEG":
                r = need / min(im.width, im.height)
                im.draft(None, (math.ceil(im.width * r), math.ceil(im.height * r)))  # DCT scaling, never below need
            im.load()
            return _to_rgb(ImageOps.exif_transpose(_reduced(im, need)))
    except LogitShiftError:
        raise
    except Exception as exc:
        raise LogitShiftError(f"image {str(path)!r}: not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from exc


#: modes PIL's ``reduce`` cannot work on, and the mode each is first converted to
_REDUCIBLE_AS = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}


def _reduced(im, need: int | None):
    """``im`` box-reduced by ``k = ⌊min(h, w) / (2·need)⌋`` when ``k ≥ 2`` (the result keeps twice the resolution
    the caller needs); 16-bit pictures keep their range (as ``I``, scaled in :func:`_to_rgb`)."""
    if not need:
        return im
    k = min(im.width, im.height) // (2 * need)
    if k < 2:
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in _REDUCIBLE_AS:
        wide = im.mode.startswith("I;16")
        im = im.convert(_REDUCIBLE_AS[im.mode])
        im.info["wide"] = wide
    reduced = im.reduce(k)
    reduced.info.update(im.info)
    return reduced


def _to_rgb(im) -> np.ndarray:
    from PIL import Image as PILImage

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.array(im, dtype=np.float32)  # a copy: scaled in place below
        peak = float(array.max()) if array.size else 0.0
        top = 65535.0 if im.mode.startswith("I;16") or im.info.get("wide") or peak > 255 else 255.0
        if im.mode == "F" and peak <= 1.0:
            top = 1.0
        array *= 255.0 / top
        np.clip(array, 0, 255, out=array)
        gray = array.astype(np.uint8)
        del array
        return np.repeat(gray[..., None], 3, axis=-1)
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
        rgb, name = read_rgb(text, max_pixels, need=pre.resize), Path(text).stem
    crop = resize_crop(rgb, pre)
    return Image(name, crop, to_tensor(crop, pre))


def batch(images: list[Image]) -> torch.Tensor:
    """Stack preprocessed images into an N×3×H×W batch."""
    return torch.stack([im.tensor for im in images])


@dataclass(frozen=True)
class Item:
    """One image to evaluate: its identity in the store, a display name, and what to load."""

    key: str
    name: str
    spec: str


def storable(name: str) -> str:
    """A file name as text for the store and reports: bytes that are not UTF-8 (kept by Python as lone
    surrogates, which SQLite and UTF-8 files refuse) become ``\\xNN`` escapes. The same name always gives the same text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def collect_images(specs: Sequence[str], lists: Sequence[str] = ()) -> tuple[list[Item], int]:  # noqa: C901 — one branch per input form (file, folder, @list, sample, URL refusal)
    """The images named by ``specs`` (files, folders, ``@list`` files, samples) and ``lists``.

    Folders are searched recursively for files with an image extension (hidden
    files skipped), in sorted order. A list file has one path or sample name a
    line (``#`` comments, blank lines ignored; relative paths are relative to
    the list file). Entries of a list file that do not exist become bad images
    later (recorded, not fatal); a command-line argument that is none of the
    above is an error. Duplicates are dropped. Returns the items and the
    number of non-image files skipped in folders.
    """
    items: list[Item] = []
    seen: set[str] = set()
    skipped = 0

    def add(item: Item) -> None:
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)

    def add_entry(text: str, base: Path | None, strict: bool) -> None:
        nonlocal skipped
        if text.startswith("@"):
            read_list(text[1:])
            return
        path = Path(text) if base is None or Path(text).is_absolute() else base / text
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(path).parts) or not f.is_file():
                    continue
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    add(Item(storable(str(f.resolve())), storable(f.stem), str(f)))
                else:
                    skipped += 1
        elif path.exists():
            add(Item(storable(str(path.resolve())), storable(path.stem), str(path)))
        elif text in SAMPLES + ("cat",):
            add(Item(f"sample:{text}", text, text))
        elif strict:
            raise LogitShiftError(f"image {text!r}: no such file, folder or sample; samples are {', '.join(SAMPLES)}")
        else:
            add(Item(storable(str(path.resolve())), storable(path.stem), str(path)))  # recorded as bad when loaded

    def read_list(name: str) -> None:
        path = Path(name)
        if not path.is_file():
            raise LogitShiftError(f"list {name!r}: no such file (expected a text file with one image a line)")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LogitShiftError(f"list {name!r}: not a readable UTF-8 text file ({type(exc).__name__})") from exc
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                add_entry(line, path.parent, strict=False)

    for spec in specs:
        add_entry(str(spec), None, strict=True)
    for name in lists:
        read_list(name)
    if not items:
        raise LogitShiftError("images: none found (expected image files, folders, @list files or sample names)")
    names = unique_names([it.key for it in items], [it.name for it in items])
    return [replace(it, name=n) for it, n in zip(items, names)], skipped


def unique_names(keys: Sequence[str], names: Sequence[str]) -> list[str]:
    """Display names, one per key, unique: a name shared by several paths gains its parent folders
    (``…/a/x.png``, ``…/b/x.png`` → ``a-x``, ``b-x``) until the names differ, then a counter (``x-2``).
    Unshared names are kept as they are, so outputs are named after the file wherever that is unambiguous."""
    out = list(names)
    parents = [[p for p in key.replace("\\", "/").split("/")[:-1] if p and not p.startswith("sample:")] for key in keys]
    for depth in range(1, 1 + max((len(p) for p in parents), default=0)):
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(out):
            groups.setdefault(n, []).append(i)
        clashing = [i for g in groups.values() if len(g) > 1 for i in g]
        if not clashing:
            return out
        for i in clashing:
            out[i] = "-".join([*parents[i][-depth:], names[i]])
    taken: set[str] = set()
    for i, n in enumerate(out):
        name, k = n, 1
        while name in taken:
            k += 1
            name = f"{n}-{k}"
        taken.add(name)
        out[i] = name
    return out


def load_images(specs: Sequence[str], pre: Preprocess | None = None, lists: Sequence[str] = ()) -> list[Image]:
    """Every image named by ``specs`` (as :func:`collect_images` reads them), loaded, with unique names.
    An image that cannot be read is an error that names it."""
    items, _ = collect_images(specs, lists)
    return [replace(load_image(it.spec, pre), name=it.name) for it in items]
