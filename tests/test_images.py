"""Issue 7: every kind of image a user may point the tool at."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from logitshift.core.errors import LogitShiftError
from logitshift.core.images import MAX_ASPECT, SAMPLES, load_image, read_rgb, resize_crop
from logitshift.core.models import Preprocess

PRE = Preprocess(size=32, resize=32)


def _save(tmp_path, name, im, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def _gradient(w=40, h=30):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    return np.stack([x, x[::-1], np.full_like(x, 128)], axis=-1)


@pytest.mark.parametrize(
    "mode,ext",
    [("L", "png"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg"), ("LA", "png"), ("1", "png"), ("RGB", "jpg")],
)
def test_modes_become_rgb(tmp_path, mode, ext):
    im = PILImage.fromarray(_gradient()).convert(mode)
    image = load_image(_save(tmp_path, f"im.{ext}", im), PRE)
    assert image.rgb.shape == (32, 32, 3) and image.rgb.dtype == np.uint8
    assert tuple(image.tensor.shape) == (3, 32, 32)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent black
    rgb = read_rgb(_save(tmp_path, "t.png", PILImage.fromarray(rgba, "RGBA")))
    assert (rgb == 255).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _save(tmp_path, "deep.png", PILImage.fromarray(ramp))
    rgb = read_rgb(path)
    assert rgb.min() == 0 and rgb.max() == 255
    assert len(np.unique(rgb[..., 0])) > 200  # a ramp, not a binary image


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)  # wide
    arr[:, :5] = 255
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = _save(tmp_path, "rot.jpg", PILImage.fromarray(arr), exif=exif)
    assert read_rgb(path).shape[:2] == (30, 10)  # tall once honoured


def test_small_images_are_upsampled(tmp_path):
    path = _save(tmp_path, "tiny.png", PILImage.fromarray(_gradient(5, 4)))
    assert load_image(path, Preprocess()).rgb.shape == (224, 224, 3)


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"this is not a png", "not a readable image"),
        ("trunc.jpg", None, "not a readable image"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path, name, content, needle):
    if content is None:
        buf = io.BytesIO()
        PILImage.fromarray(_gradient(200, 200)).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LogitShiftError, match=rf"image '.*{name}': {needle}"):
        load_image(path, PRE)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, "big.png", PILImage.new("RGB", (200, 200)))
    with pytest.raises(LogitShiftError, match="exceeds the limit of 10,000"):
        load_image(path, PRE, max_pixels=10_000)
    assert load_image(path, PRE, max_pixels=40_000).rgb.shape == (32, 32, 3)


def test_unknown_sample_names_the_samples():
    with pytest.raises(LogitShiftError, match="samples are chelsea"):
        load_image("chelsa", PRE)
    assert "chelsea" in SAMPLES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), ext=st.sampled_from(["png", "jpg", "gif", "bmp", "tif"]))
def test_fuzz_loader_loads_or_refuses_cleanly(tmp_path, data, ext):
    path = tmp_path / f"fuzz.{ext}"
    path.write_bytes(data)
    try:
        image = load_image(path, PRE)
    except LogitShiftError as exc:
        assert "\n" not in str(exc) and "fuzz" in str(exc)
    else:
        assert image.rgb.shape == (32, 32, 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    w=st.integers(1, 64),
    h=st.integers(1, 64),
    mode=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "CMYK", "LA", "1", "I", "F"]),
    ext=st.sampled_from(["png", "tif", "jpg", "bmp", "gif"]),
)
def test_fuzz_valid_images_of_any_mode_and_size(tmp_path, w, h, mode, ext):
    rng = np.random.default_rng(w * 100 + h)
    im = PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"img.{ext}"
    try:
        im.save(path)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode: nothing to load
    if max(w, h) > MAX_ASPECT * min(w, h):
        with pytest.raises(LogitShiftError, match="side ratio"):
            load_image(path, PRE)
        return
    image = load_image(path, PRE)
    assert image.rgb.shape == (32, 32, 3) and image.rgb.dtype == np.uint8


def test_a_thin_strip_is_refused_from_its_header(tmp_path):
    """A 1×60000 PNG (about 200 bytes): one line naming it, before decoding."""
    path = tmp_path / "strip.png"
    PILImage.new("RGB", (60000, 1), (200, 10, 10)).save(path)
    with pytest.raises(LogitShiftError, match=r"strip.png.*60000×1 pixels, a side ratio over 50:1"):
        load_image(path, PRE)


def test_resizing_computes_only_the_crop_in_bounded_memory():
    """resize_crop on a 1×60000 strip and a 60000×4 column (the old resize-then-crop needed 11.8 GB for the
    strip), in a child whose address space may grow by at most 1 GB after imports: peak RSS growth reported."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import resource, numpy as np
        from logitshift.core.images import resize_crop
        from logitshift.core.models import Preprocess
        from logitshift.audit.sandbox import _vm_size
        resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + (1 << 30), resource.RLIM_INFINITY))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for shape in [(1, 60000, 3), (60000, 4, 3), (3000, 3000, 3)]:
            out = resize_crop(np.full(shape, 128, np.uint8), Preprocess())
            assert out.shape == (224, 224, 3) and int(out.min()) == int(out.max()) == 128, (shape, out.shape)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = int(run.stdout.strip())
    print(f"peak RSS growth while resizing: {growth / 2**20:.0f} MiB")
    assert growth < 1e9


