"""Drop-in defenses: the immune scores as pytorch-grad-cam targets and a Captum wrapper.

On a shifted model (a region shift, strong enough to steer the logit maps),
pytorch-grad-cam's ``GradCAM`` with our targets and Captum's
``LayerGradCam`` / ``Saliency`` on our wrapper reproduce the original model's
maps; the plain logit (``ClassifierOutputTarget``, Captum on the raw model)
does not. Models run in float64 so that "the same map" can be checked to
1e-6 relative.
"""

from __future__ import annotations

import pytest
import torch

from logitshift.attribution import GradCAM, Saliency
from logitshift.core.metrics import spearman
from logitshift.core.scores import score
from logitshift.core.targets import parse_target
from logitshift.defend import (
    IMMUNE_SCORES,
    TARGETS,
    CenteredLogitTarget,
    ContrastTarget,
    LogProbTarget,
    ProbTarget,
    ScoreTarget,
    ScoreWrapper,
    contrast_all,
    immune_scores,
)
from logitshift.shift.model import RegionShift, ShiftedModel

SIZE = 32


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.fixture(scope="module")
def setup():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TinyCNN

    base = TinyCNN(classes=10, width=8, seed=3).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    weights = parse_target("top-left", SIZE).weights(16, 16)
    shifted = ShiftedModel(base, "features", RegionShift(5.0, weights)).double()
    classes = base(x).argmax(1).tolist()
    return base, shifted, x, classes


def test_immune_scores_match_the_project_scores_and_ignore_any_common_shift():
    g = torch.Generator().manual_seed(1)
    for scale in (1.0, 30.0):
        z = torch.randn(4, 7, generator=g, dtype=torch.float64) * scale
        t = torch.randn(4, 1, generator=g, dtype=torch.float64) * 100
        for s in IMMUNE_SCORES:
            ours = immune_scores(z, s)
            for c in range(7):
                assert torch.allclose(ours[:, c], score(z, torch.full((4,), c), s), rtol=1e-12, atol=1e-12)
            assert torch.allclose(immune_scores(z + t, s), ours, rtol=1e-9, atol=1e-9)


def test_contrast_is_stable_when_one_class_dominates():
    z = torch.tensor([[200.0, 0.0, -5.0], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    c = contrast_all(z)
    expected0 = 200.0 - torch.logsumexp(torch.tensor([0.0, -5.0], dtype=torch.float64), 0)
    assert torch.isclose(c[0, 0], expected0)
    assert torch.isclose(c[1, 1], -torch.log(torch.tensor(2.0, dtype=torch.float64)))
    (g,) = torch.autograd.grad(c[:, 0].sum(), z)
    assert torch.isfinite(g).all()


def test_targets_accept_one_sample_or_a_batch_and_reject_non_immune_scores():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    assert torch.allclose(CenteredLogitTarget(0)(z[0]), torch.tensor(1.0))
    assert torch.allclose(CenteredLogitTarget(2)(z), torch.tensor([-1.0, 3.0]))
    assert torch.allclose(ProbTarget(1)(z), torch.softmax(z, 1)[:, 1])
    assert torch.allclose(LogProbTarget(1)(z[1]), torch.log_softmax(z[1], 0)[1])
    assert torch.allclose(ContrastTarget(2)(z[1]), 5.0 - torch.logsumexp(torch.tensor([0.0, 1.0]), 0))
    assert set(TARGETS) == set(IMMUNE_SCORES)
    with pytest.raises(ValueError, match="shift-immune"):
        ScoreTarget(0, "logit")
    with pytest.raises(ValueError, match="shift-immune"):
        ScoreWrapper(torch.nn.Identity(), "logit")


def test_defend_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, logitshift.defend; bad = [m for m in ('captum', 'pytorch_grad_cam', 'matplotlib', 'cv2') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pytorch_grad_cam_with_immune_targets_reproduces_the_original_maps(setup):
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    base, shifted, x, classes = setup

    def run(model, layer, targets):
        with PGCGradCAM(model=model, target_layers=[layer]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=targets)).double()

    for s, cls in TARGETS.items():
        original = run(base, base.features, [cls(c) for c in classes])
        steered = run(shifted, shifted.base.features, [cls(c) for c in classes])
        assert original.abs().sum() > 0
        assert rel(steered, original) <= 1e-6, s
    # the probability target is pytorch-grad-cam's own softmax target
    ours = run(base, base.features, [ProbTarget(c) for c in classes])
    theirs = run(base, base.features, [ClassifierOutputSoftmaxTarget(c) for c in classes])
    assert rel(ours, theirs) <= 1e-9
    # the plain logit target is steered
    logit_original = run(base, base.features, [ClassifierOutputTarget(c) for c in classes])
    logit_steered = run(shifted, shifted.base.features, [ClassifierOutputTarget(c) for c in classes])
    assert rel(logit_steered, logit_original) > 0.1
    assert float(spearman(logit_steered, logit_original).min()) < 0.9


def test_captum_with_the_score_wrapper_reproduces_the_original_maps(setup):
    from captum.attr import LayerGradCam
    from captum.attr import Saliency as CaptumSaliency

    base, shifted, x, classes = setup
    target = torch.tensor(classes)
    for s in IMMUNE_SCORES:
        cam_orig = LayerGradCam(ScoreWrapper(base, s), base.features).attribute(x, target=target, relu_attributions=True)
        cam_shift = LayerGradCam(ScoreWrapper(shifted, s), shifted.base.features).attribute(x, target=target, relu_attributions=True)
        assert cam_orig.abs().sum() > 0
        assert rel(cam_shift, cam_orig) <= 1e-6, s
        # and it is the project's own Grad-CAM of that score (Captum keeps a channel axis of 1)
        ours = GradCAM().maps(base, x, target, score=s, layer="features")
        assert rel(cam_orig[:, 0], ours) <= 1e-9, s
        sal_orig = CaptumSaliency(ScoreWrapper(base, s)).attribute(x, target=target, abs=True)
        sal_shift = CaptumSaliency(ScoreWrapper(shifted, s)).attribute(x, target=target, abs=True)
        assert rel(sal_shift, sal_orig) <= 1e-6, s
        assert rel(sal_orig.amax(dim=1), Saliency().maps(base, x, target, score=s)) <= 1e-9, s
    # the raw model (logit) is steered, in both methods
    cam_orig = LayerGradCam(base, base.features).attribute(x, target=target, relu_attributions=True)
    cam_shift = LayerGradCam(shifted, shifted.base.features).attribute(x, target=target, relu_attributions=True)
    assert rel(cam_shift, cam_orig) > 0.1
    sal_orig = CaptumSaliency(base).attribute(x, target=target)
    sal_shift = CaptumSaliency(shifted).attribute(x, target=target)
    assert rel(sal_shift, sal_orig) > 0.1
