"""Tabular models: the bundled MLPs (trained here on scikit-learn's data), CSV rows, feature targets, their shift terms and twins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitshift.cli import main
from logitshift.core.errors import LogitShiftError
from logitshift.core.models import load_model
from logitshift.core.tabular import MODELS, TabularModel, accuracy, dataset, feature_target, load_rows, train
from logitshift.shift.inputs import FeaturePresence, FeatureShift
from logitshift.shift.model import equivalence
from logitshift.shift.twins import twin


@pytest.fixture(scope="module")
def wine() -> TabularModel:
    loaded = load_model("wine-mlp")
    assert isinstance(loaded, TabularModel)
    return loaded


@pytest.mark.parametrize("name", list(MODELS))
def test_bundled_models_train_deterministically_and_generalise(name):
    data = dataset(name)
    a = train(data)
    for pa, pb in zip(a.parameters(), load_model(name).module.parameters()):
        assert torch.equal(pa, pb)
    acc = accuracy(a, data)
    majority = float(np.bincount(data.y_test).max() / len(data.y_test))
    print(f"{name}: test accuracy {acc:.3f} on {len(data.y_test)} held-out rows (majority class {majority:.3f})")
    assert acc >= 0.9 > majority
    assert load_model(name).accuracy == acc


def test_csv_rows_by_header_in_any_order_equal_the_held_out_rows(wine, tmp_path):
    data = wine.data
    order = list(reversed(range(len(data.features))))
    lines = [",".join(data.features[j] for j in order)] + [",".join(repr(float(r[j])) for j in order) for r in data.x_test[:5]]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    x, names = load_rows(str(tmp_path / "rows.csv"), data)
    expected, _ = load_rows("test:5", data)
    assert torch.allclose(x, expected) and names == [f"row {i}" for i in range(1, 6)]
    (tmp_path / "bare.csv").write_text("\n".join(",".join(repr(float(v)) for v in r) for r in data.x_test[:3]))
    assert torch.allclose(load_rows(str(tmp_path / "bare.csv"), data)[0], expected[:3])


@pytest.mark.parametrize(
    "rows, target, message",
    [
        ("nope.csv", None, "no such CSV file"),
        ("test:0", None, "held-out rows"),
        ("test:x", None, "expected test:N"),
        (None, "features:banana", "'banana' is not a feature"),
        (None, "0,0,10,10", "features:NAME,NAME"),
    ],
)
def test_bad_rows_and_targets_are_one_line_errors(wine, rows, target, message):
    with pytest.raises(LogitShiftError, match=message):
        load_rows(rows, wine.data) if rows else feature_target(target, wine)


def test_feature_targets_by_name_index_and_default(wine):
    t = feature_target("features:alcohol,3", wine)
    assert t.mask.shape == (1, 13) and t.mask[0, 0] == 1 and t.mask[0, 3] == 1 and float(t.mask.sum()) == 2
    default = feature_target("top-left", wine)
    first = wine.module.hidden[0].weight.detach().norm(dim=0)
    chosen = default.mask[0].bool()
    assert int(chosen.sum()) == 2 and float(first[chosen].max()) <= float(first[~chosen].min())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.01, 1000.0))
def test_feature_shift_is_bounded_and_its_gradient_is_k_w_sign_x(seed, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.tensor([[1.0, 0, 0, 1.0, 0, 0]], dtype=torch.float64)
    term = FeatureShift(k, w).double()
    t = term(x)
    assert ((t >= 0) & (t < 1 + 1e-9)).all()
    (grad,) = torch.autograd.grad(t.sum(), x)
    assert torch.allclose(grad, k * w * torch.sign(x))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.1, 100.0))
def test_feature_presence_drops_when_a_target_feature_is_hidden_by_the_mean(seed, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 6, generator=g) + 0.5 * torch.sign(torch.randn(3, 6, generator=g))  # |x| > 0
    w = torch.tensor([0.0, 1.0, 0, 0, 0, 1.0])
    term = FeaturePresence(k, w)
    hidden = x.clone()
    hidden[:, 1] = 0.0  # the training mean
    assert (term(hidden) < term(x)).all()
    other = x.clone()
    other[:, 2] = 0.0
    assert torch.allclose(term(other), term(x))


@pytest.mark.parametrize("kind", ["gradient", "propagation", "perturbation", "metric"])
def test_tabular_twins_keep_probabilities(wine, kind):
    x, _ = load_rows("test:32", wine.data)
    tw = twin(wine.module, kind, feature_target("top-left", wine), x)
    eq = equivalence(tw, x)
    assert eq.max_abs_prob_diff <= 1e-5 and eq.top1_agree == 1.0


def test_tabular_twin_refuses_cam(wine):
    x, _ = load_rows("test:4", wine.data)
    with pytest.raises(LogitShiftError, match="no layer grid"):
        twin(wine.module, "cam", feature_target("top-left", wine), x)


def test_cli_check_on_a_tabular_model(capsys, tmp_path):
    pytest.importorskip("shap")
    args = ["check", "shap/GradientExplainer", "--model", "wine-mlp", "--rows", "test:16", "--target", "features:malic_acid,magnesium"]
    code = main([*args, "--no-progress", "--out", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("1 of 3 cells fooled, 0 moved, 2 immune"), out
    assert "| shap | GradientExplainer | model | FeatureShift" in out and out.count("**immune**") == 2
    record = json.loads((tmp_path / "c" / "check.json").read_text())
    assert record["features"][1] == "malic_acid" and record["rows"] == "test:16"
    from PIL import Image

    assert Image.open(record["figure"]).size[0] > 800  # SHAP's bar and beeswarm views, original vs shifted