def test_crop_first_matches_resize_then_crop():
    """The crop computed from the source equals the old full resize then crop (to ±1 grey level on a real photo)."""
    from logitshift.core.images import sample_array

    rgb = sample_array("chelsea")
    pre = Preprocess()
    h, w = rgb.shape[:2]
    scale = pre.resize / min(h, w)
    nh, nw = round(h * scale), round(w * scale)
    full = np.asarray(PILImage.fromarray(rgb).resize((nw, nh), PILImage.BILINEAR)).astype(int)
    top, left = (nh - pre.size) // 2, (nw - pre.size) // 2
    old = full[top : top + pre.size, left : left + pre.size]
    assert np.abs(resize_crop(rgb, pre).astype(int) - old).max() <= 1


# ----------------------------------------------------------------------------- issue 24: bounded decoding


@pytest.mark.parametrize("kind", ["jpeg", "png16", "rgba", "palette", "float"])
def test_a_large_picture_is_decoded_small_and_looks_the_same(tmp_path, kind):
    """A picture 4·resize or more on its shorter side is decoded at reduced size (JPEG draft) or box-reduced at
    once; the crop the model sees differs from the full-size decode's by a few levels at most (16-bit range kept)."""
    from PIL import Image as PILImage

    from logitshift.core.images import _reduced, read_rgb, resize_crop
    from logitshift.core.models import Preprocess

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.random((12, 16)), np.ones((100, 100)))  # 1200×1600, blocks of 100 px
    path = tmp_path / f"big.{'jpg' if kind == 'jpeg' else 'tif' if kind == 'float' else 'png'}"
    if kind == "jpeg":
        PILImage.fromarray((np.stack([smooth] * 3, -1) * 255).astype(np.uint8)).save(path, quality=95)
    elif kind == "png16":
        PILImage.fromarray((smooth * 65535).astype(np.uint16)).save(path)
    elif kind == "rgba":
        PILImage.fromarray((np.stack([smooth] * 4, -1) * 255).astype(np.uint8), "RGBA").save(path)
    elif kind == "palette":
        PILImage.fromarray((smooth * 255).astype(np.uint8)).convert("P").save(path, transparency=0)
    else:
        PILImage.fromarray(smooth.astype(np.float32), "F").save(path)
    pre = Preprocess(size=64, resize=64)
    with PILImage.open(path) as im:
        im.load()
        assert _reduced(im, pre.resize).size[1] < im.size[1] // 4  # reduced at once
    ours = resize_crop(read_rgb(path, need=pre.resize), pre).astype(int)
    full = resize_crop(read_rgb(path), pre).astype(int)
    assert np.abs(ours - full).mean() < 3 and np.abs(ours - full).max() < 40
