"""The batch engine shares work across scores and variants and still computes every map exactly.

Oracle: each method's own per-score computation (``method.maps(model, x,
target, score, variant)``, one score and one variant at a time; itself
checked against Captum and pytorch-grad-cam in ``test_attribution.py``).
Claim: every map of :func:`logitshift.attribution.engine.explain` equals it within
1e-5 relative (max-abs difference over the map's max-abs), for every method ×
score × variant, over random small CNNs, shifts and strengths (hypothesis).
And the sharing is real: the number of forward passes and vector-Jacobian
products is counted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.attribution import (  # noqa: E402
    METHODS,
    engine,  # noqa: E402
    get_method,
)
from logitshift.attribution.engine import BASIS, basis_vector, explain, n_products, score_factor  # noqa: E402
from logitshift.core.scores import SCORES, score  # noqa: E402
from logitshift.shift.model import INPUT, GateShift, InputShift, PaperShift, ShiftedModel  # noqa: E402

SIZE = 16
CHEAP = {"ig": {"steps": 5, "batch_size": 4}, "smoothgrad": {"samples": 4, "batch_size": 3}}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def shifted_model(seed: int, kind: str, strength: float, head_dtype=None) -> ShiftedModel:
    base = TinyCNN(10, 6, seed=seed)
    grid = torch.zeros(8, 8)
    grid[:3, :3] = 1.0
    pixels = torch.zeros(SIZE, SIZE)
    pixels[:5, :5] = 1.0
    terms = {
        "paper": {"features": PaperShift(strength)},
        "gate": {"features": GateShift(strength, grid, channels=2)},
        "input": {INPUT: InputShift(strength, pixels)},
        "both": {"features": GateShift(strength, grid, channels=2), INPUT: InputShift(strength, pixels)},
    }[kind]
    return ShiftedModel(base, terms, head_dtype=head_dtype).eval()


@pytest.mark.parametrize("name", SCORES)
def test_each_score_is_a_factor_times_a_basis_product(name):
    """``∂score/∂z = f · basis`` (the identity the sharing rests on), against autograd, on random logits."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g, dtype=torch.float64) * 3
    c = torch.randint(0, 10, (64,), generator=g)
    zz = z.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(score(zz, c, name).sum(), zz)
    got = score_factor(z, c, name)[:, None] * basis_vector(z, c, BASIS[name])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.explicit, Phase.generate])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["paper", "gate", "input", "both"]),
    strength=st.floats(0.05, 5.0),
    n=st.integers(1, 2),
    extra=st.booleans(),
)
def test_engine_equals_per_score_maps(seed, kind, strength, n, extra):
    """Every method × score × variant (× an extra class) through the engine: within 1e-5 relative of the per-score map.

    Float64 models: in float32 the per-score computation of a shifted model's immune score is itself off by its
    rounding (its logit gradient sums to ~1e-7 instead of 0, times a large ∂t); see the float32 tests below.
    """
    shifted = shifted_model(seed % 97, kind, strength).double()
    x = torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    methods = [get_method(m, **CHEAP.get(m, {})) for m in METHODS]
    classes = [seed % 10] if extra else []
    out = explain(shifted, x, "features", methods, SCORES, classes=classes)
    assert len(out.maps) == len(METHODS) * len(SCORES) * 2 * (1 + len(classes))
    for (slot, name, sc, variant), got in out.maps.items():
        m = next(m for m in methods if m.name == name)
        want = m.maps(shifted, x, out.targets[slot], sc, variant, "features" if m.family == "cam" else None)
        assert relative(got, want) <= 1e-5, (name, sc, variant, relative(got, want))


def test_engine_equals_per_score_float64_head():
    """The same with the shift added in float64 (logits float64, gradients float32)."""
    shifted = shifted_model(3, "both", 2.0, torch.float64)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    methods = [get_method(m, **CHEAP.get(m, {})) for m in ("saliency", "ig", "smoothgrad")]
    out = explain(shifted, x, None, methods, SCORES)
    for (slot, name, sc, variant), got in out.maps.items():
        m = next(m for m in methods if m.name == name)
        assert relative(got, m.maps(shifted, x, out.targets[slot], sc, variant)) <= 1e-5, (name, sc, variant)


def test_engine_equals_per_score_lite0(lite0, samples):
    """Float32, the real model and a photo: saliency and IG × every score within 1e-5 relative of the per-score map."""
    methods = [get_method("saliency"), get_method("ig", steps=2)]
    x = samples[:1]
    out = explain(lite0.module, x, None, methods, SCORES)
    for (slot, name, sc, variant), got in out.maps.items():
        m = next(m for m in methods if m.name == name)
        assert relative(got, m.maps(lite0.module, x, out.targets[slot], sc, variant)) <= 1e-5, (name, sc)


def test_raw_attributions_equal_attribute():
    """``explain(..., raw=True)`` keeps each input method's raw N×C×H×W attribution, equal to ``attribute``."""
    shifted = shifted_model(5, "input", 1.0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    methods = [get_method(m, **CHEAP.get(m, {})) for m in ("saliency", "gradxinput", "ig", "smoothgrad")]
    out = explain(shifted, x, None, methods, ["logit", "contrast"], raw=True)
    assert set(out.raw) == set(out.maps)
    for (slot, name, sc, variant), got in out.raw.items():
        m = next(m for m in methods if m.name == name)
        assert got.shape == x.shape
        assert relative(got, m.attribute(shifted, x, out.targets[slot], sc, variant)) <= 1e-5


def test_every_chunk_is_one_forward_and_three_products_per_variant(monkeypatch):
    """Integrated Gradients and SmoothGrad: one forward per chunk of points serves all 5 scores × 2 variants,
    followed by 3 vector-Jacobian products per variant (not 10 forwards and 10 backwards)."""
    shifted = shifted_model(7, "both", 1.0)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    forwards, products = [], []
    real_forward, real_grad = engine.forward_pass, torch.autograd.grad

    def count_forward(model, xs, *a, **k):
        forwards.append(xs.shape[0])
        return real_forward(model, xs, *a, **k)

    def count_grad(*a, **k):
        products.append(1)
        return real_grad(*a, **k)

    monkeypatch.setattr(engine, "forward_pass", count_forward)
    monkeypatch.setattr(engine.torch.autograd, "grad", count_grad)
    ig = get_method("ig", steps=6, batch_size=9)  # 18 rows: 2 chunks
    sg = get_method("smoothgrad", samples=4, batch_size=12)  # 12 rows: 1 chunk
    explain(shifted, x, None, [ig, sg], SCORES)
    assert forwards == [3, 9, 9, 12]  # the batch (top-1), then one per chunk
    per_chunk = n_products([engine.Request(0, s, v) for s in SCORES for v in ("original", "shifted")])
    assert per_chunk == 6
    assert len(products) == 3 * per_chunk


def test_progress_counts_every_pass(capsys):
    """The bar's total is the number of passes the engine runs, and it reaches it."""
    shifted = shifted_model(9, "both", 1.0)
    x = torch.randn(2, 3, SIZE, SIZE)
    methods = [get_method(m, **CHEAP.get(m, {})) for m in METHODS]
    explain(shifted, x, "features", methods, ["logit", "prob"], progress=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    done, total = re.search(r"(\d+)/(\d+)", last).groups()  # off a terminal the bar is one line per stage: "maps: 23/23 pass in …"
    assert done == total and int(total) > 10, last
