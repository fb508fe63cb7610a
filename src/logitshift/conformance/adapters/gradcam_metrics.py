"""pytorch-grad-cam's faithfulness metrics: ROAD (most / least relevant first, 50 %) and the confidence change of the image times the map.

Targets: ``ClassifierOutputTarget`` (logit), ``ClassifierOutputSoftmaxTarget``
and logitshift's ``CenteredLogitTarget``. Per image, the metric's value
(score after − score before); better: lower for ROAD most-relevant-first,
higher for least-relevant-first and for the confidence change.
"""

from __future__ import annotations

import numpy as np
import torch

from ...defend import CenteredLogitTarget
from ..explainer import Context, Explainer, adapter, need

METRICS = {
    "ROADMostRelevantFirst(50)": ("road", "ROADMostRelevantFirst", "lower"),
    "ROADLeastRelevantFirst(50)": ("road", "ROADLeastRelevantFirst", "higher"),
    "CamMultImageConfidenceChange": ("cam_mult_image", "CamMultImageConfidenceChange", "higher"),
}


def _targets():
    mt = need("pytorch_grad_cam.utils.model_targets", "grad-cam")
    return {
        "ClassifierOutputTarget": (mt.ClassifierOutputTarget, False),
        "ClassifierOutputSoftmaxTarget": (mt.ClassifierOutputSoftmaxTarget, True),
        "CenteredLogitTarget": (CenteredLogitTarget, True),
    }


def _runner(module: str, cls_name: str, target_cls, ctx: Context):
    def run(model, x, classes):
        import importlib

        cls = getattr(importlib.import_module(f"pytorch_grad_cam.metrics.{module}"), cls_name)
        metric = cls(50) if module == "road" else cls()
        ref = ctx.reference.float().numpy()
        vals = []
        for j in range(ref.shape[1]):
            np.random.seed(0)
            torch.manual_seed(0)
            out = metric(x, ref[:, j], [target_cls(int(c)) for c in classes], model)
            vals.append(np.asarray(out, dtype=np.float64).reshape(len(x)))
        return torch.tensor(np.stack(vals, axis=1))

    return run


@adapter("pytorch-grad-cam-metrics")
def explainers(ctx: Context) -> list[Explainer]:
    need("pytorch_grad_cam", "grad-cam")
    out = []
    for label, (module, cls_name, better) in METRICS.items():
        for tname, (tcls, immune) in _targets().items():
            out.append(
                Explainer(
                    "pytorch-grad-cam",
                    label,
                    tname,
                    "metric",
                    _runner(module, cls_name, tcls, ctx),
                    immune=immune,
                    metric=better,
                    cacheable=True,
                )
            )
    return out
