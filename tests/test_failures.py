"""Issue 11: models that return something other than N×K logits fail with one line; float16/float64 models run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.attribution import GradCAM, Saliency  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.cli import describe  # noqa: E402
from logitshift.core.errors import LogitShiftError  # noqa: E402


class Returns(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = TinyCNN(10, 8, 0)
        self.kind = kind

    def forward(self, x):
        z = self.net(x)
        return {"tuple": lambda: (z, z), "dict": lambda: {"logits": z}, "int": lambda: z.long(), "flat": lambda: z.flatten()}[self.kind]()


@pytest.mark.parametrize("kind, needle", [("int", "logits of dtype torch.int64; expected floating point"), ("flat", "expected N×C logits")])
def test_models_that_do_not_return_logits_fail_with_one_line(kind, needle):
    x = torch.randn(2, 3, 16, 16)
    model = Returns(kind).eval()
    for run in (
        lambda: GradCAM().maps(model, x, torch.tensor([0, 1]), layer="net.features"),
        lambda: audit_model(model, x, ["net.features"]),
    ):
        with pytest.raises(LogitShiftError, match=re.escape(needle)) as info:
            run()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_tuple_and_dict_outputs_are_read_as_their_logits(kind):
    """Issue 17 asks for these (HF-style dicts, (logits, aux) tuples); issue 11 first refused them."""
    x = torch.randn(2, 3, 16, 16)
    model = Returns(kind).eval()
    plain = GradCAM().maps(model.net, x, torch.tensor([0, 1]), layer="features")
    torch.testing.assert_close(GradCAM().maps(model, x, torch.tensor([0, 1]), layer="net.features"), plain)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float64_and_float16_models_get_inputs_in_their_dtype(dtype):
    model = TinyCNN(10, 8, 0).to(dtype)
    x = torch.randn(2, 3, 16, 16)  # float32, as images are loaded
    maps = GradCAM().maps(model, x, torch.tensor([0, 1]), layer="features")
    assert maps.shape[0] == 2 and bool(torch.isfinite(maps.float()).all())
    assert Saliency().maps(model, x, torch.tensor([0, 1])).shape == (2, 16, 16)


def test_unexpected_exceptions_become_one_line():
    assert describe(MemoryError()).startswith("out of memory")
    err = describe(OSError(28, "No space left on device", "/data/out/summary.json"))
    assert err == "'/data/out/summary.json': No space left on device"
    text = describe(RuntimeError("line one\nline two"))
    assert "\n" not in text and text.startswith("unexpected RuntimeError: line one line two") and "--debug" in text
