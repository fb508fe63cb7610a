"""Attribution methods against the peer libraries, batching, the one-forward design, and errors.

Tolerance: ``max |ours − theirs| ≤ 1e-4 · max |theirs|`` for every image (a
relative error, per map, against the peer's largest value); each comparison
first checks that the peer's map is not all zeros, so it can fail.

Conventions made explicit where the peers differ from our raw maps:

* pytorch-grad-cam ReLUs every CAM, then min-max scales and upsamples it
  (``scale_cam_image``). We compare our raw map to its ``get_cam_image`` on the
  activations and gradients it captured, followed by the same ReLU
  (``np.maximum(cam, 0)`` as in its ``compute_cam_per_layer``), and, once, its
  final output to ``normalize(upsample(ours))``.
* Captum ``LayerGradCam`` is compared with ``relu_attributions=True``.
* Captum ``Saliency`` takes ``|∂s/∂x|`` by default (``abs=True``): compared to
  ``|attribute()|``; with ``abs=False`` to the signed raw attribution.
* Captum ``NoiseTunnel(Saliency)`` is compared with ``abs=False`` (SmoothGrad
  averages signed gradients) and the same seed, which makes the noise
  bit-identical (see :mod:`logitshift.attribution.smoothgrad`).
* Scores: Captum attributes whatever its ``forward_func`` returns, so it
  gets ``score(model(x), target, name)`` (an N-vector, ``target=None``);
  pytorch-grad-cam targets are callables on one sample's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitshift.attribution import (
    CAM_METHODS,
    INPUT_METHODS,
    METHODS,
    GradCAM,
    GradientXInput,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    get_method,
    normalize,
    upsample,
)
from logitshift.attribution.engine import cam_maps
from logitshift.core.errors import LogitShiftError
from logitshift.core.scores import SCORES, score
from logitshift.shift.model import RegionShift, ShiftedModel

RTOL = 1e-4
TINY_TARGETS = torch.tensor([4, 0, 3, 6])  # top-1 and lower classes, so that prob gradients do not saturate


def assert_close(ours: torch.Tensor, theirs, rtol: float = RTOL) -> None:
    """Per image: max |ours − theirs| ≤ rtol · max |theirs|, and theirs is not all zeros."""
    theirs = torch.as_tensor(np.asarray(theirs) if not isinstance(theirs, torch.Tensor) else theirs).to(ours.dtype)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = theirs.flatten(1).abs().amax(dim=1)
    assert (scale > 0).all(), "the peer's map is all zeros: the comparison would prove nothing"
    err = (ours - theirs).flatten(1).abs().amax(dim=1)
    assert (err <= rtol * scale).all(), f"relative error {(err / scale).tolist()} > {rtol}"


def score_fn(model, name):
    """Captum forward_func: the score of each row (target passed as an additional forward argument)."""

    def forward(x, target):
        return score(model(x), target, name)

    return forward


def model_variant(model, variant):
    return model.base if variant == "original" else model


@pytest.fixture
def tiny(tiny_cnn):
    """A TinyCNN, 4 random 16×16 inputs, and a ShiftedModel with a CAM-layer term and an input term."""
    base = tiny_cnn(classes=10, width=8, seed=0)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    grid = torch.zeros(8, 8)
    grid[:3, :3] = 1
    pixels = torch.zeros(16, 16)
    pixels[:5, :5] = 1
    # strength 0.05: |t| ≈ 40 here; much larger |t| costs float32 precision in the immune scores' gradients
    shifted = ShiftedModel(base, {"features": RegionShift(0.05, grid), "input": RegionShift(0.05, pixels)})
    return shifted, x


# ----------------------------------------------------------------------------- CAM family


def grad_cam_lib(method: str, model, layer_module, x, targets):
    """pytorch-grad-cam's raw map (``get_cam_image`` + its ReLU, before scaling), and its final output."""
    import pytorch_grad_cam as pgc

    with LIB[method](pgc)(model=model, target_layers=[layer_module]) as cam:
        out = cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(cam.get_cam_image(x, layer_module, targets, acts, grads, False), 0)
    return raw, out, (acts, grads)


LIB = {
    "gradcam": lambda pgc: pgc.GradCAM,
    "gradcampp": lambda pgc: pgc.GradCAMPlusPlus,
    "xgradcam": lambda pgc: pgc.XGradCAM,
    "hirescam": lambda pgc: pgc.HiResCAM,
    "layercam": lambda pgc: pgc.LayerCAM,
}


def lib_targets(target: torch.Tensor, name: str):
    """pytorch-grad-cam targets: callables on one sample's output (1-D logits)."""
    return [lambda out, c=int(c): score(out[None], torch.tensor([c]), name)[0] for c in target]


