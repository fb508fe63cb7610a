"""SHAP (PyPI ``shap``): its explainers, each with SHAP's own ways of choosing the explained output.

* ``GradientExplainer`` (expected gradients) and ``DeepExplainer`` (DeepLIFT
  rescale) explain whatever the PyTorch module returns: the targets are the
  model itself (``model``: the logits, as in SHAP's PyTorch examples),
  ``Softmax(model)`` (probabilities) and logitshift's
  ``ScoreWrapper(centered)``. Background: {zero image, the first image at
  1/4}; ``nsamples = samples``; the explained output is SHAP's
  ``ranked_outputs=1`` (the top class, the same for the model and its twin).
* ``KernelExplainer``, ``PermutationExplainer`` and ``PartitionExplainer``
  explain a function the user hands them: ``f=logits`` (the model itself),
  ``f=probabilities`` (softmax of the model) and
  ``f=probabilities, link=logit`` (SHAP explains ``log(p/(1 − p))``;
  ``linearize_link=False``: shap 0.51's default ``True`` gives NaN values or
  a TypeError with a logit link).
  Kernel and Permutation play on a 7×7 grid of patches (a patch is kept or
  set to 0, the mean colour after normalisation; Kernel ``nsamples =
  8·samples``, Permutation one permutation, ``2·49 + 1`` evaluations);
  Partition on the pixels through ``shap.maskers.Image(0)``
  (``max_evals = 16·samples``). Tabular models (rows of standardised
  features): Kernel and Permutation on the features, the background the
  training mean (the zero row); Partition with ``shap.maskers.Partition``
  over 100 training rows (its clustering needs data).

``immune`` targets are functions of logit differences: a probability
``p_c`` and ``logit(p_c) = log p_c − log(1 − p_c)`` are, the raw logit is not.
Maps: attributions summed over colour channels (patch values spread over
their patch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...defend import ScoreWrapper
from ..explainer import Context, Explainer, adapter, maps_of, need
from .captum import patches

#: SHAP explainer, twin kind
GRADIENT = (("GradientExplainer", "gradient"), ("DeepExplainer", "propagation"))
MODEL_TARGETS = {"model": False, "Softmax(model)": True, "ScoreWrapper(centered)": True}
SAMPLED = ("KernelExplainer", "PermutationExplainer", "PartitionExplainer")
#: label -> (output, link): SHAP's ways of choosing what a model-agnostic explainer explains
FUNCTION_TARGETS = {
    "f=logits": ("logit", "identity"),
    "f=probabilities": ("prob", "identity"),
    "f=probabilities, link=logit": ("prob", "logit"),
}
GRID = 7


class Softmax(nn.Module):
    """``softmax(model(x))``: the probabilities, as SHAP users wrap a classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def wrapped(model: nn.Module, label: str) -> nn.Module:
    """The module SHAP's gradient explainers are given for a target label."""
    if label == "model":
        return model
    if label == "Softmax(model)":
        return Softmax(model).eval()
    return ScoreWrapper(model, "centered").eval()


def background(x: torch.Tensor) -> torch.Tensor:
    """2×C×H×W: the zero image and the first image at 1/4 (the baselines Captum's cells use)."""
    return torch.cat([torch.zeros_like(x[:1]), x[:1] / 4]).detach()


def _gradient_runner(shap, method: str, label: str, ctx: Context):
    def run(model, x, classes):
        module = wrapped(model, label)
        x = x.detach().clone()
        if method == "GradientExplainer":
            values, _ = shap.GradientExplainer(module, background(x)).shap_values(x, ranked_outputs=1, nsamples=ctx.samples, rseed=0)
        else:
            values, _ = shap.DeepExplainer(module, background(x)).shap_values(x, ranked_outputs=1, check_additivity=False)
        return maps_of(np.asarray(values)[..., 0])

    return run


