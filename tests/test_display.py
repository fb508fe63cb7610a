"""Maps for people and programs (issue 18): input-size display maps, overlays, raw-map files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from hypothesis import given, settings
from hypothesis import strategies as st

import logitshift as ls
from logitshift.core.errors import LogitShiftError
from logitshift.view.display import display_maps, load_maps, overlay, save_maps


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(2, 9), st.floats(0.5, 100.0), st.integers(0, 2**16), st.booleans())
def test_display_maps_range_shape_and_order(n, h, clip, seed, signed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, h, h, generator=g) * 10 ** torch.randint(-6, 6, (1,), generator=g).item()
    out = display_maps(maps, 16, signed=signed, clip=clip)
    assert out.shape == (n, 16, 16)
    assert float(out.min()) >= (-1 if signed else 0) and float(out.max()) <= 1
    same = display_maps(maps, h, signed=signed, clip=clip)  # no resize: monotone in the raw values (ties aside)
    raw = maps if signed else maps.clamp_min(0)
    for i in range(n):
        order = torch.argsort(raw[i].flatten())
        assert bool((same[i].flatten()[order].diff() >= -1e-6).all())
        if float(raw[i].abs().max()) > 0:
            assert float(same[i].abs().max()) == pytest.approx(1.0)


def test_percentile_clipping_keeps_a_map_with_one_hot_pixel_readable():
    m = torch.rand(1, 32, 32) * 0.1
    m[0, 0, 0] = 1000.0  # one extreme pixel, as IG and gradient×input often have
    plain = display_maps(m, clip=None)
    clipped = display_maps(m, clip=99.0)
    assert float(plain[0].median()) < 1e-3  # min-max scaling: everything else one colour
    assert float(clipped[0].median()) > 0.3
    assert float(display_maps(torch.zeros(1, 4, 4)).abs().max()) == 0.0
    with pytest.raises(LogitShiftError, match="expected N×h×w"):
        display_maps(torch.zeros(4, 4))


def test_overlay_colours_and_checks():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[0, 0] = 1.0
    out = overlay(rgb, heat, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 50  # jet: 1 is red
    assert out[4, 4, 2] > 100 and out[4, 4, 0] < 50  # jet: 0 is blue
    signed = overlay(rgb, np.full((8, 8), -1.0), signed=True, alpha=1.0)
    assert signed[0, 0, 2] > signed[0, 0, 0]  # RdBu_r: negative is blue
    with pytest.raises(LogitShiftError, match="same size"):
        overlay(rgb, np.zeros((4, 4)))


def test_saved_maps_read_back_bit_for_bit_without_logitshift(tmp_path):
    model = TinyCNN(10, 8, 1)
    x = torch.randn(2, 3, 32, 32)
    c = model(x).argmax(1)
    maps = ls.GradCAM().maps(model, x, c, layer="features")
    path = save_maps(
        tmp_path / "maps.npz",
        maps,
        image=["a/x.png", "b/x.png"],
        **{"class": c.tolist()},
        score=["logit"] * 2,
        method=["gradcam"] * 2,
        variant=["original"] * 2,
    )
    back = load_maps(path)
    assert np.array_equal(back["maps"], maps.detach().numpy()) and back["maps"].dtype == np.float32
    assert back["image"].tolist() == ["a/x.png", "b/x.png"] and back["class"].tolist() == c.tolist()
    code = (
        "import importlib.util, numpy as np; assert importlib.util.find_spec('logitshift') is None; "
        f"d = np.load({str(path)!r}, allow_pickle=False); print(sorted(d.files), d['maps'].shape)"
    )
    # -S: no site, so no .pth file puts logitshift on the path; numpy comes from site-packages alone
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p.endswith("site-packages"))},
    )
    assert done.returncode == 0, done.stderr
    assert "'class', 'image', 'maps', 'method', 'score', 'variant'" in done.stdout and "(2, 16, 16)" in done.stdout
    with pytest.raises(LogitShiftError, match="3 values of 'image' for 2 maps"):
        save_maps(
            tmp_path / "bad.npz", maps, image=["a", "b", "c"], **{"class": [0, 1]}, score=["s"] * 2, method=["m"] * 2, variant=["v"] * 2
        )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LogitShiftError, match="cannot be read"):
        load_maps(tmp_path / "junk.npz")


def test_version_flag(capsys):
    from logitshift.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"logitshift {ls.__version__}"
