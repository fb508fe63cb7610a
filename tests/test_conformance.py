"""``logitshift check``: twins, verdicts, adapters, exit codes and lazy imports, on a small random CNN (64 px).

Peer libraries are compared on the same model: the logit (their default) is
steered by the twin of its kind, the immune targets/wrappers give the honest
map (Spearman ≥ 0.999).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from check_fixtures import SIZE, small
from hypothesis import given, settings
from hypothesis import strategies as st

from logitshift.cli import main
from logitshift.conformance import (
    Memo,
    PresenceShift,
    RampShift,
    adapter_explainers,
    check,
    context,
    exit_code,
    twin,
)
from logitshift.conformance.cells import Cell
from logitshift.core.targets import parse_target
from logitshift.shift.model import equivalence


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    loaded = small()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    ctx, memo = context(loaded, x, "top-left", samples=4)
    return loaded, x, ctx, memo


def cells_of(setup, libraries, methods=None, targets=None):
    loaded, x, ctx, memo = setup
    ex, _ = adapter_explainers(libraries, ctx)
    ex = [e for e in ex if (methods is None or e.method in methods) and (targets is None or e.target in targets)]
    assert ex, (libraries, methods, targets)
    return check(loaded, x, ex, ctx.target, memo=memo)


# ----------------------------------------------------------------------------- constructions


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.1, 100.0), cap=st.floats(0.5, 8.0))
def test_presence_is_bounded_local_and_drops_when_the_target_is_occluded(seed, k, cap):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 32, 32, generator=g)
    w = parse_target("top-left", 32).weights(32, 32)
    term = PresenceShift(k, w, cap)
    t = term(x)
    assert ((t >= 0) & (t <= k * cap * (1 + 1e-6))).all()
    occluded = x.clone()
    occluded[..., :9, :9] = 0.0  # the whole target (2/7 of 32 = 9 px)
    assert (term(occluded) < t).all()
    elsewhere = x.clone()
    elsewhere[..., 20:, 20:] = 0.0  # far from the target: t unchanged
    assert torch.allclose(term(elsewhere), t)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.01, 1000.0))
def test_ramp_is_bounded_and_its_gradient_is_positive_on_the_target_only(seed, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64).requires_grad_(True)
    w = parse_target("top-left", 16).weights(16, 16).double()
    term = RampShift(k, w).double()
    t = term(x)
    assert ((t >= 0) & (t < 3 + 1e-9)).all()  # 0 ≤ t < C by the period
    (grad,) = torch.autograd.grad(t.sum(), x)
    assert torch.allclose(grad, k * w.expand_as(grad))


@pytest.mark.parametrize("kind", ["gradient", "cam", "perturbation", "propagation", "metric", "cam+gradient"])
def test_every_twin_keeps_probabilities(setup, kind):
    _loaded, x, ctx, memo = setup
    tw = twin(memo, kind, ctx.target, x, ctx.layer)
    eq = equivalence(tw, x)
    assert eq.max_abs_prob_diff <= 1e-5 and eq.top1_agree == 1.0
    assert tw.max_abs_prob_diff == eq.max_abs_prob_diff and tw.construction


def test_memo_returns_the_model_output_and_remembers_only_when_active(setup):
    _loaded, x, _ctx, _memo = setup
    memo = Memo(small().module)
    with torch.no_grad():
        plain = memo(x)
        assert memo.cache == {}
        with memo.active():
            a, b = memo(x), memo(x)
    assert torch.equal(a, plain) and torch.equal(b, plain) and memo.hits == 1
    with memo.active():
        assert memo(x).requires_grad  # grad mode: never cached
    assert memo.hits == 1


# ----------------------------------------------------------------------------- verdicts, peer libraries


def by(cells):
    return {(c.method, c.target): c for c in cells}


def test_builtin_gradient_methods_logit_fooled_immune_scores_immune(setup):
    cells = by(cells_of(setup, ["logitshift"], methods=["saliency", "gradxinput"]))
    for m in ("saliency", "gradxinput"):
        assert cells[m, "logit"].verdict == "fooled" and cells[m, "logit"].share >= 0.5
        for s in ("prob", "logprob", "centered", "contrast"):
            assert cells[m, s].verdict == "immune" and cells[m, s].spearman >= 0.999, (m, s)


def test_pytorch_grad_cam_targets(setup):
    cells = by(cells_of(setup, ["pytorch-grad-cam"], methods=["GradCAM", "EigenCAM"]))
    logit = cells["GradCAM", "ClassifierOutputTarget"]
    assert logit.verdict in ("fooled", "moved") and logit.spearman < 0.99
    # ReST keeps z_c: moved like the logit; FinerWeightedTarget is immune at alpha = 1 only
    assert cells["GradCAM", "ClassifierOutputReST"].spearman < 0.99
    assert cells["GradCAM", "FinerWeightedTarget(alpha=0.5)"].spearman < 0.99
    for t in ("ClassifierOutputSoftmaxTarget", "FinerWeightedTarget(alpha=1)", "CenteredLogitTarget"):
        assert cells["GradCAM", t].verdict == "immune" and cells["GradCAM", t].spearman >= 0.999, t
    # contrast cancels t exactly in real numbers; in float32 its softmax weights over the other classes sum to
    # 1 ± 2.5e-7, and this twin's ∇t is large enough for the residual to show (measured ρ 0.989 here)
    assert cells["GradCAM", "ContrastTarget"].spearman >= 0.95
    eigen = cells["EigenCAM", "ClassifierOutputTarget"]
    assert eigen.verdict == "immune" and eigen.reason.startswith("reads no score")


def test_captum_perturbation_and_propagation(setup):
    cells = by(
        cells_of(
            setup,
            ["captum"],
            methods=["Occlusion", "FeatureAblation", "DeepLift"],
            targets=["logit", "ScoreWrapper(centered)", "ScoreWrapper(prob)"],
        )
    )
    for m in ("Occlusion", "FeatureAblation", "DeepLift"):
        assert cells[m, "logit"].verdict == "fooled", (m, cells[m, "logit"])
        for t in ("ScoreWrapper(centered)", "ScoreWrapper(prob)"):
            assert cells[m, t].verdict == "immune" and cells[m, t].spearman >= 0.999, (m, t)


def test_zennit_lrp(setup):
    cells = by(cells_of(setup, ["zennit"], methods=["EpsilonPlus"]))
    assert cells["EpsilonPlus", "logit"].verdict == "fooled"
    assert cells["EpsilonPlus", "ScoreWrapper(centered)"].verdict == "immune"


def test_shap_logit_outputs_are_steered_and_probability_outputs_are_not(setup):
    cells = by(
        cells_of(
            setup,
            ["shap"],
            methods=["GradientExplainer", "DeepExplainer", "KernelExplainer", "PartitionExplainer"],
            targets=["model", "Softmax(model)", "ScoreWrapper(centered)", "f=logits", "f=probabilities"],
        )
    )
    for m, logit in (
        ("GradientExplainer", "model"),
        ("DeepExplainer", "model"),
        ("KernelExplainer", "f=logits"),
        ("PartitionExplainer", "f=logits"),
    ):
        assert cells[m, logit].verdict == "fooled" and cells[m, logit].share >= 0.5, (m, cells[m, logit])
    for key in (("GradientExplainer", "Softmax(model)"), ("GradientExplainer", "ScoreWrapper(centered)"), ("DeepExplainer", "Softmax(model)"),
                ("KernelExplainer", "f=probabilities"), ("PartitionExplainer", "f=probabilities")):  # fmt: skip
        assert cells[key].verdict == "immune" and cells[key].spearman >= 0.999, key


def test_shap_logit_link_on_probabilities_is_immune(setup):
    # shap 0.51's default linearize_link=True gives NaN (Permutation) with a logit link: the adapter turns it off
    cells = by(cells_of(setup, ["shap"], methods=["PermutationExplainer", "PartitionExplainer"], targets=["f=probabilities, link=logit"]))
    for m in ("PermutationExplainer", "PartitionExplainer"):
        c = cells[m, "f=probabilities, link=logit"]
        assert c.verdict == "immune" and c.spearman >= 0.999, (m, c)


def test_lime_image_logits_fooled_probabilities_immune(setup):
    cells = by(cells_of(setup, ["lime"]))
    assert cells["LimeImageExplainer", "classifier_fn=logits"].verdict == "fooled"
    assert cells["LimeImageExplainer", "classifier_fn=probabilities"].verdict == "immune"


def test_torchcam_class_index_is_steered_and_softmax_target_is_not(setup):
    cells = by(cells_of(setup, ["torchcam"], methods=["GradCAM", "ScoreCAM"]))
    for m in ("GradCAM", "ScoreCAM"):
        assert cells[m, "class_idx"].verdict != "immune" and cells[m, "class_idx"].spearman < 0.99, (m, cells[m, "class_idx"])
        assert cells[m, "class_idx"].share > cells[m, "class_idx"].share_honest
        assert cells[m, "targets=softmax"].verdict == "immune" and cells[m, "targets=softmax"].spearman >= 0.999, m


def test_perturbation_cams_try_the_layer_twin_too_and_say_so(setup):
    cells = by(cells_of(setup, ["pytorch-grad-cam"], methods=["ScoreCAM", "AblationCAM"], targets=["ClassifierOutputTarget"]))
    for m in ("ScoreCAM", "AblationCAM"):
        c = cells[m, "ClassifierOutputTarget"]
        if c.verdict != "fooled":  # a verdict other than fooled names every twin tried, with its share or its error
            assert "twins tried: perturbation: " in c.reason and "; cam: " in c.reason, c.reason


def test_deletion_auc_is_biased_for_the_logit_and_not_for_probabilities(setup):
    cells = by(cells_of(setup, ["deletion-insertion"]))
    d = cells["deletion AUC", "logit"]
    assert d.verdict == "fooled" and d.share == 1.0 and d.change > 1e-3
    for s in ("prob", "centered"):
        assert cells["deletion AUC", s].verdict == "immune" and cells["deletion AUC", s].change <= 1e-3


def test_exit_code_follows_the_cells():
    immune = Cell("x", "m", "t", "gradient", "immune")
    fooled = Cell("x", "m", "t", "gradient", "fooled")
    na = Cell("x", "m", "t", "gradient", "n/a", reason="does not run")
    assert exit_code([immune, na]) == 0
    assert exit_code([immune, fooled]) == 1
    with pytest.raises(Exception, match="no explainer could run"):
        exit_code([na])


# ----------------------------------------------------------------------------- command line


def run_cli(capsys, *args):
    code = main(["check", *args, "--model", "check_fixtures:small", "--images", "chelsea", "--no-progress", "--samples", "2"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_user_callable_end_to_end(capsys, tmp_path):
    code, out, err = run_cli(capsys, "check_fixtures:saliency", "--kinds", "gradient", "perturbation", "--out", str(tmp_path / "c"))
    assert code == 1, err
    # the finding first: the gradient twin fools it, the perturbation twin (whose t also has a gradient) moves it at least
    assert re.match(r"[12] of 2 cells fooled, [01] moved, 0 immune by shifted twins with max \|Δp\| ", out.splitlines()[0]), out
    assert "| user | check_fixtures:saliency | own | InputShift" in out
    record = json.loads((tmp_path / "c" / "check.json").read_text())
    verdicts = {c["kind"]: c["verdict"] for c in record["cells"]}
    assert verdicts["gradient"] == "fooled" and verdicts["perturbation"] != "immune"
    assert (tmp_path / "c" / "check.md").read_text().startswith("## logitshift check")
    code, out, err = run_cli(capsys, "check_fixtures:centered_saliency", "--kinds", "gradient", "cam")
    assert code == 0, out + err
    assert out.startswith("0 of 2 cells fooled, 0 moved, 2 immune")


def test_cli_peer_method_and_builtin(capsys):
    code, out, _ = run_cli(capsys, "pytorch-grad-cam/GradCAM@CenteredLogitTarget", "saliency@prob")
    assert code == 0 and out.count("**immune**") == 2
    code, out, _ = run_cli(capsys, "captum/Saliency@logit")
    assert code == 1 and "**fooled**" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.module:fn"], "cannot import"),
        (["check_fixtures:NOT_CALLABLE"], "expected a function"),
        (["captum/NoSuchMethod"], "no such method"),
        (["--library", "nolib"], "library 'nolib': unknown"),
        (["gradcam@banana"], "score 'banana'"),
        ([], "name at least one"),
    ],
)
def test_cli_errors_exit_2_with_one_line(capsys, args, message):
    code, _out, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "library, module, package",
    [("captum", "captum", "captum"), ("shap", "shap", "shap"), ("lime", "lime", "lime"), ("torchcam", "torchcam", "torchcam")],
)
def test_peer_libraries_are_imported_lazily_and_a_missing_one_is_named(library, module, package):
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import logitshift.runs.check, logitshift.conformance, logitshift.conformance.adapters\n"
        "from logitshift.cli import build_parser; build_parser()\n"
        "heavy = [m for m in ('captum', 'pytorch_grad_cam', 'zennit', 'quantus', 'shap', 'lime', 'torchcam') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        f"sys.modules[{module!r}] = None  # as if not installed\n"
        "from logitshift.cli import main\n"
        f"sys.exit(main(['check', '--library', {library!r}, '--model', 'check_fixtures:small', '--images', 'chelsea', '--no-progress']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == f"logitshift check: error: {module} is not installed; pip install {package} to check its methods"
