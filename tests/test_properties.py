"""Laws, checked by hypothesis over random small CNNs and random input-dependent shifts.

For every method in :data:`logitshift.attribution.METHODS` (whatever it
holds when the test runs) and every shift-immune score, the map of the
shifted model equals the original model's (≤ 1e-5 relative, float64 models);
under the logit every input method's map changes, and so does the gradient
every CAM consumes at a layer at or before the one the shift reads (Grad-CAM's
map always; a cell-local CAM's ReLU-ed map can hide a one-cell shift).

Shifts: every construction of :mod:`logitshift.shift.model` present (``paper``,
``region``, and ``GateShift`` / the input-space ``InputShift`` when they
exist) and a nonlinear hand-made term, at a random layer and strength.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.attribution import METHODS, get_method  # noqa: E402
from logitshift.core.scores import IMMUNE  # noqa: E402
from logitshift.defend import ScoreWrapper, immune_scores  # noqa: E402
from logitshift.shift import model as shift_mod  # noqa: E402
from logitshift.shift.model import INPUT, PaperShift, RegionShift, ShiftedModel  # noqa: E402

SIZE = 16
LAYERS = ("features.0", "features.1", "features.2", "features.3")  # in execution order; all spatial
GRIDS = {"features.0": 16, "features.1": 16, "features.2": 8, "features.3": 8}
CHEAP = {"ig": {"steps": 8}, "smoothgrad": {"samples": 6}}  # fewer steps; the law holds for any number


class HandShift(nn.Module):
    """A nonlinear term written outside the project's constructions.

    ``t = K · (tanh(mean A) · ‖A‖ + softplus(Σ A[:, :, :h/2, :w/2]) · gate)``
    with ``gate = σ(10·mean A)``, so it is larger for some inputs than others.
    """

    def __init__(self, strength: float, mix: float) -> None:
        super().__init__()
        self.strength = strength
        self.mix = mix

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        mean = a.mean(dim=tuple(range(1, a.dim())))
        corner = a[..., : max(1, h // 2), : max(1, w // 2)].sum(dim=tuple(range(1, a.dim())))
        gate = torch.sigmoid(10.0 * mean)
        return self.strength * (torch.tanh(mean) * a.flatten(1).norm(dim=1) + self.mix * nn.functional.softplus(corner) * gate)


def kinds() -> list[str]:
    out = ["paper", "region", "hand", "hand-input"]
    if hasattr(shift_mod, "GateShift"):
        out.append("gate")
    if hasattr(shift_mod, "InputShift"):
        out.append("input")
    return out


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 10_000))
    width = draw(st.sampled_from([4, 6, 8]))
    classes = draw(st.sampled_from([5, 10]))
    kind = draw(st.sampled_from(kinds()))
    strength = 10 ** draw(st.floats(-1.0, 1.0))  # |t| up to ~5e3: float64 keeps the rounding of ∇t far below 1e-5
    if kind in ("input", "hand-input"):
        shift_layer = INPUT
        cam_layer = draw(st.sampled_from(LAYERS))
    else:
        shift_layer = draw(st.sampled_from(LAYERS))
        cam_layer = draw(st.sampled_from(LAYERS[: LAYERS.index(shift_layer) + 1]))
    corner = draw(st.sampled_from(["top-left", "bottom-right", "center"]))
    mix = draw(st.floats(0.1, 2.0))
    return seed, width, classes, kind, strength, shift_layer, cam_layer, corner, mix


def build(kind: str, strength: float, layer: str, corner: str, mix: float) -> nn.Module:
    from logitshift.core.targets import parse_target

    grid = SIZE if layer == INPUT else GRIDS[layer]
    weights = parse_target(corner, SIZE).weights(grid, grid)
    if kind == "paper":
        return PaperShift(strength)
    if kind == "region":
        return RegionShift(strength, weights)
    if kind == "gate":
        return shift_mod.GateShift(strength, weights)
    if kind == "input":
        return shift_mod.InputShift(strength, weights)
    return HandShift(strength, mix)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are zero, inf when only b is)."""
    a, b = a.detach().double(), b.detach().double()
    num, den = float((a - b).norm()), float(b.norm())
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


