"""The words and defaults the command line shows before torch is imported (issue 30: ``--help`` answers at once).

Torch-free on purpose: ``logitshift --help`` builds every command's parser from
these, and the modules that use them import them from here (their one home).
The method names mirror the registry of :mod:`logitshift.attribution` (a test
holds them equal).
"""

from __future__ import annotations

DEFAULT_MODEL = "efficientnet-lite0"
#: the sample images of the commands' default run (scikit-image ships them; no download)
DEFAULT_SAMPLES = ("chelsea", "coffee", "rocket", "astronaut")

#: the scores a map explains (see :mod:`logitshift.core.scores`), and the ones a logit shift cannot move
SCORES = ("logit", "prob", "logprob", "centered", "contrast")
IMMUNE = ("prob", "logprob", "centered", "contrast")

#: the registered methods by family, in the order tables and figures list them
CAM_NAMES = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam")
INPUT_NAMES = ("saliency", "gradxinput", "ig", "smoothgrad")
ATTENTION_NAMES = ("rollout", "attngrad")
METHOD_NAMES = CAM_NAMES + INPUT_NAMES
#: the method families the audit measures: every CAM method, then saliency and gradient × input
AUDITED_NAMES = (*CAM_NAMES, "saliency", "gradxinput")

#: largest max |Δprob| a shifted model may have against the original
TOLERANCE = 1e-5
#: Integrated Gradients steps and SmoothGrad samples of every command (the shift's effect on them does not
#: depend on the count; docs/matrix.md). 16 keeps the default matrix under a minute on 2 CPU cores.
DEFAULT_STEPS = 16
#: size budget of a report's embedded figures, in MB
DEFAULT_MAX_MB = 24.0

# audit (see docs/audit.md for the calibration)
#: κ above which a model is called shifted
THRESHOLD = 3.0
DEFAULT_PROBES = 4
DEFAULT_MAX_LAYERS = 8
DEFAULT_MAX_IMAGES = 8
DEFAULT_MEMORY_GB = 8.0  # a model file is audited in a child with this budget beyond its interpreter (sandbox.py)
DEFAULT_CPU_SECONDS = 3600
