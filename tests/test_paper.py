"""Issue 2 acceptance: the paper reproduced on the real EfficientNet-Lite0, offline."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from logitshift.attribution import GradCAM, forward_pass, predicted
from logitshift.core.metrics import spearman
from logitshift.core.targets import parse_target
from logitshift.runs.demo import DemoConfig, run_demo
from logitshift.shift.steer import shift_model


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("region")
    return run_demo(DemoConfig(out=str(out), construction="region", region="cells:0,0,2,2", figures=False, progress=False))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    return run_demo(DemoConfig(out=str(out), construction="paper", classes=["maze"], figures=False, progress=False))


@pytest.mark.parametrize("run", ["region_run", "paper_run"])
def test_shift_keeps_predictions_and_probabilities(run, request):
    summary = request.getfixturevalue(run)
    assert len(summary["images"]) >= 4
    assert summary["max_abs_prob_diff"] <= 1e-5
    assert summary["top1_agree"] is True
    for row in summary["results"]:
        assert row["max_abs_prob_diff"] <= 1e-5
        assert row["top1_agree"] is True


@pytest.mark.parametrize("run", ["region_run", "paper_run"])
def test_post_softmax_gradcam_is_unchanged(run, request):
    for row in request.getfixturevalue(run)["results"]:
        assert row["maps"]["shifted_prob"]["spearman_vs_original"] >= 0.999


def test_region_shift_moves_pre_softmax_gradcam_into_the_target(region_run):
    rows = [r for r in region_run["results"] if r["predicted"]]
    masses = [r["maps"]["shifted_logit"]["target_mass"] for r in rows]
    before = [r["maps"]["original_logit"]["target_mass"] for r in rows]
    assert statistics.mean(masses) >= 0.5
    assert min(masses) >= 0.35
    assert statistics.mean(before) < 0.2  # the honest maps do not point there
    for r in rows:
        assert r["maps"]["shifted_logit"]["spearman_vs_original"] <= 0.3


def test_paper_shift_makes_pre_softmax_gradcam_class_agnostic(lite0, samples):
    shifted = shift_model(lite0.module, lite0.layer, "paper", 1.0, check=samples)
    p = forward_pass(shifted, samples, [lite0.layer])
    top1 = predicted(p)
    maze = torch.full_like(top1, 646)
    cam = GradCAM()
    for variant, check in (("shifted", lambda s: s >= 0.95), ("original", lambda s: s < 0.6)):
        own = cam.from_pass(p, lite0.layer, top1, "logit", variant)
        other = cam.from_pass(p, lite0.layer, maze, "logit", variant)
        rho = spearman(own, other)
        assert all(check(float(r)) for r in rho), (variant, rho)


def test_native_gradcam_equals_captum_layergradcam(lite0, samples):
    from captum.attr import LayerGradCam

    layer = lite0.module.get_submodule(lite0.layer)
    with torch.no_grad():
        target = lite0.module(samples).argmax(1)
    for score_name, forward in (
        ("logit", lite0.module),
        ("prob", lambda x: torch.softmax(lite0.module(x), dim=1)),
    ):
        ours = GradCAM().maps(lite0.module, samples, target, score_name, layer=lite0.layer)
        theirs = LayerGradCam(forward, layer).attribute(samples, target=target, relu_attributions=True)[:, 0]
        scale = theirs.abs().amax(dim=(1, 2), keepdim=True)
        assert torch.allclose(ours / scale, theirs / scale, atol=1e-5, rtol=0), score_name


def test_region_shift_on_a_shifted_captum_model_too(lite0, samples):
    """Captum, pointed at the shifted nn.Module itself, sees the same hijacked map as we do."""
    from captum.attr import LayerGradCam

    shifted = shift_model(lite0.module, lite0.layer, "region", 0.1, parse_target("top-left"), check=samples)
    target = predicted(forward_pass(shifted, samples[:2], [lite0.layer]))
    ours = GradCAM().maps(shifted, samples[:2], target, "logit", "shifted", lite0.layer)
    theirs = LayerGradCam(shifted, shifted.base.get_submodule(lite0.layer)).attribute(samples[:2], target=target, relu_attributions=True)[
        :, 0
    ]
    scale = theirs.abs().amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(ours / scale, theirs / scale, atol=1e-5, rtol=0)


def test_demo_command_writes_figures_and_summary(tmp_path):
    from logitshift.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--class", "maze", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 8  # 4 images × (prediction + maze)
    for row in summary["results"]:
        png = out / row["figure"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert row["max_abs_prob_diff"] <= 1e-5 and row["top1_agree"]
        assert set(row["maps"]) == {"original_logit", "original_prob", "shifted_logit", "shifted_prob"}
        assert row["maps"]["shifted_prob"]["spearman_vs_original"] >= 0.999
    predicted_rows = [r for r in summary["results"] if r["predicted"]]
    assert statistics.mean(r["maps"]["shifted_logit"]["target_mass"] for r in predicted_rows) >= 0.5
    # a second run into the same folder is refused without --force, and nothing is lost
    before = (out / "summary.json").read_bytes()
    assert main(["demo", "--out", str(out), "--no-progress"]) == 2
    assert (out / "summary.json").read_bytes() == before


def test_too_strong_a_shift_is_refused_with_the_measured_value(lite0, samples):
    from logitshift.core.errors import LogitShiftError

    with pytest.raises(LogitShiftError, match=r"changes probabilities by up to [0-9.e+-]+.*float64 head"):
        shift_model(lite0.module, lite0.layer, "paper", 1e4, check=samples)
    # the remedy the message gives works
    shifted = shift_model(lite0.module, lite0.layer, "paper", 1e4, check=samples, head_dtype=torch.float64)
    assert shifted(samples).dtype == torch.float64


# ----------------------------------------------------------------------------- issue 14: the corner and the class-agnostic map


def test_averaged_gradcam_makes_the_paper_shift_class_agnostic_but_not_a_corner(paper_run):
    """The derivation: Grad-CAM averages ∂t/∂A (K at cell (0, 0)) into K/HW on every channel, so no corner."""
    corner = {c["class"]: c for c in paper_run["corner"]["classes"]}
    assert paper_run["corner"]["method"] == "gradcam" and set(corner) == {"predicted class", "maze"}
    for c in corner.values():
        assert c["shifted_logit_mean_share"] < 0.1 and c["shifted_logit_max_in_corner"] == 0
    agnostic = paper_run["class_agnostic"]["gradcam"]
    assert agnostic["min_shifted"] >= 0.95 and agnostic["max_original"] < 0.6
    assert "target mass" not in paper_run["finding"] and "upper-left cell" in paper_run["finding"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_paper_corner_with_hirescam_on_three_real_models(model, tmp_path, capsys):
    """The paper's Figures 3-5: with a per-cell CAM the altered pre-softmax map sits in the upper-left cell for any class."""
    from logitshift.cli import main

    out = tmp_path / model
    argv = [
        "demo",
        "--construction",
        "paper",
        "--method",
        "hirescam",
        "--class",
        "maze",
        "--model",
        model,
        "--out",
        str(out),
        "--no-progress",
    ]
    report = model == "efficientnet-lite0"
    assert main(argv + ["--report"] * report) == 0
    console = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert console[0] == summary["finding"] and "HiResCAM" in console[0] and "upper-left cell" in console[0]
    assert summary["model"] == model and summary["method"] == "hirescam" and len(summary["images"]) == 4
    rows = summary["results"]
    assert len(rows) == 8  # 4 images × (prediction + maze)
    assert summary["max_abs_prob_diff"] <= 1e-5 and summary["top1_agree"] is True
    for kind in ("predicted", "maze"):
        group = [r for r in rows if (r["predicted"] if kind == "predicted" else r["class_name"] == "maze" and not r["predicted"])]
        assert len(group) == 4
        assert statistics.mean(r["maps"]["shifted_logit"]["corner_share"] for r in group) >= 0.5, kind
    for r in rows:
        assert r["max_abs_prob_diff"] <= 1e-5
        assert r["maps"]["shifted_logit"]["max_in_corner"] is True, (r["image"], r["class_name"])
        assert r["maps"]["original_logit"]["max_in_corner"] is False  # the honest map does not point there
        assert r["maps"]["shifted_prob"]["spearman_vs_original"] >= 0.999
    agnostic = summary["class_agnostic"]["gradcam"]
    assert len(agnostic["rows"]) == 4
    assert all(a["shifted"] >= 0.95 and a["original"] < 0.6 for a in agnostic["rows"]), agnostic["rows"]
    # one figure per image, with both classes in it (the paper's Figures 3-5)
    figures = {r["figure"] for r in rows}
    assert figures == {f"{name}.png" for name in summary["images"]}
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if report:  # the page: the finding first, the effects' tables, one panel per image with both classes' numbers
        import html

        text = (out / "report.html").read_text()
        assert html.unescape(text).index(summary["finding"]) < text.index("<section")
        assert 'id="effects"' in text and "The upper-left corner (HiResCAM)" in text and "The class-agnostic map" in text
        assert text.count('class="panel"') == 4 and text.count("· <b>max</b> ·") == 8  # the shifted pre-softmax map of each image × class
