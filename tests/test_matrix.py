"""``logitshift matrix``: every (method, score) cell measured, and the outputs it writes.

Runs the command on the real EfficientNet-Lite0 with one image and few IG
steps (the gate construction needs a trained model's localised channels: on a
random CNN no channel concentrates in a corner); the default model's full
matrix is in ``docs/matrix.md``.
"""

from __future__ import annotations

import json

import pytest

from logitshift.cli import main
from logitshift.runs.matrix import markdown

METHODS = ["gradcam", "gradcampp", "hirescam", "saliency", "gradxinput", "ig"]
SCORES = ["logit", "prob", "centered"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "run"
    argv = [
        "matrix",
        "--images",
        "coffee",
        "--out",
        str(out),
        "--methods",
        *METHODS,
        "--scores",
        *SCORES,
        "--steps",
        "4",
        "--no-progress",
        "--device",
        "cpu",
    ]
    code = main(argv)
    return code, out, argv


def test_matrix_writes_table_json_and_figure(tiny_run):
    code, out, _ = tiny_run
    assert code == 0
    summary = json.loads((out / "matrix.json").read_text())
    assert {(r["method"], r["score"]) for r in summary["rows"]} == {(m, s) for m in METHODS for s in SCORES}
    table = (out / "matrix.md").read_text()
    assert "| method | logit | prob | centered |" in table
    assert all(f"| {m} |" in table for m in METHODS)
    assert (out / "matrix.png").stat().st_size > 10_000
    assert summary["max_abs_prob_diff"] <= 1e-5 and summary["top1_agree"]


def test_immune_scores_are_unchanged_and_logits_are_moved(tiny_run):
    _, out, _ = tiny_run
    rows = json.loads((out / "matrix.json").read_text())["rows"]
    for r in rows:
        if r["score"] == "logit":
            assert r["verdict"] == "fooled" and r["target_mass_original"] < 0.2, r
        else:
            assert r["verdict"] == "unchanged" and r["spearman_min"] >= 0.99, r


def test_verdicts_follow_the_numbers(tiny_run):
    _, out, _ = tiny_run
    summary = json.loads((out / "matrix.json").read_text())
    for r in summary["rows"]:
        if r["spearman_min"] >= 0.99:
            assert r["verdict"] == "unchanged"
        elif r["target_mass_shifted"] >= summary["goal"]:
            assert r["verdict"] == "fooled"
        else:
            assert r["verdict"] == "changed"
        assert r["as_expected"] == (r["verdict"] == ("fooled" if r["score"] == "logit" else "unchanged"))
    # a cell that is not as expected is listed under the table with its numbers
    bad = dict(summary, rows=[dict(summary["rows"][0], verdict="changed", as_expected=False)] + summary["rows"][1:])
    text = markdown(bad)
    assert "⚠" in text and f"{summary['rows'][0]['method']} × {summary['rows'][0]['score']}: changed" in text


def test_matrix_errors_exit_2(capsys, tiny_run):
    _, out, argv = tiny_run
    assert main(argv) == 2  # a previous run, no --force
    assert "previous run" in capsys.readouterr().err
    assert main(["matrix", "--out", str(out) + "x", "--scores", "logits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "score 'logits'" in err
