"""``logitshift audit``: clean models pass, shifted ones are flagged, bad inputs fail cleanly.

The model files are written here the way the export command and users write
them: a ``torch.export`` program (``.pt2``); TorchScript is refused. Small random
CNNs at 32 px keep every audit well under a second of compute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyCNN  # noqa: E402

from logitshift.audit.load import load_file  # noqa: E402
from logitshift.audit.measure import THRESHOLD, candidate_layers  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.cli import main  # noqa: E402
from logitshift.core.errors import LogitShiftError  # noqa: E402
from logitshift.core.targets import parse_target  # noqa: E402
from logitshift.shift.model import GateShift, InputShift, PaperShift, RegionShift, ShiftedModel  # noqa: E402  # noqa: E402

SIZE = 32


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    """The audit of a file runs here as it runs in the limited child (tests/test_safeload.py runs the real child)."""
    monkeypatch.setenv("LOGITSHIFT_SANDBOX_MEMORY", "0")


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def region_shifted(base: nn.Module, strength: float = 1.0) -> ShiftedModel:
    return ShiftedModel(base, "features", RegionShift(strength, parse_target("top-left", SIZE).weights(16, 16)))


def export(model: nn.Module, path: Path) -> Path:
    torch.export.save(torch.export.export(model, (images(1),)), str(path))
    return path


def test_honest_models_are_clean_and_shifted_ones_are_flagged_where_the_shift_acts():
    x = images()
    for seed in range(3):
        base = TinyCNN(10, 8, seed)
        clean = audit_model(base, x)
        assert clean.verdict == "clean" and clean.score < 1 and clean.kappa < THRESHOLD, (seed, clean.score)
        assert [e.layer for e in clean.evidence][0] == "input"
        shifted = audit_model(region_shifted(base), x)
        assert shifted.verdict == "shifted" and shifted.score > 10 and shifted.kappa > THRESHOLD, (seed, shifted.score)
    # a shift read at the first conv leaves the later layers' gradients alone: κ jumps only up to it
    early = audit_model(ShiftedModel(base, "features.0", PaperShift(1.0)), x)
    by_layer = {e.layer: e.kappa_max for e in early.evidence}
    assert by_layer["base.features.0"] > THRESHOLD and by_layer["input"] > THRESHOLD
    assert by_layer["base.features"] < THRESHOLD


def test_candidate_layers_name_each_feature_map_once_and_subsample():
    base = TinyCNN(10, 8, 0)
    # features.3 (the last ReLU) returns the very tensor of `features`: named once, by the container
    assert candidate_layers(base, images(1)) == ["features.0", "features.1", "features.2", "features"]
    assert candidate_layers(base, images(1), max_layers=2) == ["features.0", "features"]


def test_cli_exit_codes_and_outputs_for_exported_files(tmp_path, capsys):
    base = TinyCNN(10, 8, 1)
    clean = export(base, tmp_path / "clean.pt2")
    shifted = export(region_shifted(base), tmp_path / "shifted.pt2")
    assert main(["audit", str(clean), "--size", str(SIZE), "--images", "chelsea", "coffee", "--no-progress"]) == 0
    assert "verdict: clean" in capsys.readouterr().out
    out = tmp_path / "run"
    code = main(["audit", str(shifted), "--size", str(SIZE), "--images", "chelsea", "coffee", "--out", str(out), "--no-progress"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "verdict: shifted" in printed
    assert "goes around the classifier's input up to base.features:" in printed  # where the region shift reads
    report = json.loads((out / "audit.json").read_text())
    assert report["verdict"] == "shifted" and report["score"] > THRESHOLD
    assert report["evidence"][0]["layer"] == "input" and len(report["evidence"]) > 1
    assert (out / "audit.png").stat().st_size > 1000
    # a second run into the same folder is refused without --force
    assert main(["audit", str(shifted), "--size", str(SIZE), "--images", "chelsea", "--out", str(out), "--no-progress"]) == 2


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_files_are_refused_with_what_to_send_instead(tmp_path, capsys):
    """torch.jit.load runs code from the file (tests/test_safeload.py shows two payloads): never loaded."""
    base = TinyCNN(10, 8, 2)
    path = tmp_path / "shifted.ts"
    with torch.no_grad():
        torch.jit.trace(region_shifted(base), images(1)).save(str(path))
    with pytest.raises(LogitShiftError, match="TorchScript is not loaded"):
        load_file(path)
    assert main(["audit", str(path), "--size", str(SIZE), "--images", "chelsea", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "torch.jit.load runs code stored in the file" in err and "torch.export.save" in err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("logitshift audit: error:"), err
    return err


def test_unloadable_files_fail_with_one_line_and_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a model at all")
    assert main(["audit", str(junk)]) == 2
    assert "junk.pt2" in one_line_error(capsys)
    pickled = tmp_path / "state.pth"
    torch.save(TinyCNN(10, 4, 0).state_dict(), pickled)  # a zip, but a pickle: never loaded
    assert main(["audit", str(pickled)]) == 2
    assert "state.pth" in one_line_error(capsys)
    assert main(["audit", str(tmp_path / "missing.pt2")]) == 2
    assert "not found" in one_line_error(capsys)


def test_a_model_without_a_spatial_layer_fails_with_one_line_and_exit_2(tmp_path, capsys):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    path = export(mlp, tmp_path / "mlp.pt2")
    assert main(["audit", str(path), "--size", str(SIZE), "--images", "chelsea"]) == 2
    assert "no layer outputs a spatial feature map" in one_line_error(capsys)
    with pytest.raises(LogitShiftError, match="spatial"):
        audit_model(mlp, images())


# ----------------------------------------------------------------------------- structural tests


class LogitFunctionShifted(nn.Module):
    """``z + K·mean(z²)·1``: a shift computed from the logits themselves (so from the classifier's input)."""

    def __init__(self, base: nn.Module, k: float) -> None:
        super().__init__()
        self.base, self.k = base, k

    def forward(self, x):
        z = self.base(x).double()
        return z + self.k * z.pow(2).mean(dim=1, keepdim=True)


class SkipHead(nn.Module):
    """An honest CNN whose logits also read its first block directly: the classifier's input is no cut."""

    def __init__(self, classes: int, width: int, seed: int) -> None:
        super().__init__()
        self.body = TinyCNN(classes, width, seed)
        self.skip = nn.Linear(width, classes)
        with torch.no_grad():
            self.skip.weight.copy_(torch.randn(self.skip.weight.shape, generator=torch.Generator().manual_seed(seed)))
        self.eval()

    def forward(self, x):
        f = self.body.features
        early = f[1](f[0](x))
        return self.skip(early.mean(dim=(2, 3))) + self.body.fc(torch.flatten(self.body.pool(f[3](f[2](early))), 1))


def shift_of(kind: str, base: nn.Module, layer: str, strength: float) -> nn.Module:
    weights = parse_target("top-left", SIZE).weights(*((16, 16) if layer == "features" else (32, 32)))
    if kind == "paper":
        return ShiftedModel(base, layer, PaperShift(strength), torch.float64)
    if kind == "region":
        return ShiftedModel(base, layer, RegionShift(strength, weights), torch.float64)
    if kind == "gate":
        return ShiftedModel(base, layer, GateShift(strength, weights), torch.float64)
    return ShiftedModel(base, "input", InputShift(strength, parse_target("top-left", SIZE).mask), torch.float64)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    width=st.sampled_from([4, 8, 16]),
    classes=st.sampled_from([3, 10, 100]),
    kind=st.sampled_from(["paper", "region", "gate", "input"]),
    layer=st.sampled_from(["features", "features.1"]),
    log_strength=st.floats(-5, 1),
)
def test_bypass_is_zero_for_honest_models_and_fires_for_any_shift_before_the_classifier(seed, width, classes, kind, layer, log_strength):
    """The law behind the bypass test: an honest model's gradients all flow through the classifier's
    input, so none bypasses it (to round-off, whatever the architecture's size); a shift read before
    the classifier reaches the logits around it, however weak, and only in the common mode."""
    base = TinyCNN(classes, width, seed)
    x = images(3, seed)
    honest = audit_model(base, x)
    assert honest.head is not None and honest.head.layer == "fc"
    assert honest.bypass < 1 and honest.head.ratio() < 1
    assert max(max(e.bypass) for e in honest.evidence) < 1e-6
    shifted = audit_model(shift_of(kind, base, layer, 10.0**log_strength), x)
    assert shifted.bypass > 1, (kind, layer, log_strength, shifted.tests())
    assert shifted.verdict == "shifted"
    # the centered gradients still pull back exactly: the shift lives in the common mode only
    assert max(max(e.bypass_centered) for e in shifted.evidence) < 1e-6


