"""torchcam (PyPI ``torchcam``): its CAM extractors, with the class index (the logit) or a probability target.

torchcam's usage: hook the model (``extractor = GradCAM(model, layer)``),
run it (``out = model(x)``), ask for the map (``extractor(class_idx, out)``):
the class index explains the raw output, the logit ``z_c``. Since 0.5 a
``targets=`` callable can choose another scalar: ``softmax(out)[c]`` is the
probability target (immune: a function of logit differences). Gradient
CAMs (GradCAM, GradCAMpp, SmoothGradCAMpp, XGradCAM, LayerCAM) are steered by
the CAM twin; ScoreCAM, SSCAM and ISCAM (masked inputs, batch 16) by the
perturbation twin. Maps: torchcam's output at the layer's grid (ReLU, min-max
normalised per image).
"""

from __future__ import annotations

import torch

from ..explainer import Context, Explainer, absent, adapter, layer_of, maps_of, need

#: method, twin kind, options
METHODS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("GradCAM", "cam", {}),
    ("GradCAMpp", "cam", {}),
    ("SmoothGradCAMpp", "cam", {"num_samples": 4}),
    ("XGradCAM", "cam", {}),
    ("LayerCAM", "cam", {}),
    ("ScoreCAM", "perturbation", {"batch_size": 16}),
    ("SSCAM", "perturbation", {"batch_size": 16, "num_samples": 4}),
    ("ISCAM", "perturbation", {"batch_size": 16, "num_samples": 4}),
)
TARGETS = ("class_idx", "targets=softmax")


def _prob(c: int):
    return lambda out: torch.softmax(out, dim=-1)[c]


def _runner(tc, method: str, options: dict, target: str, ctx: Context):
    cls = getattr(tc, method)

    def run(model, x, classes):
        extractor = cls(model, layer_of(model, ctx.layer), input_shape=tuple(x.shape[1:]), **options)
        try:
            with torch.enable_grad():  # a forward with grad: never memoized, so the layer hook fires
                out = model(x.detach().clone())
            idx = [int(c) for c in classes]
            if target == "class_idx":
                cams = extractor(idx, out)
            else:
                cams = extractor(scores=out, targets=[_prob(c) for c in idx])
        finally:
            extractor.remove_hooks()
        return maps_of(cams[0])

    return run


@adapter("torchcam")
def explainers(ctx: Context) -> list[Explainer]:
    tc = need("torchcam.methods", "torchcam")
    if ctx.features:
        return []  # CAMs need a spatial layer: nothing to check on a tabular model
    out = []
    for method, kind, options in METHODS:
        if not hasattr(tc, method):
            out.append(Explainer("torchcam", method, "*", kind, absent(method, "torchcam")))
            continue
        for target in TARGETS:
            out.append(
                Explainer(
                    "torchcam",
                    method,
                    target,
                    kind,
                    _runner(tc, method, options, target, ctx),
                    immune=target != "class_idx",
                    cacheable=kind == "perturbation",
                    note="torchcam's usage: the logit" if target == "class_idx" else "",
                    stronger=("cam",) if kind == "perturbation" else (),  # a t read from the explained layer, too
                )
            )
    return out
