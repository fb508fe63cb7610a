"""LIME (PyPI ``lime``): ``lime_image`` with the classifier function its users hand it.

``LimeImageExplainer.explain_instance(image, classifier_fn, labels=(c,))``
regresses what ``classifier_fn`` returns for class ``c`` on which superpixels
are kept. Targets: ``classifier_fn=logits`` (the model itself) and
``classifier_fn=probabilities`` (softmax of the model, what LIME's
documentation asks for; a function of logit differences, hence immune).
Settings: a 7×7 grid of patches as the segmentation, LIME's default hiding
(a hidden patch takes its mean colour), ``num_samples = 8·samples``,
``random_state = 0``. Maps: each patch's weight spread over the patch.
Tabular models (:mod:`logitshift.core.tabular`): ``lime_tabular.LimeTabularExplainer``
with the standardised training rows and LIME's defaults (quartile
discretisation), ``num_samples = 64·samples``, the same two targets.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..explainer import Context, Explainer, adapter, maps_of, need
from .captum import patches

TARGETS = {"classifier_fn=logits": "logit", "classifier_fn=probabilities": "prob"}
GRID = 7


def classifier_fn(model, output: str, like: torch.Tensor):
    """``f(images N×H×W×C numpy) -> N×K``: the model's logits or probabilities, no gradient."""

    def f(images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images), dtype=like.dtype, device=like.device)
        x = x.reshape(len(x), -1) if like.dim() == 1 else x.permute(0, 3, 1, 2)
        with torch.no_grad():
            z = model(x)
            s = z if output == "logit" else torch.softmax(z.double(), dim=1)
        return s.double().cpu().numpy()

    return f


def _quiet(iterable, *args, **kwargs):
    return iterable


def _runner(lime_image, output: str, ctx: Context):
    def one(model, x1: torch.Tensor, c: int) -> torch.Tensor:
        seg = patches(int(x1.shape[-1]), GRID)[0, 0].numpy()
        explainer = lime_image.LimeImageExplainer(random_state=0)
        bar, lime_image.tqdm = lime_image.tqdm, _quiet  # lime 0.2 draws a progress bar per image, with no option to turn it off
        try:
            exp = explainer.explain_instance(
                x1.permute(1, 2, 0).cpu().double().numpy(),
                classifier_fn(model, output, x1),
                labels=(c,),
                top_labels=None,
                num_samples=8 * ctx.samples,
                batch_size=64,
                segmentation_fn=lambda image: seg,
                random_seed=0,
            )
        finally:
            lime_image.tqdm = bar
        weights = np.zeros(GRID * GRID)
        for k, w in exp.local_exp[c]:
            weights[k] = w
        return torch.as_tensor(weights[seg])

    def run(model, x, classes):
        return maps_of(torch.stack([one(model, x[i].detach(), int(classes[i])) for i in range(len(x))]))

    return run


def _tabular_runner(lime_tabular, output: str, ctx: Context):
    """``LimeTabularExplainer(training rows, discretize_continuous=True)`` (LIME's defaults: quartile bins), one row at a time."""

    def one(model, x1: torch.Tensor, c: int) -> torch.Tensor:
        if ctx.training is None:
            raise RuntimeError("lime_tabular needs the model's training rows")
        explainer = lime_tabular.LimeTabularExplainer(
            ctx.training.double().numpy(), feature_names=list(ctx.features), mode="classification", random_state=0
        )
        f = classifier_fn(model, output, x1)
        with warnings.catch_warnings():  # LIME warns that logits "do not sum to 1": that usage is the cell being measured
            warnings.simplefilter("ignore", UserWarning)
            exp = explainer.explain_instance(
                x1.cpu().double().numpy(), f, labels=(c,), num_features=len(ctx.features), num_samples=64 * ctx.samples
            )
        weights = np.zeros(len(ctx.features))
        for k, w in exp.local_exp[c]:
            weights[k] = w
        return torch.as_tensor(weights)

    def run(model, x, classes):
        return maps_of(torch.stack([one(model, x[i].detach(), int(classes[i])) for i in range(len(x))]))

    return run


@adapter("lime")
def explainers(ctx: Context) -> list[Explainer]:
    if ctx.features:
        lime_tabular = need("lime.lime_tabular", "lime")
        return [
            Explainer(
                "lime",
                "LimeTabularExplainer",
                label,
                "perturbation",
                _tabular_runner(lime_tabular, out, ctx),
                immune=out == "prob",
                cacheable=True,
            )
            for label, out in TARGETS.items()
        ]
    lime_image = need("lime.lime_image", "lime")
    return [
        Explainer(
            "lime", "LimeImageExplainer", label, "perturbation", _runner(lime_image, output, ctx), immune=output == "prob", cacheable=True
        )
        for label, output in TARGETS.items()
    ]