def test_a_shift_read_at_a_layer_is_placed_there_by_the_bypass_test():
    base, x = TinyCNN(10, 8, 3), images()
    for layer in ("features.0", "features.1", "features"):
        result = audit_model(ShiftedModel(base, layer, PaperShift(1e-4), torch.float64), x)
        ratios = {e.layer: e.bypass_ratio() for e in result.evidence}
        assert result.verdict == "shifted" and result.where == "base." + layer, (layer, ratios)
        order = [e.layer for e in result.evidence]
        after = result.evidence[order.index("base." + layer) + 1 :]
        before = result.evidence[: order.index("base." + layer) + 1]
        assert all(e.bypass_ratio() < 1 for e in after) and all(e.bypass_ratio() > 1 for e in before), ratios


def test_a_shift_computed_from_the_logits_is_caught_by_the_head_test_not_the_bypass():
    base, x = TinyCNN(10, 8, 4), images()
    result = audit_model(LogitFunctionShifted(base, 1e-3), x)
    tests = result.tests()
    assert tests["head"]["fired"] and not tests["bypass"]["fired"] and not tests["kappa"]["fired"], tests
    assert result.verdict == "shifted" and result.where == "base.fc"
    # with one image and no method inputs there is nothing to compare it with: the head test abstains
    single = audit_model(LogitFunctionShifted(base, 1e-3), x[:1], points=())
    assert single.head.spread == [] and not single.tests()["head"]["fired"]
    # the inputs explanation methods feed the model (issue 25) give it something to compare with
    assert audit_model(LogitFunctionShifted(base, 1e-3), x[:1]).tests()["head"]["fired"]


