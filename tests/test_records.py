"""Typed run records: what the commands write is what the report reads, field by field and type by type."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logitshift.core.parts import RecordError
from logitshift.runs.records import (
    RECORDS,
    AuditRecord,
    DemoRecord,
    DemoRow,
    EvaluateRecord,
    MapNumbers,
    MatrixCell,
    MatrixRecord,
    evaluate_finding,
    load_record,
    matrix_finding,
    read_record,
    summarize,
)
from logitshift.runs.store import FIELDS

unit = st.floats(0, 1, allow_nan=False)
rho = st.floats(-1, 1, allow_nan=False)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def demo_records(draw) -> DemoRecord:
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        maps = {
            k: MapNumbers(spearman_vs_original=draw(rho), target_mass=draw(unit))
            for k in ("original_logit", "original_prob", "shifted_logit", "shifted_prob")
        }
        rows.append(
            DemoRow(
                image=draw(text),
                class_=draw(st.integers(0, 999)),
                class_name=draw(text),
                prob=draw(unit),
                predicted=draw(st.booleans()),
                max_abs_prob_diff=draw(unit),
                top1_agree=draw(st.booleans()),
                maps=maps,
                figure=draw(st.none() | text),
            )
        )
    return DemoRecord(model=draw(text), strength=draw(unit), images=draw(st.lists(text, max_size=3)), results=rows, finding=draw(text))


@st.composite
def matrix_records(draw) -> MatrixRecord:
    methods = draw(st.lists(st.sampled_from(["gradcam", "hirescam", "saliency", "gradxinput", "ig"]), min_size=1, max_size=3, unique=True))
    scores = draw(st.lists(st.sampled_from(["logit", "prob", "centered"]), min_size=1, max_size=3, unique=True))
    cells = [
        MatrixCell(
            method=m,
            score=s,
            target_mass_original=draw(unit),
            target_mass_shifted=draw(unit),
            spearman_min=draw(rho),
            verdict=draw(st.sampled_from(["fooled", "changed", "unchanged"])),
            expected="fooled" if s == "logit" else "unchanged",
            as_expected=draw(st.booleans()),
        )
        for m in methods
        for s in scores
    ]
    return MatrixRecord(methods=methods, scores=scores, rows=cells, max_abs_prob_diff=draw(unit), top1_agree=draw(st.booleans()))


@settings(max_examples=40, deadline=None)
@given(demo_records())
def test_demo_records_round_trip_through_json(rec):
    obj = json.loads(json.dumps(rec.to_json()))
    assert isinstance(read_record(obj), DemoRecord)
    back = DemoRecord.from_json(obj, strict=True)
    assert back == rec
    assert all("class" in r and "class_" not in r for r in obj["results"])  # the JSON key is the command's, not Python's


@settings(max_examples=40, deadline=None)
@given(matrix_records())
def test_matrix_records_round_trip_and_their_finding_counts_the_cells(rec):
    assert MatrixRecord.from_json(json.loads(json.dumps(rec.to_json())), strict=True) == rec
    sentence = matrix_finding(rec)
    n_ok = sum(1 for c in rec.rows if c.as_expected)
    assert f"{n_ok} of {len(rec.rows)} cells as expected" in sentence
    assert f"max |Δp| {rec.max_abs_prob_diff:.1e}" in sentence
    logit = [c for c in rec.rows if c.score == "logit"]
    if logit:
        assert f"of {len(logit)} methods" in sentence


def test_a_wrong_type_names_the_key_and_what_was_expected():
    with pytest.raises(RecordError, match=r"summary.json: key 'results'\[0\]: key 'class': expected int, got str"):
        read_record({"command": "demo", "results": [{"class": "three"}]}, "summary.json")
    with pytest.raises(RecordError, match="key 'rows': expected a list"):
        read_record({"command": "matrix", "rows": {"gradcam": {}}})
    with pytest.raises(RecordError, match="expected one of demo, matrix, audit, evaluate"):
        read_record({"command": "paint"})
    with pytest.raises(RecordError, match="key 'command' is 'audit'; expected 'demo'"):
        DemoRecord.from_json({"command": "audit"})


def test_strict_reading_refuses_a_key_the_type_does_not_declare_and_lenient_reading_keeps_it():
    obj = {"command": "audit", "verdict": "clean", "new_statistic": [1, 2]}
    with pytest.raises(RecordError, match="'new_statistic' is not a field of AuditRecord"):
        AuditRecord.from_json(obj, strict=True)
    rec = AuditRecord.from_json(obj)
    assert rec.extra == {"new_statistic": [1, 2]} and rec.to_json()["new_statistic"] == [1, 2]


def test_non_finite_numbers_are_written_as_null(tmp_path):
    rec = AuditRecord(verdict="shifted", score=math.inf, kappa=math.nan)
    path = rec.write(tmp_path)
    assert path.name == "audit.json"
    obj = json.loads(path.read_text())
    assert obj["score"] is None and obj["kappa"] is None
    assert isinstance(load_record(path), AuditRecord)


def test_every_command_has_a_record_with_its_file():
    assert set(RECORDS) == {"demo", "matrix", "audit", "evaluate"}
    assert {c: t.FILE for c, t in RECORDS.items()} == {
        "demo": "summary.json",
        "matrix": "matrix.json",
        "audit": "audit.json",
        "evaluate": "summary.json",
    }


def test_evaluate_finding_states_probabilities_then_each_method():
    rows = []
    for i in range(5):
        for variant, mass in (("original", 0.05), ("shifted", 0.6 + 0.01 * i)):
            for score in ("logit", "prob"):
                row = dict.fromkeys(FIELDS)
                row.update(image=f"im{i}", method="gradcam", score=score, variant=variant)
                row.update(
                    target_mass=mass if score == "logit" else 0.05,
                    spearman_vs_original=1.0 if score == "prob" or variant == "original" else 0.1,
                )
                rows.append(row)
    rec = EvaluateRecord(methods=["gradcam"], scores=["logit", "prob"], table=summarize(rows))
    rec.images.evaluated = 5
    rec.equivalence.max_abs_prob_diff = 3.5e-6
    sentence = evaluate_finding(rec)
    assert sentence.startswith("Over 5 images the shifted model's probabilities equal the original's (max |Δp| 3.5e-06")
    assert "logit Grad-CAM put a mean 0.62 of its mass in the target (0.05 before" in sentence
    assert "the prob map is unchanged (min ρ 1.000)" in sentence
