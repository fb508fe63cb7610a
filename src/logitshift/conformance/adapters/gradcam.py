"""pytorch-grad-cam (PyPI ``grad-cam``): its CAM methods × its classifier targets and ours.

Targets: ``ClassifierOutputTarget`` (the logit, the library's default),
``ClassifierOutputSoftmaxTarget``, ``ClassifierOutputReST`` (``z_c + log p_c``),
``FinerWeightedTarget`` at alpha 0, 0.5 and 1 (against the next three
classes), and logitshift's immune targets (:mod:`logitshift.defend`). Maps are
the library's output (upsampled to the input, min-max scaled per image).
"""

from __future__ import annotations

import torch

from ...defend import TARGETS
from ..explainer import Context, Explainer, adapter, layer_of, maps_of, need

#: method, twin kind, reads a score, options; the costly perturbation methods get fewer targets
METHODS = (
    ("GradCAM", "cam", True),
    ("HiResCAM", "cam", True),
    ("GradCAMElementWise", "cam", True),
    ("GradCAMPlusPlus", "cam", True),
    ("XGradCAM", "cam", True),
    ("LayerCAM", "cam", True),
    ("EigenGradCAM", "cam", True),
    ("ShapleyCAM", "cam", True),
    ("FullGrad", "cam+gradient", True),  # bias gradients of every layer and the input gradient
    ("ScoreCAM", "perturbation", True),
    # ablation at the layer leaves the input, hence an input-reading t, unchanged; a t reading the layer
    # cannot see it either: pytorch-grad-cam's AblationLayer overrides __call__, so no forward hook fires
    ("AblationCAM", "perturbation", True),
    ("EigenCAM", "cam", False),
    ("KPCA_CAM", "cam", False),
    ("FEM", "cam", False),
)
COSTLY = ("ScoreCAM", "AblationCAM")
#: logitshift's immune targets checked here (ProbTarget is ClassifierOutputSoftmaxTarget; LogProbTarget has its map)
OURS = ("CenteredLogitTarget", "ContrastTarget")
#: the targets given to the costly methods
FEW = (
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputReST",
    "FinerWeightedTarget(alpha=0.5)",
    "CenteredLogitTarget",
)


def targets(ctx: Context) -> dict[str, tuple[object, bool, str]]:
    """label -> (factory(classes, others) -> list of targets, immune, note)."""
    mt = need("pytorch_grad_cam.utils.model_targets", "grad-cam")

    def finer(alpha):
        return lambda c, others: [mt.FinerWeightedTarget(int(ci), [int(o) for o in oi], alpha) for ci, oi in zip(c, others)]

    out: dict[str, tuple[object, bool, str]] = {
        "ClassifierOutputTarget": (lambda c, o: [mt.ClassifierOutputTarget(int(ci)) for ci in c], False, "the logit z_c"),
        "ClassifierOutputSoftmaxTarget": (lambda c, o: [mt.ClassifierOutputSoftmaxTarget(int(ci)) for ci in c], True, ""),
        "ClassifierOutputReST": (lambda c, o: [mt.ClassifierOutputReST(int(ci)) for ci in c], False, "z_c + log p_c keeps the z_c term"),
        "FinerWeightedTarget(alpha=0)": (finer(0.0), False, "Σ p_j z_c / Σ p_j: the logit, weighted"),
        "FinerWeightedTarget(alpha=0.5)": (finer(0.5), False, "keeps (1 − alpha)·z_c"),
        "FinerWeightedTarget(alpha=1)": (finer(1.0), True, "Σ p_j (z_c − z_j) / Σ p_j: differences only"),
    }
    for cls in TARGETS.values():
        if cls.__name__ in OURS:
            out[cls.__name__] = (_ours(cls), True, "")
    return out


def _ours(cls):
    return lambda c, o: [cls(int(ci)) for ci in c]


def _others(model, x, classes, k: int = 3) -> list[list[int]]:
    with torch.no_grad():
        z = model(x)
    order = z.argsort(dim=1, descending=True)
    return [[int(j) for j in row if int(j) != int(ci)][:k] for row, ci in zip(order, classes)]


def _runner(pgc, method: str, make, ctx: Context):
    cls = getattr(pgc, method)

    def run(model, x, classes):
        layer = layer_of(model, ctx.layer)
        tg = make(classes, _others(model, x, classes))
        cam = cls(model=model, target_layers=[layer])
        if method == "AblationCAM":
            cam.ratio_channels_to_ablate = ctx.extra.get("ablation_ratio", 0.05)
            cam.batch_size = 16
        if method == "ScoreCAM":
            cam.batch_size = 16
        try:
            out = cam(input_tensor=x, targets=tg)
        finally:
            cam.activations_and_grads.release()
            _restore(model, ctx.layer, layer)  # AblationCAM swaps the layer and does not put it back on an error
        return maps_of(out)

    return run


def _restore(model, name: str, original) -> None:
    """Put ``original`` back at ``name`` if a method left something else there."""
    if layer_of(model, name) is original:
        return
    root = layer_of(model, name.rsplit(".", 1)[0]) if "." in name else None
    if root is None:
        raise RuntimeError(f"layer {name!r} was replaced and cannot be restored")
    setattr(root, name.rsplit(".", 1)[1], original)


def _finer_runner(pgc, alpha: float, ctx: Context):
    def run(model, x, classes):
        layer = layer_of(model, ctx.layer)
        cam = pgc.FinerCAM(model=model, target_layers=[layer])
        try:
            maps = [cam(input_tensor=x[i : i + 1], alpha=alpha, target_idx=int(classes[i])) for i in range(x.shape[0])]
        finally:
            cam.base_cam.activations_and_grads.release()
        return maps_of(torch.cat([torch.as_tensor(m) for m in maps]))

    return run


@adapter("pytorch-grad-cam")
def explainers(ctx: Context) -> list[Explainer]:
    pgc = need("pytorch_grad_cam", "grad-cam")
    tgts = targets(ctx)
    out = []
    for method, kind, reads in METHODS:
        if not hasattr(pgc, method):
            out.append(Explainer("pytorch-grad-cam", method, "*", kind, _missing(method), reads_score=reads))
            continue
        for label, (make, immune, note) in tgts.items():
            if method in COSTLY and label not in FEW:
                continue
            cacheable = method == "ScoreCAM"  # AblationCAM: same inputs, different (ablated) outputs
            out.append(
                Explainer(
                    "pytorch-grad-cam",
                    method,
                    label,
                    kind,
                    _runner(pgc, method, make, ctx),
                    reads_score=reads,
                    immune=immune,
                    cacheable=cacheable,
                    note=note,
                    # a t computed from the explained layer in the forward pass (the CAM twin) besides the input-reading one
                    stronger=("cam",) if method in COSTLY else (),
                )
            )
    if hasattr(pgc, "FinerCAM"):
        for alpha in (0.0, 0.6, 1.0):
            out.append(
                Explainer(
                    "pytorch-grad-cam",
                    "FinerCAM",
                    f"alpha={alpha:g}",
                    "cam",
                    _finer_runner(pgc, alpha, ctx),
                    immune=alpha == 1.0,
                    note="FinerWeightedTarget inside",
                )
            )
    return out


def _missing(method: str):
    def run(model, x, classes):
        raise RuntimeError(f"{method} is not in the installed pytorch-grad-cam")

    return run