@pytest.mark.parametrize("variant", ["original", "shifted"])
@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_equals_pytorch_grad_cam_tiny(tiny, method, variant):
    """Each CAM, each score, both variants: pytorch-grad-cam's own class run on the (shifted) model."""
    shifted, x = tiny
    model = model_variant(shifted, variant)
    ours = cam_maps(shifted, x, TINY_TARGETS, "features", [get_method(method)], SCORES, [variant])
    for name in SCORES:
        theirs, _, _ = grad_cam_lib(method, model, shifted.base.features, x, lib_targets(TINY_TARGETS, name))
        assert_close(ours[method, name, variant], theirs)


@pytest.mark.parametrize("name", ["logit", "prob"])
def test_cams_equal_peers_lite0(lite0, samples, name):
    """The real model, 4 images (2 for prob): every CAM against pytorch-grad-cam, Grad-CAM also against Captum.

    pytorch-grad-cam runs once (its ``GradCAM``); the activations and gradients it
    captured — the same for every one of its CAM classes — go through each class's
    ``get_cam_image``. Its final Grad-CAM output is compared to ``normalize(upsample(ours))``.
    """
    import pytorch_grad_cam as pgc
    from captum.attr import LayerGradCam

    model, layer = lite0.module, lite0.layer
    module = model.get_submodule(layer)
    n = 4 if name == "logit" else 2  # (the probability on two images only, to keep the suite fast)
    samples, target = samples[:n], torch.tensor([285, 967, 657, 646])[:n]  # three top-1 classes and "maze"
    ours = cam_maps(model, samples, target, layer, [get_method(m) for m in CAM_METHODS], [name])

    targets = lib_targets(target, name)
    raw, out, (acts, grads) = grad_cam_lib("gradcam", model, module, samples, targets)
    assert_close(ours["gradcam", name, "original"], raw)
    for method in CAM_METHODS:
        with LIB[method](pgc)(model=model, target_layers=[module]) as cam:
            theirs = np.maximum(cam.get_cam_image(samples, module, targets, acts, grads, False), 0)
        assert_close(ours[method, name, "original"], theirs)
    # pytorch-grad-cam's output: min-max scaled with a 1e-7 guard, then cv2.resize (bilinear) to 224×224.
    shown = normalize(upsample(ours["gradcam", name, "original"], samples.shape[-1]))
    assert np.abs(shown.numpy() - out).max() <= 1e-5  # measured: 7e-7

    captum = LayerGradCam(score_fn(model, name), module)
    theirs = captum.attribute(samples, additional_forward_args=(target,), relu_attributions=True)[:, 0]
    assert_close(ours["gradcam", name, "original"], theirs.detach())


def test_all_cams_of_one_pass_use_one_forward(tiny):
    shifted, x = tiny
    calls = []
    handle = shifted.base.register_forward_hook(lambda *_: calls.append(1))
    try:
        methods = [get_method(m) for m in CAM_METHODS]
        out = cam_maps(shifted, x, TINY_TARGETS, "features", methods, SCORES, ("original", "shifted"))
    finally:
        handle.remove()
    assert len(calls) == 1
    assert len(out) == len(CAM_METHODS) * len(SCORES) * 2
    # ... and each equals the method's own (separate-forward) maps.
    for (m, name, variant), maps in out.items():
        alone = get_method(m).maps(shifted, x, TINY_TARGETS, name, variant, layer="features")
        torch.testing.assert_close(maps, alone)


def test_shift_changes_logit_cams_only(tiny):
    """A sanity law on the tiny model: the shifted variant changes logit maps, not immune-score maps.

    The shift is added in float64 (``head_dtype``): in float32 the immune scores'
    gradients keep a rounding residue of order eps·|∂t/∂A| (here up to 2e-3 of a map's maximum).
    """
    shifted, x = tiny
    shifted = ShiftedModel(shifted.base, dict(zip(shifted.layers, shifted.shifts)), head_dtype=torch.float64)
    out = cam_maps(shifted, x, TINY_TARGETS, "features", [get_method(m) for m in CAM_METHODS], SCORES, ("original", "shifted"))
    for m in CAM_METHODS:
        assert not torch.allclose(out[m, "logit", "original"], out[m, "logit", "shifted"])
        for name in ("prob", "logprob", "centered", "contrast"):
            assert_close(out[m, name, "shifted"], out[m, name, "original"])


# ----------------------------------------------------------------------------- input family


@pytest.mark.parametrize("variant", ["original", "shifted"])
def test_saliency_and_gradxinput_equal_captum_tiny(tiny, variant):
    from captum.attr import InputXGradient
    from captum.attr import Saliency as CaptumSaliency

    shifted, x = tiny
    model = model_variant(shifted, variant)
    for name in SCORES:
        f = score_fn(model, name)
        raw = Saliency().attribute(shifted, x, TINY_TARGETS, name, variant)
        assert_close(raw, CaptumSaliency(f).attribute(x, additional_forward_args=(TINY_TARGETS,), abs=False))
        assert_close(raw.abs(), CaptumSaliency(f).attribute(x, additional_forward_args=(TINY_TARGETS,)))
        gxi = GradientXInput().attribute(shifted, x, TINY_TARGETS, name, variant)
        assert_close(gxi, InputXGradient(f).attribute(x, additional_forward_args=(TINY_TARGETS,)))


