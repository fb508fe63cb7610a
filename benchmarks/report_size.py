"""Size and opening time of the HTML report of a 200-image demo run, in headless Chromium.

Goal (issue 6): a report over 200 images stays under 30 MB and opens in under
5 s in Debian's ``chromium``. Measured here, printed, not a timed test.

1. Makes 200 distinct images from the scikit-image samples (random crops,
   flips, colour changes) and runs the real ``logitshift demo`` on them with
   ``--class maze`` (so every image gets two 2×2 figures: 400 figures), in
   chunks of 25 images, merged into one run folder (reused on later runs:
   ``runs/bench-report/``, git-ignored).
2. Writes two reports: the predicted class only (200 panels) and both classes
   (400 panels, which makes the size budget downscale the figures).
3. Opens each in a fresh tab of headless Chromium three times and records the
   time from navigation to the load event, to every image decoded, and the
   first contentful paint; checks no console error and no network request.

Run: ``.venv/bin/python benchmarks/report_size.py [--images 200] [--fresh]``
(writes ``benchmarks/results/report_size.json`` and ``.md``; ``--markdown-only``
re-renders the ``.md`` from the saved ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium  # noqa: E402

GOAL_MB, GOAL_S = 30.0, 5.0


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct photos derived from the default samples (crop, flip, colour)."""
    import numpy as np
    from PIL import Image, ImageEnhance

    from logitshift.core.images import DEFAULT_SAMPLES, sample_array

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(np.asarray(sample_array(name))).convert("RGB") for name in DEFAULT_SAMPLES]
    paths = []
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        s = rng.uniform(0.55, 1.0)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = im.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
        p = folder / f"img{i:03d}.png"
        out.save(p)
        paths.append(str(p))
    return paths


def make_run(run: Path, n: int, chunk: int = 25) -> dict:
    """Run the real demo on ``n`` images (+ class maze) in chunks and merge into ``run``.

    Each finished chunk's summary is kept in ``run/chunks/`` so an interrupted
    preparation continues where it stopped. The shift is added in float64
    (``--float64-head``): at 200 varied images the float32 head exceeds the
    1e-5 tolerance on a few (notes §4).
    """
    from logitshift.runs.demo import DemoConfig, run_demo

    images = make_images(run.parent / "bench-report-images", n)
    chunks = run / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    parts = []
    for k in range(0, n, chunk):
        done = chunks / f"{k:04d}.json"
        if not done.is_file():
            part = run.parent / f"bench-report-part{k}"
            s = run_demo(DemoConfig(out=str(part), images=images[k : k + chunk], classes=["maze"], float64_head=True, force=True))
            for r in s["results"]:
                shutil.move(str(part / r["figure"]), run / r["figure"])
            shutil.rmtree(part)
            done.write_text(json.dumps(s))
        parts.append(json.loads(done.read_text()))
    merged = parts[0]
    for s in parts[1:]:
        merged["images"] += s["images"]
        merged["results"] += s["results"]
        merged["max_abs_prob_diff"] = max(merged["max_abs_prob_diff"], s["max_abs_prob_diff"])
        merged["top1_agree"] = merged["top1_agree"] and s["top1_agree"]
        merged["max_abs_shift"] = max(merged["max_abs_shift"], s["max_abs_shift"])
        merged["seconds"] = round(merged["seconds"] + s["seconds"], 2)
    (run / "summary.json").write_text(json.dumps(merged, indent=1))
    return merged


