"""The HTML report: rendered from run folders, opened in a real headless Chromium.

The browser tests drive Debian's ``chromium`` over the DevTools protocol
(``tests/chromium.py``, standard library only). Each checks that the page
raises no console error and makes no network request (besides loading the
file itself), counts what it should show, exercises the inline scripts
(sort, zoom, filter) and saves screenshots under ``test-artifacts/report/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from chromium import Chromium, available
from PIL import Image, ImageDraw

from logitshift.cli import main
from logitshift.core.errors import LogitShiftError
from logitshift.report import choose_level, load_run, parse_markdown_tables, write_report
from logitshift.runs.records import (
    AuditRecord,
    BadImage,
    DemoRecord,
    DemoRow,
    EvalFiles,
    EvaluateRecord,
    ImageCounts,
    MatrixCell,
    MatrixRecord,
    Sample,
    evaluate_finding,
    matrix_finding,
    summarize,
)
from logitshift.runs.store import FIELDS, Store

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "report"
#: CI sets LOGITSHIFT_REQUIRE_BROWSER=1 so that a missing chromium fails the browser tests instead of skipping them.
REQUIRE_BROWSER = os.environ.get("LOGITSHIFT_REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(not available() and not REQUIRE_BROWSER, reason="chromium is not installed (apt-get install chromium)")


# ----------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A real ``logitshift demo --report`` run: one image, its predicted class and "maze" (two panels)."""
    out = tmp_path_factory.mktemp("report") / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--images",
        "chelsea",
        "--class",
        "maze",
        "--construction",
        "region",
        "--goal",
        "0",
        "--no-progress",
        "--report",
    ]
    assert main(argv) == 0  # the region construction (the default before the gate): the page's numbers as they were pinned
    return out