def test_saliency_equals_captum_lite0(lite0, samples):
    """The real model, logit score on 4 images (in two chunks, of 3 and 1), probability on 2."""
    from captum.attr import Saliency as CaptumSaliency

    model = lite0.module
    target = torch.tensor([285, 967, 657, 646])
    for name, n in (("logit", 4), ("prob", 2)):
        sal = Saliency(batch_size=3)
        raw = sal.attribute(model, samples[:n], target[:n], name)
        theirs = CaptumSaliency(score_fn(model, name)).attribute(samples[:n], additional_forward_args=(target[:n],), abs=True)
        assert_close(raw.abs(), theirs)
        # the map: Simonyan et al.'s max over channels of |gradient|
        assert_close(sal.reduce(raw), theirs.amax(dim=1))


@pytest.mark.parametrize("variant", ["original", "shifted"])
@pytest.mark.parametrize("name", SCORES)
def test_integrated_gradients_equals_captum_tiny(tiny, name, variant):
    from captum.attr import IntegratedGradients as CaptumIG

    shifted, x = tiny
    model = model_variant(shifted, variant)
    baseline = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2)) * 0.1
    ours = IntegratedGradients(steps=20, baseline=baseline, batch_size=7).attribute(shifted, x, TINY_TARGETS, name, variant)
    theirs = CaptumIG(score_fn(model, name)).attribute(
        x, baselines=baseline[None].expand_as(x), additional_forward_args=(TINY_TARGETS,), n_steps=20
    )
    assert_close(ours, theirs)


def test_integrated_gradients_equals_captum_lite0(lite0, samples):
    """Real model (one image), zero baseline, 4 steps in chunks of 3, against Captum."""
    from captum.attr import IntegratedGradients as CaptumIG

    model = lite0.module
    x, target = samples[:1], torch.tensor([285])
    ours = IntegratedGradients(steps=4, batch_size=3).attribute(model, x, target, "logit")
    theirs = CaptumIG(score_fn(model, "logit")).attribute(x, additional_forward_args=(target,), n_steps=4)
    assert_close(ours, theirs)


def test_integrated_gradients_completeness(tiny):
    """The map's total ≈ s(x) − s(b). Only to 1%: the ReLU kinks make the integrand piecewise smooth,
    where Gauss–Legendre quadrature converges slowly (64 nodes: about 0.5% off here)."""
    shifted, x = tiny
    model = shifted.base
    ig = IntegratedGradients(steps=64, baseline=0.0, batch_size=128)
    maps = ig.maps(model, x, TINY_TARGETS, "logit")
    with torch.no_grad():
        gap = score(model(x), TINY_TARGETS, "logit") - score(model(torch.zeros_like(x)), TINY_TARGETS, "logit")
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("variant", ["original", "shifted"])
@pytest.mark.parametrize("name", ["logit", "prob", "centered"])
def test_smoothgrad_equals_captum_noise_tunnel_tiny(tiny, name, variant):
    """Same seed → the same noise (3×16×16 = 768 values per row, a multiple of 16) → Captum's average."""
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CaptumSaliency

    shifted, x = tiny
    model = model_variant(shifted, variant)
    sg = SmoothGrad(samples=10, stdev=0.3, seed=5, batch_size=6)
    ours = sg.attribute(shifted, x, TINY_TARGETS, name, variant)
    torch.manual_seed(5)
    theirs = NoiseTunnel(CaptumSaliency(score_fn(model, name))).attribute(
        x, nt_type="smoothgrad", nt_samples=10, stdevs=0.3, additional_forward_args=(TINY_TARGETS,), abs=False
    )
    assert_close(ours, theirs)
    torch.testing.assert_close(sg.maps(shifted, x, TINY_TARGETS, name, variant), theirs.abs().amax(dim=1), rtol=1e-4, atol=0)