def method(name: str):
    return get_method(name, **CHEAP.get(name, {}))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_immune_scores_give_the_original_maps_and_the_logit_does_not(case):
    seed, width, classes, kind, strength, shift_layer, cam_layer, corner, mix = case
    base = TinyCNN(classes, width, seed).double()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    shifted = ShiftedModel(base, shift_layer, build(kind, strength, shift_layer, corner, mix))
    with torch.no_grad():
        z, zs = base(x), shifted(x)
    target = z.argmax(dim=1)
    # same probabilities, every logit moved by the same t(x)
    assert torch.allclose(torch.softmax(zs, 1), torch.softmax(z, 1), atol=1e-12)
    t = zs - z
    assert torch.allclose(t, t[:, :1].expand_as(t), atol=1e-9 * (1 + float(t.abs().max())))
    for s in IMMUNE:
        assert torch.allclose(immune_scores(zs, s), immune_scores(z, s), rtol=1e-9, atol=1e-9)
    # a t that is locally constant (e.g. the paper's corner cell behind ReLUs dead on both images: seed 272) moves no gradient
    xg = x.clone().requires_grad_(True)
    (grad_t,) = torch.autograd.grad((shifted(xg) - base(xg))[:, 0].sum(), xg)
    assume(float(grad_t.abs().max()) > 0)

    hidden = []  # CAMs whose logit map the shift did not move (see below)
    for name, cls in METHODS.items():
        m = method(name)
        layer = cam_layer if cls.family == "cam" else None
        for s in IMMUNE:
            original = m.maps(base, x, target, score=s, layer=layer)
            steered = m.maps(shifted, x, target, score=s, variant="shifted", layer=layer)
            assert rel(steered, original) <= 1e-5, (name, s, case)
        if cls.family == "cam" and shift_layer == INPUT:
            continue  # an input-space shift has no gradient at any layer
        original = m.maps(base, x, target, score="logit", layer=layer)
        steered = m.maps(shifted, x, target, score="logit", variant="shifted", layer=layer)
        if cls.family == "input":
            assert rel(steered, original) > 1e-3, (name, "logit", case)
        elif rel(steered, original) <= 1e-3:
            hidden.append(name)
    if shift_layer != INPUT:
        # A CAM's map is ReLU-ed: a shift whose gradient touches only cells where
        # the weighted activation stays negative (the paper's one-cell shift on a
        # pre-ReLU layer, seen by the cell-local HiResCAM/LayerCAM) can leave that
        # map unchanged. The gradient the CAMs consume always changes, and the
        # channel-pooled CAMs (Grad-CAM) always show it.
        assert "gradcam" not in hidden, case
        assert len(hidden) < len([n for n, c in METHODS.items() if c.family == "cam"]), case
        from logitshift.attribution import forward_pass

        g0 = forward_pass(base, x, [cam_layer])
        g1 = forward_pass(shifted, x, [cam_layer])
        a = g0.grad(g0.acts[cam_layer], target, "logit")
        b = g1.grad(g1.acts[cam_layer], target, "logit", "shifted")
        assert rel(b, a) > 1e-3, case


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.floats(-1e4, 1e4), st.sampled_from(IMMUNE))
def test_score_wrapper_is_shift_immune_for_any_constant_or_input_dependent_shift(seed, offset, s):
    base = TinyCNN(7, 4, seed).double()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    shifted = ShiftedModel(base, "features", HandShift(abs(offset) / 100 + 1.0, 1.0))
    with torch.no_grad():
        a = ScoreWrapper(shifted, s)(x)
        b = ScoreWrapper(base, s)(x)
        c = immune_scores(base(x) + offset, s)
    assert torch.allclose(a, b, rtol=1e-8, atol=1e-8)
    assert torch.allclose(c, b, rtol=1e-8, atol=1e-8)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.floats(0.01, 10.0), cls=st.integers(0, 9))
def test_paper_shift_adds_its_gradient_to_the_corner_cell_only(seed, k, cls):
    """The derivation behind the paper's corner: ∂t/∂A_kij = K at (0, 0), 0 elsewhere, for any model and class.

    So a per-cell map (HiResCAM, before its ReLU) gains exactly K·Σ_k A_k00 in the corner
    cell, and an averaged one (Grad-CAM) gains exactly K/HW on every channel weight.
    """
    from logitshift.attribution import forward_pass
    from logitshift.core.metrics import max_in_target

    model = TinyCNN(seed=seed % 97)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    p = forward_pass(ShiftedModel(model, "features", PaperShift(k)), x, ["features"])
    act = p.acts["features"]
    target = torch.full((2,), cls)
    g0, g1 = (p.grad(act, target, "logit", v) for v in ("original", "shifted"))
    corner = torch.zeros_like(g0)
    corner[:, :, 0, 0] = k
    assert torch.allclose(g1 - g0, corner, atol=1e-5 * k)
    a = act.detach()
    hires = (g1 * a).sum(1) - (g0 * a).sum(1)
    expected = torch.zeros_like(hires)
    expected[:, 0, 0] = k * a[:, :, 0, 0].sum(1)
    assert torch.allclose(hires, expected, atol=1e-4 * (1 + expected.abs().max()))
    h, w = a.shape[-2:]
    assert torch.allclose(g1.mean(dim=(2, 3)) - g0.mean(dim=(2, 3)), torch.full_like(g0[:, :, 0, 0], k / (h * w)), atol=1e-5 * k)
    # max_in_target: the largest cell of a map that is K·ΣA_00 in the corner and 0 elsewhere is the corner
    weights = PaperShift(k).target_weights(h, w)
    assert max_in_target(expected, weights) == [bool(v > 0) for v in expected[:, 0, 0]]
    assert max_in_target(torch.zeros(1, h, w), weights) == [False]