def picture(path: Path, size=(720, 760), seed: int = 0, text: str = "") -> Path:
    """A photo-like test figure (noise over a gradient), cheap to make."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3)) * rng.uniform(0.3, 1.0, 3)
    arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if text:
        ImageDraw.Draw(im).text((10, 10), text, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


METHODS = ["gradcam", "gradcampp", "saliency"]
SCORES = ["logit", "prob", "centered"]


def matrix_run(root: Path) -> Path:
    """A folder as ``logitshift matrix`` writes it: matrix.json (rows with verdicts) and matrix.png (its own figure code)."""
    import torch

    from logitshift.runs.matrix import figure

    out = root / "matrix"
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    maps = {(m, s, v): torch.rand(1, 7, 7, generator=g) for m in METHODS for s in SCORES for v in ("original", "shifted")}
    rgb = np.asarray(Image.open(picture(root / "photo.png", (64, 64))))
    figure(out / "matrix.png", rgb, maps, METHODS, SCORES, 64, np.zeros((64, 64)))
    rows = []
    for i, m in enumerate(METHODS):
        for s in SCORES:
            verdict = "fooled" if s == "logit" else "unchanged"
            if (m, s) == ("saliency", "centered"):
                verdict = "changed"  # one surprise
            rows.append(
                MatrixCell(
                    method=m,
                    family="cam",
                    score=s,
                    target_mass_original=0.05,
                    target_mass_shifted=0.9 - 0.1 * i if s == "logit" else 0.05 + 0.01 * i,
                    spearman_min=0.1 if s == "logit" else 0.999,
                    verdict=verdict,
                    expected="fooled" if s == "logit" else "unchanged",
                    as_expected=verdict == ("fooled" if s == "logit" else "unchanged"),
                )
            )
    rec = MatrixRecord(
        command_line="logitshift matrix --methods " + " ".join(METHODS),
        model="efficientnet-lite0",
        layer="head",
        target="top-left",
        construction="gate (feature map)",
        strength={"cam": 1.0},
        images=["chelsea"],
        methods=METHODS,
        scores=SCORES,
        max_abs_prob_diff=1e-8,
        top1_agree=True,
        rows=rows,
        figure="matrix.png",
        seconds=3.0,
    )
    rec.finding = matrix_finding(rec)
    rec.write(out)
    return out


def audit_run(root: Path, verdict: str = "shifted") -> Path:
    out = root / f"audit-{verdict}"
    out.mkdir(parents=True)
    picture(out / "audit.png", (800, 620), seed=5)
    evidence = [
        {
            "layer": name,
            "shape": [8, 4, 4],
            "kappa": [k, k * 0.9],
            "common_norm": [0.1, 0.2],
            "class_norm": [1.0, 1.1],
            "disagreement": [0.2, 0.3],
            "cells": [[1.0] * 4] * 4,
            "kappa_max": k,
            "disagreement_max": 0.3,
        }
        for name, k in (("input", 0.4), ("features.0", 12.0), ("features.2", 30.0))
    ]
    AuditRecord(
        model="shifted.pt2",
        verdict=verdict,
        finding=verdict,
        sentence=f"{verdict}: κ 30.0 above 4 at features.2",
        score=30.0,
        threshold=4.0,
        where="features.2",
        classes=10,
        images=["chelsea", "coffee"],
        evidence=evidence,
        seconds=1.5,
    ).write(out)
    return out


def evaluate_run(root: Path) -> Path:
    out = root / "evaluate"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        for m in ("gradcam", "saliency"):
            for sc in ("logit", "prob"):
                for variant in ("original", "shifted"):
                    row = {f: None for f in FIELDS}
                    row.update(image=f"/data/im{i}.png", name=f"im{i}", **{"class": 1}, is_top1=1, method=m, score=sc, variant=variant)
                    row.update(
                        target_mass=float(rng.uniform()),
                        spearman_vs_original=float(rng.uniform()),
                        max_abs_prob_diff=1e-7,
                        prob=0.5,
                        top1=1,
                    )
                    rows.append(row)
    with Store(out / "results.sqlite") as st:  # the real results store of logitshift evaluate
        st.set_meta("config", {"model": "efficientnet-lite0", "methods": ["gradcam", "saliency"]})
        st.commit_batch(
            rows,
            done=[(f"/data/im{i}.png", f"im{i}") for i in range(20)],
            bad=[("/data/broken.jpg", "broken", "cannot identify image file")],
        )
    plots = [
        picture(out / "plots" / f"{n}.png", (640, 420), seed=k).relative_to(out).as_posix()
        for k, n in enumerate(("target_mass", "spearman", "max_abs_prob_diff"))
    ]
    samples = [
        Sample(
            method=m,
            image=f"/data/im{i}.png",
            name=f"im{i}",
            class_=1,
            why=f"{why} logit target mass",
            value=0.5,
            figure=f"samples/{m}_{i}.png",
        )
        for m in ("gradcam", "saliency")
        for i, why in ((0, "largest"), (7, "smallest"))
    ]
    for k, smp in enumerate(samples):
        picture(out / smp.figure, (300, 300), seed=10 + k)
    rec = EvaluateRecord(
        model="efficientnet-lite0",
        methods=["gradcam", "saliency"],
        scores=["logit", "prob"],
        images=ImageCounts(listed=21, evaluated=20, bad=1),
        rows=len(rows),
        bad_images=[BadImage(image="/data/broken.jpg", name="broken", reason="cannot identify image file")],
        table=summarize(rows),
        samples=samples,
        files=EvalFiles(plots=plots),
    )
    rec.finding = evaluate_finding(rec)
    rec.write(out)
    return out


# ----------------------------------------------------------------------------- browser helpers


@pytest.fixture(scope="module")
def browser():
    if not available():
        if REQUIRE_BROWSER:
            pytest.fail("LOGITSHIFT_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Chromium() as b:
        yield b


def open_clean(browser: Chromium, html: Path, name: str):
    """Open ``html``; assert no console error and no network request; save screenshots."""
    page = browser.open(html.resolve().as_uri())
    page.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))", await_promise=True)
    assert page.errors == [], page.errors
    assert page.requests == [], page.requests
    broken = page.evaluate("Array.from(document.images).filter(i => i.getAttribute('src') && !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0
    page.screenshot(ARTIFACTS / f"{name}.png")
    page.screenshot(ARTIFACTS / f"{name}-full.png", full_page=True)
    return page


def first_paragraph_states_the_finding(page, sentence: str) -> None:
    """The page's first paragraph is the record's finding: one sentence that carries numbers."""
    first = page.evaluate("document.querySelector('p').innerText").strip()
    assert first == sentence.strip()
    assert re.search(r"\d", first), first
    assert page.evaluate("document.querySelector('p').id") == "finding"


def static_checks(html_text: str) -> None:
    """No reference that could leave the file: every src is a data: URI, no url(), no link/@import."""
    assert 'http-equiv="Content-Security-Policy"' in html_text
    srcs = re.findall(r'\ssrc="([^"]*)"', html_text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"<link\b|@import|url\(", html_text)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html_text)


# ----------------------------------------------------------------------------- tests


@pytest.mark.slow
@needs_browser
def test_demo_report_in_browser(demo_run, browser):
    summary = json.loads((demo_run / "summary.json").read_text())
    rows = summary["results"]
    assert len(rows) == 2
    out = demo_run / "report.html"  # written by --report
    text = out.read_text()
    static_checks(text)
    page = open_clean(browser, out, "demo")

    # what the page shows: one 2×2 panel per (image, class), one equivalence row each, no missing-note
    assert page.evaluate("document.querySelectorAll('.panel').length") == len(rows)
    assert page.evaluate("document.querySelectorAll('.panel img.zoom').length") == len(rows)
    assert page.evaluate("document.querySelectorAll('#equivalence tbody tr').length") == len(rows)
    assert page.evaluate("document.querySelectorAll('.panel table.numbers tbody tr').length") == 2 * len(rows)
    assert page.evaluate("document.getElementById('missing')") is None
    header = page.evaluate("document.querySelector('header').innerText")
    for word in ("efficientnet-lite0", "head", "region", "torch", summary["versions"]["torch"], "Cite as"):
        assert word in header
    assert "top-1 agreement" in page.evaluate("document.getElementById('equivalence').innerText").lower()
    first_paragraph_states_the_finding(page, summary["finding"])
    assert page.evaluate("document.querySelectorAll('#panels .colourbar').length") == 1
    assert "dashed outline" in page.evaluate("document.querySelector('#panels .legend-list').innerText")

    # sort: the max |Δprob| column, twice (ascending then descending)
    col = page.evaluate("Array.from(document.querySelectorAll('#equivalence thead th')).findIndex(t => t.textContent.trim() === 'p')")
    assert col >= 0
    values = []
    for _ in range(2):
        page.evaluate(f"document.querySelectorAll('#equivalence thead th')[{col}].click()")
        values.append(
            page.evaluate(f"Array.from(document.querySelectorAll('#equivalence tbody tr')).map(r => parseFloat(r.cells[{col}].dataset.v))")
        )
    assert values[0] == sorted(values[0]) and values[1] == sorted(values[1], reverse=True)
    assert sorted(values[0]) == sorted(r["prob"] for r in rows)

    # zoom: a click opens the figure in the lightbox, Escape closes it
    assert page.evaluate("document.getElementById('lightbox').hidden") is True
    page.evaluate("document.querySelector('.panel img.zoom').click()")
    assert page.evaluate(
        "!document.getElementById('lightbox').hidden && document.querySelector('#lightbox img').src === document.querySelector('.panel img.zoom').src"
    )
    assert page.evaluate("document.querySelector('#lightbox img').getBoundingClientRect().width") > page.evaluate(
        "document.querySelector('.panel img.zoom').getBoundingClientRect().width"
    )
    page.screenshot(ARTIFACTS / "demo-zoom.png")
    page.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert page.evaluate("document.getElementById('lightbox').hidden") is True

    # filter: "maze" keeps the one panel of that class
    page.evaluate("const f = document.getElementById('panel-filter'); f.value = 'maze'; f.dispatchEvent(new Event('input'))")
    assert page.evaluate("document.querySelectorAll('.panel:not(.hidden)').length") == 1

    # printable: the print CSS hides the navigation, and a PDF comes out
    page.browser.send("Emulation.setEmulatedMedia", {"media": "print"}, page.session)
    assert page.evaluate("getComputedStyle(document.querySelector('nav.toc')).display") == "none"
    page.browser.send("Emulation.setEmulatedMedia", {"media": ""}, page.session)
    assert page.pdf(ARTIFACTS / "demo.pdf").read_bytes()[:5] == b"%PDF-"


@needs_browser
def test_matrix_audit_evaluate_in_browser(tmp_path, browser):
    m = write_report(matrix_run(tmp_path))
    static_checks(m.read_text())
    page = open_clean(browser, m, "matrix")
    assert page.evaluate("document.querySelectorAll('table.matrix tbody tr').length") == len(METHODS)
    assert page.evaluate("document.querySelectorAll('table.matrix thead th').length") == len(SCORES) + 2  # method, original, scores
    # thumbnails cut from matrix.png: the original map and one per score, for every method
    assert page.evaluate("document.querySelectorAll('table.matrix td.cell img').length") == len(METHODS) * (len(SCORES) + 1)
    sizes = page.evaluate("Array.from(document.querySelectorAll('table.matrix td.cell img')).map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(abs(w - h) <= 3 and w > 40 for w, h in sizes)  # square map panels, not slices of titles
    verdicts = page.evaluate(
        "Array.from(document.querySelectorAll('table.matrix td.cell:not(.ref) .s')).map(c => c.textContent.split(' · ')[1])"
    )
    assert verdicts.count("fooled") == len(METHODS) and verdicts.count("changed") == 1
    assert "8 of 9 cells as expected" in page.evaluate("document.getElementById('matrix').innerText")
    assert page.evaluate("document.querySelectorAll('table.matrix .surprise').length") == 1
    assert "logitshift matrix --methods" in page.evaluate("document.querySelector('header').innerText")
    # sort the methods by the logit column: masses ascending
    page.evaluate("document.querySelectorAll('table.matrix thead th')[2].click()")
    masses = page.evaluate("Array.from(document.querySelectorAll('table.matrix tbody tr')).map(r => parseFloat(r.cells[2].dataset.v))")
    assert masses == sorted(masses) and len(set(masses)) == len(METHODS)
    # the figure grid is shown as the table's thumbnails only, not repeated as a large image (issue 18), nor under "Other figures"
    assert page.evaluate("document.querySelectorAll('#matrix .gallery img').length") == 0
    assert page.evaluate("document.getElementById('figures')") is None
    # no nested scroll box around the matrix table
    assert page.evaluate("getComputedStyle(document.querySelector('table.matrix').parentElement).overflowY") == "visible"
    first_paragraph_states_the_finding(
        page, matrix_finding(MatrixRecord.from_json(json.loads((tmp_path / "matrix" / "matrix.json").read_text())))
    )

    a = write_report(audit_run(tmp_path))
    page = open_clean(browser, a, "audit")
    verdict = page.evaluate("document.querySelector('.verdict').innerText")
    assert "SHIFTED" in verdict.upper() and "30" in verdict
    assert page.evaluate("document.querySelector('.verdict').classList.contains('shifted')")
    assert page.evaluate("document.querySelectorAll('#audit table')[0].tBodies[0].rows.length") == 3  # one per layer
    assert page.evaluate("document.querySelectorAll('#audit table')[1].tBodies[0].rows.length") == 2  # one per image
    assert page.evaluate("document.querySelectorAll('#audit img.zoom').length") == 1
    first_paragraph_states_the_finding(page, "shifted: κ 30.0 above 4 at features.2")

    e = write_report(evaluate_run(tmp_path))
    page = open_clean(browser, e, "evaluate")
    text = page.evaluate("document.getElementById('evaluation').innerText")
    assert "broken.jpg" in text and "cannot identify image file" in text
    assert page.evaluate("document.querySelectorAll('#evaluation .gallery img.zoom').length") == 3
    # the store's means per (method, score, model): 2 × 2 × 2 groups of 20 rows
    store_rows = page.evaluate("Array.from(document.querySelectorAll('#evaluation table')).map(t => t.tBodies[0].rows.length)")
    assert 8 in store_rows
    record = EvaluateRecord.from_json(json.loads((tmp_path / "evaluate" / "summary.json").read_text()))
    first_paragraph_states_the_finding(page, record.finding)
    # heatmaps: at least one per method, decoded
    for m in record.methods:
        assert page.evaluate(f"document.querySelectorAll('#samples .gallery[data-method=\"{m}\"] img').length") >= 1
    assert page.evaluate("document.querySelectorAll('#samples .colourbar').length") >= 1


@pytest.mark.slow
@needs_browser
def test_incomplete_folder_shows_a_visible_note(demo_run, tmp_path, browser):
    # an interrupted demo: figures written, summary.json never written, one write cut short
    run = tmp_path / "interrupted"
    shutil.copytree(demo_run, run)
    (run / "summary.json").unlink()
    (run / "report.html").unlink(missing_ok=True)
    (run / ".coffee_967.png.abc.tmp.png").write_bytes(b"\x89PNG half")
    page = open_clean(browser, write_report(run), "incomplete")
    assert page.evaluate("document.getElementById('missing').getBoundingClientRect().height") > 0
    note = page.evaluate("document.getElementById('missing').innerText")
    assert "summary.json is missing" in note and "interrupted write" in note
    assert page.evaluate("document.getElementById('missing').getBoundingClientRect().top") < 900  # on the first screen
    assert page.evaluate("document.querySelectorAll('#figures img.zoom').length") == 2  # the figures that are there


def test_interrupted_evaluation_reports_its_store(tmp_path):
    run = evaluate_run(tmp_path)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "plots")
    text = write_report(run).read_text()
    note = re.search(r'<div class="note warn" id="missing".*?</div>', text, re.S).group(0)
    assert "summary.json is missing" in note
    evaluation = text[text.index('<section id="evaluation">') :]
    assert 'images done</div><div class="v">20<' in evaluation and "broken.jpg" in evaluation
    header = text[: text.index("</header>")]
    assert "evaluate (incomplete)" in header and "efficientnet-lite0" in header  # from the store's recorded configuration
    assert "--resume" in note
    assert evaluation.count("<tr>") >= 8  # the means per method × score × variant


@pytest.mark.slow
def test_missing_and_truncated_pieces_are_named(demo_run, tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(demo_run, run)
    summary = json.loads((run / "summary.json").read_text())
    gone = summary["results"][1]["figure"]
    (run / gone).unlink()
    cut = summary["results"][0]["figure"]
    (run / cut).write_bytes((run / cut).read_bytes()[:200])  # truncated PNG
    summary["images"].append("rocket")  # listed but never reached
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text()
    note = re.search(r'<div class="note warn" id="missing".*?</div>', text, re.S).group(0)
    assert gone in note and cut in note and "rocket" in note
    assert text.count('class="panel"') == 2  # both rows still shown, with placeholders
    assert f"figure {gone} is missing" in text and f"figure {cut} could not be read" in text

    (run / "summary.json").write_text(json.dumps(summary)[:100])  # interrupted while writing the JSON
    text = write_report(run).read_text()
    assert "summary.json is not valid JSON" in text


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no logitshift run" in capsys.readouterr().err
    with pytest.raises(LogitShiftError, match="is a folder"):
        write_report(audit_run(tmp_path), out=tmp_path)


def test_cli_writes_the_page(tmp_path, capsys):
    run = audit_run(tmp_path, "clean")
    assert main(["report", str(run), "--out", str(tmp_path / "a.html")]) == 0
    assert "a.html" in capsys.readouterr().out
    text = (tmp_path / "a.html").read_text()
    static_checks(text)
    assert 'class="verdict clean"' in text and 'id="missing"' not in text


def test_size_budget_downscales(tmp_path):
    run = tmp_path / "many"
    rows = []
    for i in range(10):
        picture(run / f"im{i}_1.png", (360, 380), seed=i)
        rows.append(DemoRow(image=f"im{i}", class_=1, figure=f"im{i}_1.png", max_abs_prob_diff=1e-7, top1_agree=True))
    DemoRecord(results=rows, tolerance=1e-5).write(run)
    images = load_run(run).images
    assert choose_level(images, 1e12) == (1000, 85)
    big = write_report(run, tmp_path / "big.html", max_mb=100).stat().st_size
    budget = big / 4
    assert choose_level(images, budget)[0] < 360  # must downscale to fit
    tight = write_report(run, tmp_path / "tight.html", max_mb=budget / 1e6)
    text = tight.read_text()
    assert tight.stat().st_size < budget + 60_000  # the figures' budget, plus the page's text and scripts
    assert text.count("data:image/") == 10  # every figure still there, each embedded once


def test_a_summary_that_does_not_match_its_record_is_named(tmp_path):
    """A shape no command writes (here the old guessed ``{method: {score: cell}}``) is not guessed at: a note names the key."""
    out = tmp_path / "m"
    picture(out / "gradcam_logit.png", (40, 40))
    (out / "matrix.json").write_text(json.dumps({"command": "matrix", "rows": {"gradcam": {"logit": {"target_mass": 0.7}}}}))
    text = write_report(out).read_text()
    note = re.search(r'<div class="note warn" id="missing".*?</div>', text, re.S).group(0)
    assert "matrix.json: key &#x27;rows&#x27;: expected a list" in note
    assert text.count("data:image/") == 1  # the figure that is there is still shown


def test_markdown_tables():
    md = "# t\n\n| method | logit | prob |\n|---|:--:|---|\n| gradcam | 0.8 | 0.05 |\n| saliency | 0.7 | 0.04 |\n\ntext\n"
    (t,) = parse_markdown_tables(md)
    assert t == [{"method": "gradcam", "logit": "0.8", "prob": "0.05"}, {"method": "saliency", "logit": "0.7", "prob": "0.04"}]


def test_figures_outside_the_run_folder_are_not_embedded(tmp_path):
    secret = picture(tmp_path / "secret.png", (64, 64))
    run = tmp_path / "run"
    run.mkdir()
    (run / "link.png").symlink_to(secret)
    DemoRecord(results=[DemoRow(image="a", class_=1, figure="../secret.png"), DemoRow(image="b", class_=2, figure="link.png")]).write(run)
    text = write_report(run).read_text()
    assert "data:image/" not in text
    assert text.count("lies outside the run folder") == 2
    assert "2 figure reference(s) point outside the run folder" in text


@needs_browser
def test_a_real_audit_report_shows_each_test_and_where_the_shift_acts(tmp_path, browser):
    """``logitshift audit --report`` on an exported shifted model: the page a reviewer opens."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TinyCNN

    from logitshift.shift.model import PaperShift, ShiftedModel

    path = tmp_path / "shifted.pt2"
    model = ShiftedModel(TinyCNN(10, 8, 2), "features", PaperShift(1e-3))
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(path))
    out = tmp_path / "audit"
    assert main(["audit", str(path), "--size", "32", "--images", "chelsea", "coffee", "--out", str(out), "--report", "--no-progress"]) == 1
    page = open_clean(browser, out / "report.html", "audit-real")
    assert "SHIFTED" in page.evaluate("document.querySelector('.verdict').innerText").upper()
    tests = page.evaluate(
        "Array.from(document.querySelectorAll('#audit table')[0].tBodies[0].rows).map(r => [r.cells[0].innerText, r.cells[4].innerText])"
    )
    assert [t[0] for t in tests] == ["kappa", "bypass", "head", "feature", "effect", "immune"]
    roles = page.evaluate("Array.from(document.querySelectorAll('#audit table')[0].tBodies[0].rows).map(r => r.cells[5].innerText)")
    assert roles == ["evidence only", "decides", "decides", "decides", "decides", "evidence only"]  # no --strict
    assert dict(tests)["bypass"] == "yes" and dict(tests)["head"] == "no" and dict(tests)["feature"] == "no"
    layers = page.evaluate("document.querySelectorAll('#audit table')[1].tBodies[0].rows.length")
    assert layers == 5  # the input and four layers
    assert page.evaluate("document.querySelectorAll('#audit img.zoom').length") == 1