def score_fn(model: nn.Module, output: str, c: int):
    """``f(images N×C×H×W) -> N``: the logit or the probability of class ``c``, no gradient."""

    def f(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            z = model(images)
            s = z if output == "logit" else torch.softmax(z.double(), dim=1)
        return s[:, c].double().cpu().numpy()

    return f


def patch_images(x1: torch.Tensor, keep: np.ndarray, seg: torch.Tensor) -> torch.Tensor:
    """One image per row of ``keep`` (N×P in {0, 1}, or fractions): patch ``k`` kept where ``keep[:, k]``, else 0."""
    k = torch.as_tensor(np.asarray(keep), dtype=x1.dtype, device=x1.device)
    return x1[None] * k[:, seg][:, None]


def _sampled_runner(shap, method: str, label: str, ctx: Context):
    output, link_name = FUNCTION_TARGETS[label]
    link = shap.links.logit if link_name == "logit" else shap.links.identity
    linearize = (
        link_name == "identity"
    )  # shap 0.51 with a logit link and linearize_link=True: NaN values (Permutation), TypeError (Partition)

    def one(model, x1: torch.Tensor, c: int) -> torch.Tensor:
        score = score_fn(model, output, c)
        if x1.dim() == 1:
            return _features(shap, method, lambda rows: score(torch.as_tensor(rows, dtype=x1.dtype)), x1, link, link_name, linearize, ctx)
        size = x1.shape[-1]
        if method == "PartitionExplainer":
            masker = shap.maskers.Image(0.0, (size, size, x1.shape[0]))

            def f_img(imgs):
                return score(torch.as_tensor(np.asarray(imgs), dtype=x1.dtype).permute(0, 3, 1, 2))[:, None]

            ex = shap.PartitionExplainer(f_img, masker, link=link, linearize_link=linearize)
            vals = ex(x1.permute(1, 2, 0)[None].cpu().numpy(), max_evals=16 * ctx.samples, batch_size=64, silent=True).values
            return torch.as_tensor(np.asarray(vals)).reshape(size, size, -1).sum(-1)
        seg = patches(size, GRID)[0, 0].to(x1.device)
        f = lambda keep: score(patch_images(x1, keep, seg))
        zeros, ones = np.zeros((1, GRID * GRID)), np.ones((1, GRID * GRID))
        if method == "KernelExplainer":
            vals = shap.KernelExplainer(f, zeros, link=link_name).shap_values(ones, nsamples=8 * ctx.samples, silent=True)
        else:
            ex = shap.PermutationExplainer(f, zeros, link=link, linearize_link=linearize, seed=0)
            vals = ex(ones, max_evals=2 * GRID * GRID + 1, silent=True).values
        return torch.as_tensor(np.asarray(vals, dtype=np.float64).reshape(-1))[seg.cpu()]

    def run(model, x, classes):
        return maps_of(torch.stack([one(model, x[i].detach(), int(classes[i])) for i in range(len(x))]))

    return run


def _features(shap, method: str, f, x1: torch.Tensor, link, link_name: str, linearize: bool, ctx: Context) -> torch.Tensor:
    """A tabular row (F values): SHAP on the features themselves, the background the training mean (the zero row)."""
    zeros, row = np.zeros((1, x1.numel())), x1.cpu().double().numpy()[None]
    if method == "KernelExplainer":
        vals = shap.KernelExplainer(f, zeros, link=link_name).shap_values(row, nsamples=8 * ctx.samples, silent=True)
    elif method == "PermutationExplainer":
        vals = shap.PermutationExplainer(f, zeros, link=link, linearize_link=linearize, seed=0)(
            row, max_evals=2 * x1.numel() + 1, silent=True
        ).values
    else:
        masker = shap.maskers.Partition(ctx.training[:100].double().numpy() if ctx.training is not None else zeros)
        vals = shap.PartitionExplainer(f, masker, link=link, linearize_link=linearize)(row, max_evals=16 * ctx.samples, silent=True).values
    return torch.as_tensor(np.asarray(vals, dtype=np.float64).reshape(-1))


@adapter("shap")
def explainers(ctx: Context) -> list[Explainer]:
    shap = need("shap")
    out = []
    for method, kind in GRADIENT:
        for label, immune in MODEL_TARGETS.items():
            note = "SHAP's PyTorch examples: the logits" if label == "model" else ""
            out.append(Explainer("shap", method, label, kind, _gradient_runner(shap, method, label, ctx), immune=immune, note=note))
    for method in SAMPLED:
        for label, (output, _link) in FUNCTION_TARGETS.items():
            out.append(
                Explainer(
                    "shap",
                    method,
                    label,
                    "perturbation",
                    _sampled_runner(shap, method, label, ctx),
                    immune=output == "prob",
                    cacheable=True,
                )
            )
    return out
