"""Peak memory of decoding the largest image each kind of file may hold (issue 24).

For each kind (8-bit RGB JPEG and PNG, 16-bit grayscale PNG, RGBA PNG, a
palette PNG with transparency, a 32-bit float TIFF), a file at the pixel limit
(``images.MAX_PIXELS``, 8000×8000, flat content so the files are small, as a
hostile one would be) is written by one child process; then, in a fresh child
each, it is decoded two ways:

* ``load_image`` (what every command does): reduced-size decode where the
  format allows (JPEG ``draft``) and a box reduction right after decoding
  (``images._reduced``), then the conversions to RGB on the small picture;
* ``read_rgb`` without ``need``: the full-size decode and conversion, as every
  command did before (with today's conversions: float32 scaled in place; the
  old ones used float64 copies, so they took more than this column shows).

The figure is the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
after the decode minus its peak before it (the interpreter with numpy, torch,
PIL and logitshift imported), and the ``tracemalloc`` peak of the numpy/Python
allocations during the decode (PIL's own image memory is not seen by
tracemalloc, the RSS figure includes it).

    python benchmarks/decode_memory.py      # writes benchmarks/results/decode_memory.md
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "decode_memory.md"
SIDE = 8000  # 8000² = 64 000 000 pixels: images.MAX_PIXELS

MAKE = """
import sys
import numpy as np
from PIL import Image
kind, path, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "jpeg-rgb":
    Image.new("RGB", (side, side), (120, 80, 200)).save(path, quality=90)
elif kind == "png-rgb":
    Image.new("RGB", (side, side), (120, 80, 200)).save(path)
elif kind == "png-16bit":
    Image.fromarray(np.full((side, side), 40000, dtype=np.uint16)).save(path)
elif kind == "png-rgba":
    Image.new("RGBA", (side, side), (120, 80, 200, 128)).save(path)
elif kind == "png-palette":
    im = Image.new("P", (side, side), 1)
    im.putpalette([0, 0, 0, 120, 80, 200] + [0] * 762)
    im.save(path, transparency=0)
elif kind == "tiff-float":
    Image.new("F", (side, side), 0.5).save(path, compression="tiff_deflate")
"""

DECODE = """
import json, resource, sys, time, tracemalloc
import numpy, torch, PIL.Image
from logitshift.core.images import load_image, read_rgb
from logitshift.core.models import Preprocess
how, path = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
start = time.perf_counter()
if how == "load_image":
    shape = list(load_image(path, Preprocess()).rgb.shape)
else:
    shape = list(read_rgb(path).shape)
seconds = time.perf_counter() - start
_, traced = tracemalloc.get_traced_memory()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_mib": (after - before) / 1024, "traced_mib": traced / 2**20, "seconds": seconds, "shape": shape}))
"""

KINDS = {
    "jpeg-rgb": ".jpg",
    "png-rgb": ".png",
    "png-16bit": ".png",
    "png-rgba": ".png",
    "png-palette": ".png",
    "tiff-float": ".tif",
}


def measure(how: str, path: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", DECODE, how, str(path)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1][:120]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decode-memory.") as tmp:
        for kind, suffix in KINDS.items():
            path = Path(tmp) / f"{kind}{suffix}"
            subprocess.run([sys.executable, "-c", MAKE, kind, str(path), str(SIDE)], check=True, timeout=600)
            rows.append((kind, path.stat().st_size, measure("load_image", path), measure("read_rgb", path)))
            path.unlink()
            print(kind, rows[-1][1:], file=sys.stderr)

    def cell(m: dict, key: str) -> str:
        return m["error"] if "error" in m else f"{m[key]:.0f}"

    worst = max((r[2]["rss_mib"] for r in rows if "rss_mib" in r[2]), default=0.0)
    lines = [
        "# Peak memory of decoding the largest accepted image, by kind (issue 24)",
        "",
        f"Decoding a {SIDE}×{SIDE} picture (the 64-megapixel limit) costs at most **{worst:.0f} MiB** above the interpreter "
        "through `load_image` (reduced-size decode and an early box reduction), for any of the kinds below; the full-size "
        "decode (`read_rgb` without `need`, as commands did before, with today's leaner conversions) is in the last columns.",
        "",
        "| kind | file size (KB) | load_image: peak RSS added (MiB) | tracemalloc peak (MiB) | s | full decode: peak RSS added (MiB) | tracemalloc peak (MiB) | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, size, ours, full in rows:
        lines.append(
            f"| {kind} | {size / 1000:.0f} | {cell(ours, 'rss_mib')} | {cell(ours, 'traced_mib')} | {cell(ours, 'seconds')} "
            f"| {cell(full, 'rss_mib')} | {cell(full, 'traced_mib')} | {cell(full, 'seconds')} |"
        )
    lines += [
        "",
        "Peak RSS added: the decoding child's `ru_maxrss` after the decode minus before it (numpy, torch, PIL and logitshift "
        "already imported). tracemalloc: the peak of Python/numpy allocations during the decode (PIL's image buffers are not "
        "traced). Each decode in a fresh process; the files are flat colour, so they are small, as a hostile file would be.",
        "",
        f"Measured with `python benchmarks/decode_memory.py` on {platform.machine()}, Python {platform.python_version()}, "
        f"2 shared CPU cores; {time.perf_counter() - start:.0f} s in all.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