@pytest.mark.slow
@needs_browser
def test_a_real_evaluate_page_opens_with_its_finding_and_shows_heatmaps_of_every_method(tmp_path, browser, capsys):
    """``logitshift evaluate --report`` on a photo: the console and the page lead with the finding; maps per method."""
    out = tmp_path / "eval"
    methods = ["gradcam", "gradxinput"]
    assert main(["evaluate", "chelsea", "--methods", *methods, "--out", str(out), "--no-progress", "--report"]) == 0
    record = EvaluateRecord.from_json(json.loads((out / "summary.json").read_text()), strict=True)  # the writer's keys are typed fields
    assert capsys.readouterr().out.splitlines()[0] == record.finding  # the console summary opens with the finding
    assert {s.method for s in record.samples} == set(methods)
    assert all((out / s.figure).is_file() for s in record.samples)
    page = open_clean(browser, out / "report.html", "evaluate-real")
    first_paragraph_states_the_finding(page, record.finding)
    for m in methods:
        decoded = page.evaluate(
            f"Array.from(document.querySelectorAll('#samples .gallery[data-method=\"{m}\"] img')).filter(i => i.naturalWidth > 0).length"
        )
        assert decoded >= 1, m


@pytest.mark.slow
def test_the_paper_constructions_page_charts_no_target_mass_for_grad_cam(tmp_path):
    """Grad-CAM averages the gradient over space: under the paper's shift its corner share means nothing and is not charted."""
    from logitshift.runs.demo import DemoConfig, run_demo

    out = tmp_path / "paper"
    summary = run_demo(DemoConfig(out=str(out), images=["chelsea"], construction="paper", classes=["maze"], figures=False, progress=False))
    text = write_report(out).read_text()
    panels = text[text.index('<section id="panels">') :]
    assert "corner share:" not in panels and "target mass:" not in panels and "mass <b>" not in panels and "corner <b>" not in panels
    assert "ρ: Spearman against the original model" in panels  # the ρ chart stays
    assert 'id="effects"' in text and "class-agnostic" in text
    first = re.search(r"<p[^>]*>(.*?)</p>", text, re.S).group(1)
    assert html_unescape(first) == summary["finding"]


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)
