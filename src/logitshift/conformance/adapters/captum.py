"""Captum: its attribution methods on the raw model (the logit) and on :class:`logitshift.defend.ScoreWrapper`.

Settings (small, stated in the table): IG ``n_steps = samples``; NoiseTunnel
(SmoothGrad of Saliency, ``nt_samples = samples``, stdev 0.15); GradientShap
and DeepLiftShap with baselines {zero image, the image at 1/4}; Occlusion with
windows of 1/7 of the side (32 px at 224) at the same stride; FeatureAblation, ShapleyValueSampling
(``n_samples = 1``), Lime and KernelShap (``n_samples = 4·samples``) on a 7×7
grid of patches; ablation baseline 0 (the mean colour after normalisation).
Maps: attributions summed over colour channels (LayerGradCam: its one map).
"""

from __future__ import annotations

import torch

from ...defend import ScoreWrapper
from ..explainer import Context, Explainer, absent, adapter, layer_of, maps_of, need

#: method, twin kind
METHODS = (
    ("Saliency", "gradient"),
    ("InputXGradient", "gradient"),
    ("IntegratedGradients", "gradient"),
    ("NoiseTunnel", "gradient"),
    ("GuidedBackprop", "gradient"),
    ("Deconvolution", "gradient"),
    ("GradientShap", "gradient"),
    ("GuidedGradCam", "cam+gradient"),
    ("LayerGradCam", "cam"),
    ("DeepLift", "propagation"),
    ("DeepLiftShap", "propagation"),
    ("LRP", "propagation"),
    ("Occlusion", "perturbation"),
    ("FeatureAblation", "perturbation"),
    ("ShapleyValueSampling", "perturbation"),
    ("Lime", "perturbation"),
    ("KernelShap", "perturbation"),
)
SCORES = ("logit", "prob", "centered", "logprob", "contrast")


def patches(size: int, n: int = 7) -> torch.Tensor:
    """1×1×size×size feature mask: an n×n grid of patches (Captum's feature_mask)."""
    idx = torch.arange(size) * n // size
    return (idx[:, None] * n + idx[None, :])[None, None]


def _attribute(ca, method: str, fwd, model, x, classes, ctx: Context):  # noqa: C901 — one branch per Captum class: the adapter table
    n = ctx.samples
    if method == "Saliency":
        return ca.Saliency(fwd).attribute(x, target=classes, abs=False)
    if method == "InputXGradient":
        return ca.InputXGradient(fwd).attribute(x, target=classes)
    if method == "IntegratedGradients":
        return ca.IntegratedGradients(fwd).attribute(x, target=classes, n_steps=n, internal_batch_size=8)
    if method == "NoiseTunnel":
        return ca.NoiseTunnel(ca.Saliency(fwd)).attribute(
            x, target=classes, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=8, stdevs=0.15, abs=False
        )
    if method == "GuidedBackprop":
        return ca.GuidedBackprop(fwd).attribute(x, target=classes)
    if method == "Deconvolution":
        return ca.Deconvolution(fwd).attribute(x, target=classes)
    baselines = torch.stack([torch.zeros_like(x[0]), x[0] / 4])
    if method == "GradientShap":
        return ca.GradientShap(fwd).attribute(x, baselines=baselines, target=classes, n_samples=n, stdevs=0.1)
    if method == "GuidedGradCam":
        return ca.GuidedGradCam(fwd, layer_of(model, ctx.layer)).attribute(x, target=classes)
    if method == "LayerGradCam":
        return ca.LayerGradCam(fwd, layer_of(model, ctx.layer)).attribute(x, target=classes, relu_attributions=True)
    if method == "DeepLift":
        return ca.DeepLift(fwd).attribute(x, target=classes)
    if method == "DeepLiftShap":
        return ca.DeepLiftShap(fwd).attribute(x, baselines=baselines, target=classes)
    if method == "LRP":
        return ca.LRP(fwd).attribute(x, target=classes)
    mask = patches(x.shape[-1]).to(x.device)
    if method == "Occlusion":
        side = x.shape[-1] // 7
        return ca.Occlusion(fwd).attribute(
            x, sliding_window_shapes=(3, side, side), strides=(3, side, side), target=classes, baselines=0.0, perturbations_per_eval=16
        )
    if method == "FeatureAblation":
        return ca.FeatureAblation(fwd).attribute(x, target=classes, feature_mask=mask, baselines=0.0, perturbations_per_eval=16)
    if method == "ShapleyValueSampling":
        return ca.ShapleyValueSampling(fwd).attribute(
            x, target=classes, feature_mask=mask, baselines=0.0, n_samples=1, perturbations_per_eval=16
        )
    if method == "Lime":
        return torch.cat(
            [
                ca.Lime(fwd).attribute(
                    x[i : i + 1], target=classes[i : i + 1], feature_mask=mask, n_samples=4 * n, perturbations_per_eval=16
                )
                for i in range(len(x))
            ]
        )
    if method == "KernelShap":
        return torch.cat(
            [
                ca.KernelShap(fwd).attribute(
                    x[i : i + 1], target=classes[i : i + 1], feature_mask=mask, n_samples=4 * n, perturbations_per_eval=16
                )
                for i in range(len(x))
            ]
        )
    raise RuntimeError(f"{method}: no adapter call")  # pragma: no cover


def _runner(ca, method: str, score: str, ctx: Context):
    def run(model, x, classes):
        fwd = model if score == "logit" else ScoreWrapper(model, score).eval()
        if method in ("GuidedBackprop", "Deconvolution", "DeepLift", "DeepLiftShap", "LRP"):
            fwd = _Module(fwd) if not isinstance(fwd, torch.nn.Module) else fwd
        x = x.detach().clone()
        return maps_of(_attribute(ca, method, fwd, model, x, classes, ctx))

    return run


class _Module(torch.nn.Module):  # pragma: no cover - every forward here is already a module
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


@adapter("captum")
def explainers(ctx: Context) -> list[Explainer]:
    ca = need("captum.attr", "captum")
    out = []
    for method, kind in METHODS:
        if not hasattr(ca, method):
            out.append(Explainer("captum", method, "*", kind, absent(method, "captum")))
            continue
        for s in SCORES:
            label = "logit" if s == "logit" else f"ScoreWrapper({s})"
            out.append(
                Explainer("captum", method, label, kind, _runner(ca, method, s, ctx), immune=s != "logit", cacheable=kind == "perturbation")
            )
    return out