def subset(full: Path, out: Path, predicate) -> Path:
    """A run folder holding only the rows of ``full`` that satisfy ``predicate`` (figures hard-linked)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    s = json.loads((full / "summary.json").read_text())
    s["results"] = [r for r in s["results"] if predicate(r)]
    for r in s["results"]:
        (out / r["figure"]).hardlink_to(full / r["figure"])
    (out / "summary.json").write_text(json.dumps(s, indent=1))
    return out


def measure_open(browser: Chromium, html: Path, repeats: int = 3) -> dict:
    loads, decoded, fcp, loadavg, errors, requests, panels = [], [], [], [], [], [], 0
    for _ in range(repeats):
        load_before = os.getloadavg()[0]
        page = browser.open(html.resolve().as_uri())
        loads.append(page.load_seconds)
        decoded.append(
            page.evaluate(
                "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0))).then(() => performance.now() / 1000)",
                await_promise=True,
            )
        )
        fcp.append(page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: NaN}).startTime / 1000"))
        loadavg.append(load_before)
        panels = page.evaluate("document.querySelectorAll('.panel').length")
        errors += page.errors
        requests += page.requests
        page.close()
    return {
        "load_event_s": round(statistics.median(loads), 3),
        "all_images_decoded_s": round(statistics.median(decoded), 3),
        "first_contentful_paint_s": round(statistics.median(fcp), 3),
        "runs": repeats,
        "machine_load_1min": round(statistics.mean(loadavg), 1),
        "panels": panels,
        "console_errors": errors,
        "network_requests": requests,
    }


def finding(data: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    goal, results = data["goal"], data["results"]
    met = sum(r["meets_size_goal"] and r["meets_open_goal"] for r in results)
    cases = ", ".join(f"{r['html_mb']} MB and {r['all_images_decoded_s']} s with {r['panels']} panels" for r in results)
    return (
        f"**Finding:** both goals (under {goal['max_mb']:g} MB, every image decoded in under {goal['max_open_s']:g} s) are met "
        f"in {met} of {len(results)} cases: {cases}, with {sum(len(r['console_errors']) for r in results)} console errors and "
        f"{sum(len(r['network_requests']) for r in results)} network requests."
    )


def markdown(data: dict) -> str:
    """The page, from the saved results (``report_size.json``)."""
    env, goal, results = data["environment"], data["goal"], data["results"]
    lines = [
        "# HTML report: size and opening time (benchmarks/report_size.py)",
        "",
        finding(data),
        "",
        f"Goal: under {goal['max_mb']:g} MB and open in under {goal['max_open_s']:g} s for 200 images. {env['chromium']}, headless, {env['cpus']} CPUs.",
        "Open time = navigation to every embedded image decoded (median of 3 fresh tabs). Machine load = 1-min load average while",
        "measuring (the machine is shared; above the CPU count the browser waits for a core and the times grow accordingly).",
        "",
        "| case | figures on disk | report | embedded at | written in | load event | all images decoded | first paint | machine load | errors / requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['figures_on_disk_mb']} MB | **{r['html_mb']} MB** | ≤{r['embedded_side_px']} px, JPEG q{r['jpeg_quality']} | {r['write_s']} s "
            f"| {r['load_event_s']} s | **{r['all_images_decoded_s']} s** | {r['first_contentful_paint_s']} s | {r['machine_load_1min']} | {len(r['console_errors'])} / {len(r['network_requests'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-report"), help="run folder (reused if it holds a run of --images images)")
    ap.add_argument("--fresh", action="store_true", help="rerun the demo even if --work holds a run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "report_size"))
    ap.add_argument("--repeats", type=int, default=3, help="fresh tabs per report (median reported)")
    ap.add_argument("--markdown-only", action="store_true", help="re-render the .md from the saved .json (no measurement)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.markdown_only:
        out.with_suffix(".md").write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        return 0

    from logitshift.report import _write

    full = Path(args.work)
    summary_path = full / "summary.json"
    if args.fresh or not summary_path.is_file() or len(json.loads(summary_path.read_text())["images"]) != args.images:
        if args.fresh and full.exists():
            shutil.rmtree(full)
        t = time.perf_counter()
        make_run(full, args.images)
        print(f"demo run of {args.images} images (+ class maze): {time.perf_counter() - t:.0f} s", file=sys.stderr)

    cases = {
        f"{args.images} images, predicted class ({args.images} panels)": subset(
            full, full.parent / "bench-report-top1", lambda r: r["predicted"]
        ),
        f"{args.images} images, predicted class + maze ({2 * args.images} panels)": full,
    }
    results = []
    with Chromium() as browser:
        for label, run in cases.items():
            t = time.perf_counter()
            html, _, embed = _write(run, run / "report.html", 24.0)
            write_s = time.perf_counter() - t
            figures_mb = sum((run / r["figure"]).stat().st_size for r in json.loads((run / "summary.json").read_text())["results"]) / 1e6
            opened = measure_open(browser, html, args.repeats)
            size_mb = html.stat().st_size / 1e6
            row = {
                "case": label,
                "figures_on_disk_mb": round(figures_mb, 1),
                "html_mb": round(size_mb, 2),
                "embedded_side_px": embed.side,
                "jpeg_quality": embed.quality,
                "write_s": round(write_s, 2),
                **opened,
                "meets_size_goal": size_mb < GOAL_MB,
                "meets_open_goal": opened["all_images_decoded_s"] < GOAL_S,
            }
            results.append(row)
            print(
                f"{label}: {size_mb:.1f} MB (figures on disk {figures_mb:.0f} MB, embedded at ≤{embed.side} px q{embed.quality}), "
                f"written in {write_s:.1f} s; in Chromium: load event {opened['load_event_s']:.2f} s, all images decoded "
                f"{opened['all_images_decoded_s']:.2f} s, first paint {opened['first_contentful_paint_s']:.2f} s "
                f"(median of {opened['runs']}, 1-min load average {opened['machine_load_1min']} on {os.cpu_count()} CPUs); {opened['panels']} panels, {len(opened['console_errors'])} console errors, "
                f"{len(opened['network_requests'])} network requests"
            )
        version = browser.version.get("product")
    env = {"chromium": version, "python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count()}
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"goal": {"max_mb": GOAL_MB, "max_open_s": GOAL_S}, "environment": env, "results": results}
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(data))
    ok = all(r["meets_size_goal"] and r["meets_open_goal"] and not r["console_errors"] and not r["network_requests"] for r in results)
    print(f"goals met: {ok}  ({out.with_suffix('.md')})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