def test_smoothgrad_seed_and_noise_level(tiny):
    shifted, x = tiny
    model = shifted.base
    a = SmoothGrad(samples=8, seed=1, batch_size=5).attribute(model, x, TINY_TARGETS)
    b = SmoothGrad(samples=8, seed=1, batch_size=32).attribute(model, x, TINY_TARGETS)
    c = SmoothGrad(samples=8, seed=2).attribute(model, x, TINY_TARGETS)
    torch.testing.assert_close(a, b)  # reproducible, whatever the chunking
    assert not torch.allclose(a, c)
    # relative noise level = Smilkov et al.'s σ / (max − min), one image at a time
    x0 = x[:1]
    level = SmoothGrad(samples=8, noise=0.2, seed=3).attribute(model, x0, TINY_TARGETS[:1])
    absolute = SmoothGrad(samples=8, stdev=0.2 * float(x0.max() - x0.min()), seed=3).attribute(model, x0, TINY_TARGETS[:1])
    torch.testing.assert_close(level, absolute)
    # zero noise: plain saliency
    torch.testing.assert_close(
        SmoothGrad(samples=3, stdev=0.0).attribute(model, x, TINY_TARGETS), Saliency().attribute(model, x, TINY_TARGETS)
    )


@pytest.mark.parametrize("method", ["ig", "smoothgrad"])
def test_steps_and_samples_go_through_the_model_in_chunks(tiny, method):
    """20 steps (or samples) × 4 images in chunks of 32 rows: 3 forward passes, not 80."""
    shifted, x = tiny
    m = get_method(method, batch_size=32, **({"steps": 20} if method == "ig" else {"samples": 20}))
    sizes = []
    handle = shifted.base.register_forward_hook(lambda _m, inp, _out: sizes.append(inp[0].shape[0]))
    try:
        m.attribute(shifted, x, TINY_TARGETS, "logit", "shifted")
    finally:
        handle.remove()
    assert sizes == [32, 32, 16]


def test_input_map_reductions(tiny):
    shifted, x = tiny
    for name in INPUT_METHODS:
        m = get_method(name, **({"steps": 4} if name == "ig" else {"samples": 4} if name == "smoothgrad" else {}))
        raw = m.attribute(shifted, x, TINY_TARGETS, "logit", "shifted")
        assert raw.shape == x.shape
        want = raw.abs().amax(dim=1) if name in ("saliency", "smoothgrad") else raw.sum(dim=1)
        torch.testing.assert_close(m.maps(shifted, x, TINY_TARGETS, "logit", "shifted"), want)


# ----------------------------------------------------------------------------- every method


@pytest.mark.parametrize("method", list(METHODS))
def test_batch_equals_one_image_at_a_time(tiny, method):
    shifted, x = tiny
    options = {"steps": 5} if method == "ig" else {"samples": 4, "stdev": 0.0} if method == "smoothgrad" else {}
    m = get_method(method, **options)
    layer = "features" if m.family == "cam" else None
    whole = m.maps(shifted, x, TINY_TARGETS, "logit", "shifted", layer=layer)
    alone = torch.cat([m.maps(shifted, x[i : i + 1], TINY_TARGETS[i], "logit", "shifted", layer=layer) for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-4, atol=1e-6)
    assert whole.abs().amax() > 0


# ----------------------------------------------------------------------------- errors


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_refuses_missing_or_non_spatial_layer(tiny, method):
    shifted, x = tiny
    m = get_method(method)
    with pytest.raises(LogitShiftError) as e:
        m.maps(shifted, x, TINY_TARGETS)
    assert method in one_line(e) and "layer" in one_line(e)
    with pytest.raises(LogitShiftError) as e:
        m.maps(shifted, x, TINY_TARGETS, layer="fc")  # N×10: no grid
    assert "'fc'" in one_line(e) and "N×C×H×W" in one_line(e)
    with pytest.raises(LogitShiftError) as e:
        m.maps(shifted, x, TINY_TARGETS, layer="nope")
    assert "'nope'" in one_line(e)


@pytest.mark.parametrize("method", INPUT_METHODS)
def test_input_method_refuses_a_layer(tiny, method):
    shifted, x = tiny
    with pytest.raises(LogitShiftError) as e:
        get_method(method).maps(shifted, x, TINY_TARGETS, layer="features")
    assert method in one_line(e) and "'features'" in one_line(e)


def test_bad_names_and_options(tiny):
    shifted, x = tiny
    for call, word in [
        (lambda: get_method("eigencam"), "'eigencam'"),
        (lambda: get_method("ig", stepz=3), "stepz"),
        (lambda: IntegratedGradients(steps=0), "steps"),
        (lambda: SmoothGrad(samples=0), "samples"),
        (lambda: SmoothGrad(noise=-1.0), "noise"),
        (lambda: IntegratedGradients(baseline=torch.zeros(5, 5)).attribute(shifted, x, TINY_TARGETS), "baseline"),
        (lambda: Saliency().attribute(shifted, x, torch.tensor([1, 2])), "target"),
        (lambda: Saliency().attribute(shifted.base, x, TINY_TARGETS, "logit", "shifted"), "'shifted'"),
        (lambda: GradCAM().maps(shifted, x, TINY_TARGETS, "pre-softmax", layer="features"), "'pre-softmax'"),
    ]:
        with pytest.raises(LogitShiftError) as e:
            call()
        assert word in one_line(e)
