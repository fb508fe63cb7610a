"""The audit examines what users explain (issue 25): every explained class, the inputs methods feed the model,
every softmax group. One regression per weakness: an attack of that weakness that fools a map, flagged by the
default audit (and, where the weakness was the audit's, passed by the audit restricted the old way)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from digits import audit_images, digits, trained  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from adaptive import LogitNorm, MaxShift, PathGated, TwoHeads, Wrapped  # noqa: E402

from logitshift.attribution import get_method  # noqa: E402
from logitshift.audit.outputs import output_groups  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.metrics import spearman  # noqa: E402


def maps(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    return get_method(method).maps(model, x, target, layer=layer)


def fooled(method: str, honest: nn.Module, shifted: nn.Module, x: torch.Tensor, target: torch.Tensor, layer=None) -> float:
    """The lowest Spearman, over the images, between the honest and the shifted model's maps of ``target``."""
    return float(spearman(maps(method, honest, x, target, layer), maps(method, shifted, x, target, layer)).min())


def second(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).topk(2, dim=1).indices[:, 1]


def test_a_smooth_logit_function_that_keeps_top1_maps_and_steers_the_others_is_flagged():
    honest = trained("sgd", 10)
    x = audit_images(10, 8)
    shifted = Wrapped(honest, LogitNorm(1.0)).eval()
    top = honest(x).argmax(1)
    # the attack: top-1 maps in place, the second class's maps steered
    assert fooled("gradcam", honest, shifted, x, top, "features") > 0.9
    assert fooled("gradcam", honest, shifted, x, second(honest, x), "features") < 0.5
    assert audit_model(honest, x).finding == "clean"
    result = audit_model(shifted, x)
    assert result.shifted
    moved = [m for m in result.effects.affected() if m.rank == 1]
    assert moved, "the second class's maps must be among those the audit finds changed"


def test_k_max_z_on_images_that_share_one_class_is_flagged_again():
    """Flagged before issue 13 (by κ), passed after it (only the top-1 maps were measured, and they only scale)."""
    honest = trained("sgd", 10)
    xs, _ = digits(10)
    with torch.no_grad():
        x = xs[honest(xs).argmax(1) == 3][-6:]  # images the model calls 3
    shifted = Wrapped(honest, MaxShift(2.0)).eval()
    assert fooled("gradcam", honest, shifted, x, second(honest, x), "features") < 0.5
    assert not audit_model(shifted, x, explain=1, points=()).shifted  # the old audit's reading: top-1 maps only
    assert audit_model(shifted, x).shifted
    assert not audit_model(honest, x).shifted


def test_a_shift_that_is_on_only_along_the_inputs_a_method_feeds_the_model_is_flagged():
    honest = trained("sgd", 10)
    xs, _ = digits(10)
    m = 0.9 * float(xs.abs().flatten(1).mean(dim=1).min())
    shifted = PathGated(honest, 1e3, m).eval()
    x = audit_images(10, 4)
    top = honest(x).argmax(1)
    with torch.no_grad():
        assert torch.equal(shifted(xs), honest(xs))  # zero on every real digit: every statistic on images is the honest model's
    assert fooled("ig", honest, shifted, x, top) < 0.5
    assert not audit_model(shifted, x, points=()).shifted
    result = audit_model(shifted, x)
    assert result.shifted and any("ig α=" in name for name in result.images)


def test_each_softmax_group_is_audited_on_its_own():
    honest = trained("sgd", 10)
    x = audit_images(10, 4)
    model = TwoHeads(honest, 10.0, dict_output=True).eval()
    with torch.no_grad():
        assert output_groups(model(x)) == ["logits", "aux"]
    honest_heads = TwoHeads(honest, 0.0, dict_output=True).eval()
    assert fooled("gradcam", honest_heads, model, x, honest(x).argmax(1), "features") < 0.5
    result = audit_model(model, x)
    assert result.shifted and {g["output"] for g in result.groups} == {"logits", "aux"}
    assert all(g["finding"] != "clean" for g in result.groups)
    assert not audit_model(honest_heads, x).shifted


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_logits_conclude_nothing(tmp_path, monkeypatch, capsys, bad):
    (tmp_path / "badmodels.py").write_text(
        "import torch\n"
        "class Bad(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3)\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        z = self.fc(self.conv(x).mean(dim=(2, 3)))\n"
        f"        return z + float('{bad}')\n"
        "def make():\n"
        "    return Bad()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from logitshift.cli import main

    code = main(["audit", "--model", "badmodels:make", "--no-progress", "--size", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "nothing concluded" in err[-1] and ("non-finite" in err[-1] or "NaN or infinite" in err[-1])