def test_an_honest_skip_into_the_logits_is_not_a_shift():
    """Gradient that goes around the classifier's input through a class-specific path bypasses it
    for the centered gradients as much as for the common mode: no evidence of a shift."""
    for seed in range(4):
        model, x = SkipHead(10, 8, seed), images(4, seed)
        result = audit_model(model, x)
        early = [e for e in result.evidence if max(e.bypass_centered) > 1e-3]
        assert early, "the skip should make the classifier's input no cut"
        assert result.bypass < 1 and result.verdict == "clean", result.tests()


def test_a_linear_shift_of_the_classifier_input_is_an_honest_classifier_and_only_its_size_shows():
    """``z + K·(uᵀh)·1`` is the honest linear classifier ``W + K·1uᵀ``: same logits, same gradients,
    same audit; so no structural test fires, and κ does only once ``K·u`` is large against the classes."""
    import copy

    base, x = TinyCNN(10, 8, 5), images()
    u = torch.randn(8, generator=torch.Generator().manual_seed(0))

    class RowShift(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.base, self.k = base, k

        def forward(self, x):
            h = torch.flatten(self.base.pool(self.base.features(x)), 1)
            return self.base.fc(h) + self.k * (h @ u)[:, None]

    def honest_twin(k):
        twin = copy.deepcopy(base)
        with torch.no_grad():
            twin.fc.weight += k * u[None, :]
        return twin

    for k in (1e-3, 0.3):
        shifted, twin = audit_model(RowShift(k), x), audit_model(honest_twin(k), x)
        assert torch.allclose(RowShift(k)(x), honest_twin(k)(x), atol=1e-5)
        assert shifted.bypass < 1 and shifted.head.ratio() < 1
        assert shifted.verdict == twin.verdict and abs(shifted.kappa - twin.kappa) < 1e-3 * twin.kappa
    weak, strong = audit_model(RowShift(1e-3), x), audit_model(RowShift(100.0), x)
    assert weak.verdict == "clean"
    assert strong.verdict == "shifted" and strong.tests()["kappa"]["fired"] and not strong.tests()["bypass"]["fired"]


def test_an_exported_fixed_batch_model_still_gets_the_head_test(tmp_path, capsys):
    """A ``torch.export`` program takes one image at a time; the audit runs image by image with the
    same probes and merges them, so a logit-function shift is still caught across images."""
    path = export(LogitFunctionShifted(TinyCNN(10, 8, 6), 1e-3), tmp_path / "square.pt2")
    out = tmp_path / "run"
    code = main(["audit", str(path), "--size", str(SIZE), "--images", "chelsea", "coffee", "rocket", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1 and "verdict: shifted" in printed
    report = json.loads((out / "audit.json").read_text())
    assert report["tests"]["head"]["fired"] and not report["tests"]["bypass"]["fired"]
    assert len(report["points"]) == 4 and len(report["classifier"]["spread"]) == 3 + 4  # the images and the method inputs


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    classes=st.sampled_from([3, 10, 100]),
    form=st.sampled_from(["square", "exp"]),
    log_strength=st.floats(-4, 0),
)
def test_the_head_test_measures_a_shift_computed_from_the_logits(seed, classes, form, log_strength):
    """Law, against an analytic oracle: for ``t = K·mean_j f(z_j)`` the common-mode row of ``∂z'/∂h`` on
    image n is ``1ᵀW + K·f'(z_n)ᵀW``; the audit's spread is that row's spread over the images, and the
    head test fires whenever it stands above the tolerance (never the bypass test: nothing goes
    around the classifier). A curved ``f`` moves the row; how far depends on K and on how different
    the images' logits are, hence the oracle rather than a fixed strength."""
    from logitshift.audit.measure import FRACTION_FLOOR

    f, df = {
        "square": (lambda z: z.pow(2), lambda z: 2 * z),
        "exp": (lambda z: (z / 4).exp(), lambda z: (z / 4).exp() / 4),
    }[form]
    base, k, x = TinyCNN(classes, 8, seed), 10.0**log_strength, images(4, seed)

    class FromLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, x):
            z = self.base(x).double()
            return z + k * f(z).mean(dim=1, keepdim=True)

    from logitshift.audit.effect import classes_that_matter

    with torch.no_grad():
        z = base(x).double()
        keep = classes_that_matter(torch.softmax(FromLogits()(x), dim=1))  # the audit sums over the classes that matter, R
    w = base.fc.weight.detach().double()
    rows = w[keep].sum(dim=0) + int(keep.sum()) / classes * k * df(z) @ w  # Σ_R W_j + |R|·(K/C)·Σ_j f'(z_j) W_j
    oracle = float(((rows - rows.mean(dim=0)).norm(dim=1) / rows.mean(dim=0).norm()).max())
    result = audit_model(FromLogits(), x, points=())  # the oracle is over these images (issue 25 adds method inputs by default)
    tests = result.tests()
    assert abs(tests["head"]["value"] - oracle) <= 1e-3 * oracle + 1e-7, (tests["head"]["value"], oracle)
    assert not tests["bypass"]["fired"]
    if oracle > 2 * FRACTION_FLOOR:
        assert tests["head"]["fired"], (form, k, oracle, tests["head"])


def test_a_model_that_outputs_log_probabilities_is_called_shifted():
    """``log_softmax(z) = z − logsumexp(z)·1``: an input-dependent common mode, as documented."""
    model = nn.Sequential(TinyCNN(10, 8, 1), nn.LogSoftmax(dim=1)).eval()
    result = audit_model(model, images())
    assert result.verdict == "shifted" and result.tests()["head"]["fired"]


class Shift2D(nn.Module):
    """A leaf module that computes ``t`` from a flattened activation: it takes an N×w input too."""

    def forward(self, a_flat):
        return 1e-3 * a_flat[:, : a_flat.shape[1] // 8].sum(dim=1)


class AddCommon(nn.Module):
    """A leaf module that adds ``t`` to the logits: its first input is N×C, like a classifier's."""

    def forward(self, z, t):
        return z + t[:, None]


class Packaged(nn.Module):
    """A shift hidden in leaf modules whose inputs look like a classifier's (N×w and N×C tensors)."""

    def __init__(self, base: nn.Module, add_in_module: bool = True) -> None:
        super().__init__()
        self.base, self.shift, self.add = base, Shift2D(), AddCommon()
        self.add_in_module = add_in_module

    def forward(self, x):
        a = self.base.features(x)
        z = self.base.fc(torch.flatten(self.base.pool(a), 1))
        t = self.shift(torch.flatten(a, 1))
        return self.add(z, t) if self.add_in_module else z + t[:, None]


def test_a_shift_packaged_in_modules_that_look_like_a_classifier_is_still_caught():
    """The classifier's input is the last 2-D module input, before any N×C tensor, through which every
    centered gradient flows: ``AddCommon``'s input (the unshifted logits, N×C) is never taken, ``Shift2D``'s
    input carries no class gradient and is passed over, so the cut is ``fc``'s input and the bypass goes around it."""
    result = audit_model(Packaged(TinyCNN(10, 8, 7)), images())
    assert result.head.layer == "base.fc" and result.verdict == "shifted" and result.tests()["bypass"]["fired"]
    assert result.context.passed_over == ["add"]
    result = audit_model(Packaged(TinyCNN(10, 8, 7), add_in_module=False), images())
    assert result.head.layer == "base.fc" and result.verdict == "shifted" and result.tests()["bypass"]["fired"]
    honest = audit_model(TinyCNN(10, 8, 7), images())
    assert honest.head.layer == "fc" and honest.verdict == "clean"


class WithBiasTable(nn.Module):
    """A CNN with a 4-D tensor computed from a buffer alone (as Swin V2's position-bias MLP): no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyCNN(10, 8, 8)
        self.register_buffer("table", torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(0)))
        self.bias_mlp = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        bias = self.bias_mlp(self.table).mean()
        return self.body(x) + bias


def test_layers_whose_output_does_not_depend_on_the_input_are_not_audited():
    model = WithBiasTable().eval()
    layers = candidate_layers(model, images(1))
    assert "bias_mlp" not in layers and layers
    assert audit_model(model, images()).verdict == "clean"
    with pytest.raises(LogitShiftError, match="does not depend on the input"):
        audit_model(model, images(), layers=["bias_mlp"])


def test_images_come_from_folders_and_lists_evenly_spread(tmp_path, capsys):
    """Audit with images like the ones the model will be explained on: a folder (recursive), an @list."""
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / ("more" if i > 2 else "") / f"p{i}.png")
    (folder / "readme.txt").write_text("not an image")
    listed = tmp_path / "list.txt"
    listed.write_text("# two of them\nphotos/p0.png\nchelsea\n")
    path = export(region_shifted(TinyCNN(10, 8, 1)), tmp_path / "shifted.pt2")
    out = tmp_path / "run"
    assert (
        main(["audit", str(path), "--size", str(SIZE), "--images", str(folder), "--max-images", "3", "--out", str(out), "--no-progress"])
        == 1
    )
    assert "using 3 of the images" in capsys.readouterr().err
    assert json.loads((out / "audit.json").read_text())["images"] == ["p3", "p0", "p2"]  # sorted paths: more/p3, more/p4, p0, p1, p2
    assert main(["audit", str(path), "--size", str(SIZE), "--images", f"@{listed}", "--out", str(out), "--force", "--no-progress"]) == 1
    assert json.loads((out / "audit.json").read_text())["images"] == ["p0", "chelsea"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["audit", str(path), "--size", str(SIZE), "--images", str(empty)]) == 2
    assert "none found" in one_line_error(capsys)


def test_methods_restrict_the_effect_to_the_maps_the_user_explains_with(capsys):
    """`--methods`: only those families' maps count for the effect and the reported disagreement; the structural tests
    are unchanged. The honest SGD-trained digits CNN's own common mode moves its Grad-CAM++ at the first layer (the
    benchmark's Spearman −0.86), not its Grad-CAM. An unknown name is refused in one line, exit 2, before any model is
    loaded."""
    from digits import audit_images, trained

    base, x = trained("sgd", 10), audit_images(10, 8)
    every = audit_model(base, x, points=())
    only = audit_model(base, x, methods=["gradcam"], points=())
    assert {m.method for m in only.effects.methods} == {"gradcam"}
    assert every.tests()["immune"]["method"] == "gradcampp" and every.tests()["immune"]["value"] >= 0.1
    assert only.verdict == every.verdict == "clean", only.sentence()
    gradcam_immune = max(max(m.immune) for m in every.effects.methods if m.method == "gradcam")
    assert only.tests()["immune"]["value"] == gradcam_immune < 0.1
    assert only.tests()["bypass"] == every.tests()["bypass"]
    with pytest.raises(LogitShiftError, match="--methods gradcamm: the audit measures gradcam, "):
        audit_model(base, x, methods=["gradcamm"])
    assert main(["audit", "--model", "no-such-file.pt2", "--methods", "ig"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--methods ig: the audit measures" in err[0]
