"""The matrix page's thumbnails are drawn from the maps the run saved (``matrix.npz``), not cut from ``matrix.png``."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image
from test_report import METHODS, SCORES, matrix_run

from logitshift.report import write_report
from logitshift.view.tiles import load_tiles, tile


def thumbnails(html: str) -> list[np.ndarray]:
    table = html[html.index('<table class="sortable matrix"') :]
    table = table[: table.index("</table>")]
    uris = re.findall(r'<img [^>]*src="data:image/[a-z]+;base64,([^"]+)"', table)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB")) for u in uris]


def test_matrix_thumbnails_come_from_the_saved_maps_without_the_png(tmp_path):
    run = matrix_run(tmp_path)
    tiles = load_tiles(run / "matrix.npz")
    assert set(tiles.maps) == {(m, k) for m in METHODS for k in ["original", *SCORES]}
    (run / "matrix.png").unlink()  # nothing left to cut tiles from: they must come from the maps
    html = write_report(run).read_text(encoding="utf-8")
    shown = thumbnails(html)
    assert len(shown) == len(METHODS) * (len(SCORES) + 1)
    # each thumbnail (re-encoded by the page) is nearest to the tile drawn from its own map, in table order
    keys = [(m, k) for m in METHODS for k in ["original", *SCORES]]
    drawn = {key: tile(tiles, key).astype(int) for key in keys}
    for image, key in zip(shown, keys):
        assert image.shape == drawn[key].shape
        nearest = min(keys, key=lambda k: np.abs(image.astype(int) - drawn[k]).mean())
        assert nearest == key


def test_a_tile_is_the_scaled_map_over_the_image_with_the_target_edge(tmp_path):
    run = matrix_run(tmp_path)
    tiles = load_tiles(run / "matrix.npz")
    a, b = tile(tiles, (METHODS[0], "logit")), tile(tiles, (METHODS[0], "prob"))
    assert a.shape == (*tiles.rgb.shape[:2], 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # two different maps give two different tiles
