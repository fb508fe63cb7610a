"""One adapter per library: importing this package registers them all (no peer library is imported here)."""

from . import builtin, captum, faithfulness, gradcam, gradcam_metrics, lime, quantus, shap, torchcam, zennit

__all__ = ["builtin", "captum", "faithfulness", "gradcam", "gradcam_metrics", "lime", "quantus", "shap", "torchcam", "zennit"]
