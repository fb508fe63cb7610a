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

from logitshift.attribution import get_method  # noqa: E402
from logitshift.audit.measure import output_groups  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.metrics import spearman  # noqa: E402


def maps(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    return get_method(method).maps(model, x, target, layer=layer)


def fooled(method: str, honest: nn.Module, shifted: nn.Module, x: torch.Tensor, target: torch.Tensor, layer=None) -> float:
    """The lowest Spearman, over the images, between the honest and the shifted model's maps of ``target``."""
    return float(spearman(maps(method, honest, x, target, layer), maps(method, shifted, x, target, layer)).min())


class LogitNorm(nn.Module):
    """Looks like a normalisation of the logits; adds ``K·logsumexp(βz)/β`` to every logit (a smooth function of
    them, a soft maximum): with ``q = softmax(βz)`` the top-1 gradient becomes ``g_1 + K·Σ q_j g_j ≈ (1 + K)·g_1``
    (same maps), every other class's ``g_j + K·g_1`` (steered to the top-1's)."""

    def __init__(self, k: float, beta: float = 10.0) -> None:
        super().__init__()
        self.k, self.beta = k, beta

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.k * torch.logsumexp(self.beta * z, dim=1, keepdim=True) / self.beta


class Wrapped(nn.Module):
    def __init__(self, base: nn.Module, tail: nn.Module) -> None:
        super().__init__()
        self.base, self.norm = base, tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.base(x))


class MaxShift(nn.Module):
    """``t = K·max_j z_j``: on images that share their top class, ``K·z_c``, a linear function of ``h``."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.k * z.max(dim=1, keepdim=True).values


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


class PathGated(nn.Module):
    """A region shift at ``features`` switched on only off the data: ``gate = relu(1 − mean|x| / m)²`` with ``m``
    below every digit's ``mean|x|``, so it is 0 on every real image and on along Integrated Gradients' path from
    the black (0) baseline, where ``mean|αx| = α·mean|x|``."""

    def __init__(self, base: nn.Module, k: float, m: float) -> None:
        super().__init__()
        self.base, self.k, self.m = base, k, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store = {}
        handle = self.base.features.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            z = self.base(x)
        finally:
            handle.remove()
        a = store["a"]
        gate = torch.relu(1 - x.abs().flatten(1).mean(dim=1) / self.m).pow(2)
        t = self.k * gate * a[:, :, :2, :2].flatten(1).sum(dim=1)
        return z + t[:, None]


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


class TwoHeads(nn.Module):
    """Two softmax groups on one trunk: ``(z₁ + t, z₂ − t)``. Their sum carries no common mode, so an audit of the
    outputs taken together (or of the first alone, as ``as_logits`` reads a tuple) sees nothing of ``t`` in the sum."""

    def __init__(self, base: nn.Module, k: float, dict_output: bool = False) -> None:
        super().__init__()
        self.base, self.k, self.dict_output = base, k, dict_output
        self.aux = nn.Linear(base.fc.in_features, 5)
        torch.nn.init.normal_(self.aux.weight, std=0.5, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor):
        a = self.base.features(x)
        h = torch.flatten(self.base.pool(a), 1)
        t = self.k * a[:, :, :2, :2].flatten(1).sum(dim=1, keepdim=True)
        z1, z2 = self.base.fc(h) + t, self.aux(h) - t
        return {"logits": z1, "aux": z2} if self.dict_output else (z1, z2)


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
    assert code == 2 and "nothing concluded" in err[-1] and "non-finite logits" in err[-1]
