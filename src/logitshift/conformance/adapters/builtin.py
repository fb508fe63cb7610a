"""logitshift's own methods × scores (:mod:`logitshift.attribution`, :mod:`logitshift.core.scores`)."""

from __future__ import annotations

from ...attribution import METHODS, get_method
from ...core.scores import IMMUNE, SCORES, check_score
from ...shift.model import ShiftedModel
from ..explainer import Context, Explainer, adapter


def _runner(name: str, score: str, ctx: Context):
    options = {"ig": {"steps": ctx.samples}, "smoothgrad": {"samples": ctx.samples}}.get(name, {})
    method = get_method(name, **options)

    def run(model, x, classes):
        variant = "shifted" if isinstance(model, ShiftedModel) else "original"
        return method.maps(model, x, classes, score=score, variant=variant, layer=ctx.layer if method.family == "cam" else None)

    return run, method.family


@adapter("logitshift")
def explainers(ctx: Context) -> list[Explainer]:
    out = []
    for name in METHODS:
        for s in SCORES:
            run, family = _runner(name, s, ctx)
            out.append(Explainer("logitshift", name, s, "cam" if family == "cam" else "gradient", run, immune=s in IMMUNE))
    return out


def builtin_explainer(spec: str, ctx: Context) -> Explainer:
    """``method`` or ``method@score`` (default score: logit)."""
    name, _, score = spec.partition("@")
    get_method(name)
    score = check_score(score or "logit")
    run, family = _runner(name, score, ctx)
    return Explainer("logitshift", name, score, "cam" if family == "cam" else "gradient", run, immune=score in IMMUNE)
