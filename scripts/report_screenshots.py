"""Screenshots of the report pages of demo, matrix, audit and evaluate (docs/screenshots/), from real runs.

Runs each command on EfficientNet-Lite0 (offline weights) and scikit-image photos
into a scratch folder, writes its report, opens it in headless Chromium
(tests/chromium.py), waits until every embedded image has decoded, and saves
the first screen (1280×900 CSS px) as a PNG, downsized to keep the files small.

    PYTHONPATH=src python scripts/report_screenshots.py [--out docs/screenshots] [--work /tmp/report-shots]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium  # noqa: E402

from logitshift.cli import main  # noqa: E402
from logitshift.report import write_report  # noqa: E402

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def runs(work: Path) -> dict[str, Path]:
    """One small real run per command; returns {command: run folder}."""
    from PIL import Image
    from skimage import data

    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.jpg")
    out = {c: work / c for c in ("demo", "matrix", "audit", "evaluate")}
    q = ["--no-progress", "--force"]
    assert main(["demo", "--out", str(out["demo"]), "--images", "chelsea", "coffee", "--class", "maze", *q]) == 0
    assert main(["matrix", "--out", str(out["matrix"]), "--methods", "gradcam", "hirescam", "saliency", "gradxinput", *q]) == 0
    code = main(["audit", "efficientnet-lite0", "--images", "chelsea", "coffee", "--out", str(out["audit"]), *q])
    assert code in (0, 1)
    assert main(["evaluate", str(photos), "--out", str(out["evaluate"]), "--methods", "gradcam", "gradxinput", *q]) == 0
    for folder in out.values():
        write_report(folder)
    return out


def shoot(pages: dict[str, Path], dest: Path, width: int = 1280, height: int = 900, scale: float = 0.75) -> list[Path]:
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    shots = []
    with Chromium() as browser:
        for name, html in pages.items():
            page = browser.open(html.resolve().as_uri(), width=width, height=height)
            page.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))", await_promise=True)
            path = dest / f"{name}.png"
            page.screenshot(path)
            with Image.open(path) as im:
                small = im.convert("RGB").resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.LANCZOS)
            small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
            shots.append(path)
            page.close()
    return shots


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--work", default=None, help="scratch folder for the runs (default: a temporary folder)")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="report-shots-"))
    folders = runs(work)
    for shot in shoot({c: f / "report.html" for c, f in folders.items()}, Path(args.out)):
        print(f"{shot} ({shot.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
