"""The capture core: hooks come and go with their block, one tracer, any multi-head model.

Claims: every hook registered by :mod:`logitshift.core.capture` is gone after its
block, also when the forward pass raises; :func:`trace` names a container and
its last child as one tensor and tells input-dependent outputs from constant
ones; :func:`forward_pass` serves any model that implements the
:class:`~logitshift.core.capture.Heads` protocol (not only the shifted model), and
its captured activation is the tensor the rest of the forward pass used (the
gradient through it equals the gradient autograd gives without hooks). And the
architecture the one-flow redesign promised: one module registers hooks, and
the attribution methods do not know the shift.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.core.capture import (  # noqa: E402
    INPUT,
    Heads,
    as_logits,
    forward_pass,
    hooked,
    layer_grid,
    recorded,
    spatial_layers,
    trace,
)
from logitshift.core.errors import LogitShiftError  # noqa: E402
from logitshift.core.models import default_layer  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src" / "logitshift"


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_after_the_block_and_after_an_error():
    model = TinyCNN(seed=0)
    x = torch.randn(2, 3, 16, 16)
    with recorded(model, ["features"]) as out:
        assert hook_count(model) == 1
        model(x)
    assert hook_count(model) == 0 and out["features"].shape[0] == 2

    def boom(name, _m, _i, _o):
        raise RuntimeError(f"boom in {name}")

    with pytest.raises(RuntimeError, match="boom in features"):
        with hooked([("features", model.features)], boom):
            model(x)
    assert hook_count(model) == 0
    with pytest.raises(LogitShiftError, match="outputs tuple"):

        class Pair(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = TinyCNN(seed=1)

            def forward(self, x):
                return self.body(x)

        pair = Pair()
        pair.body.features.register_forward_hook(lambda _m, _i, o: (o, o))  # a layer that outputs a tuple
        try:
            forward_pass(pair, x, ["body.features"])
        finally:
            pair.body.features._forward_hooks.clear()
    assert hook_count(pair) == 0


def test_trace_names_one_tensor_once_and_tells_constant_outputs():
    class WithTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.register_buffer("bias_table", torch.randn(1, 4, 8, 8))
            self.table = nn.Identity()
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            a = self.body(x) + self.table(self.bias_table)
            return self.head(a.mean(dim=(2, 3)))

    model = WithTable().eval()
    seen = trace(model, torch.randn(1, 3, 8, 8))
    by_name = {o.name: o for o in seen}
    assert by_name["body"].tensor == by_name["body.1"].tensor  # the Sequential returns its last child's tensor
    assert by_name["body"].varies and not by_name["table"].varies
    assert by_name["head"].shape == (1, 3)
    assert spatial_layers(model, size=8) == ["body.0", "body.1", "body", "table"]
    assert default_layer(model, size=8) == "body"  # the outermost name of the last spatial leaf's tensor (not the constant table)
    assert layer_grid(model, "body", torch.randn(1, 3, 8, 8)) == (8, 8)


def test_trace_failure_is_one_line():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("shape mismatch\nsecond line")

    with pytest.raises(LogitShiftError) as err:
        trace(Broken(), torch.randn(1, 3, 8, 8))
    assert "\n" not in str(err.value) and "shape mismatch" in str(err.value)


class TwoHeads(nn.Module):
    """Not a ShiftedModel: a second head ``z + (sum of the layer's activation)`` read through the Heads protocol."""

    def __init__(self, base: nn.Module, layer: str):
        super().__init__()
        self.base = base
        self.layers = [layer]

    def heads(self, logits, acts):
        return {"mine": logits + acts[self.layers[0]].sum(dim=(1, 2, 3))[:, None]}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3))
def test_forward_pass_serves_any_heads_model_and_its_gradients_equal_autograd(seed, n):
    torch.manual_seed(seed)
    base = TinyCNN(seed=seed)
    model = TwoHeads(base, "features")
    assert isinstance(model, Heads)
    x = torch.randn(n, 3, 16, 16)
    p = forward_pass(model, x, ["features", INPUT], input_grad=True)
    assert set(p.logits) == {"original", "mine"}
    target = p.logits["original"].argmax(dim=1)
    g_ours = p.grad(p.x, target, "logit", "mine")
    # the same gradient without any hook: d/dx [z_c(x) + Σ A(x)]
    xr = x.clone().requires_grad_(True)
    z = base(xr) + base.features(xr).sum(dim=(1, 2, 3))[:, None]
    (g_ref,) = torch.autograd.grad(z.gather(1, target[:, None]).sum(), xr)
    assert float((g_ours - g_ref).abs().max() / g_ref.abs().max()) < 1e-5  # float32 summation order differs
    assert hook_count(model) == 0
    assert all(p.requires_grad for p in base.parameters())  # frozen only for the pass


def test_as_logits_accepts_the_usual_outputs_and_names_what_it_found():
    z = torch.randn(2, 5)
    assert as_logits(z) is z and as_logits((z, None)) is z and as_logits({"logits": z}) is z

    class Out:
        logits = z

    assert as_logits(Out()) is z
    with pytest.raises(LogitShiftError, match="a dict with keys features"):
        as_logits({"features": z})


def test_one_module_registers_hooks_and_attribution_does_not_know_the_shift():
    hookers = sorted({p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "register_forward_hook" in p.read_text()})
    assert hookers == ["core/capture.py"]
    for path in (SRC / "attribution").glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+\S*shift\b", path.read_text(), re.M), path.name
