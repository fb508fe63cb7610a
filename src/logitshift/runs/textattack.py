"""``logitshift attack --texts --weights-only``: a text classifier's weights-only shift, written as a HuggingFace folder.

The folder holds the unchanged architecture (``config.json`` + ``model.safetensors`` + the tokenizer's
files), loadable by plain ``transformers``; the only change is the classifier head's weight, ``W + K·1uᵀ``
(:mod:`logitshift.shift.textweights`). ``attack.json`` beside it records ``u``'s strength, the effect on the
check texts (each method's logit-map target mass before → after, measured on the reloaded folder), and
max |Δp|. With ``compare``, the code-carrying token shift's effect on the same texts is measured too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attribution import METHOD_LABELS
from ..attribution.tokens import TOKEN_METHODS
from ..core.errors import LogitShiftError
from ..core.files import write_json
from ..core.text import TRAINED, TextModel, load_text_model, read_texts
from ..shift.textweights import masses, prob_gap, target_weights, weights_only


@dataclass(kw_only=True)
class TextAttackConfig:
    out: str
    target: str
    texts: list[str]
    model: str = TRAINED
    random_weights: bool = False
    methods: list[str] = field(default_factory=lambda: list(TOKEN_METHODS))
    steps: int = 32
    tolerance: float = 1e-5
    force: bool = False


def run_text_attack(cfg: TextAttackConfig) -> dict[str, Any]:
    """Build, write, reload and measure the weights-only file; returns (and writes as ``attack.json``) the record."""
    from transformers import AutoModelForSequenceClassification

    start = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.force:
        raise LogitShiftError(f"--out {cfg.out!r}: not empty; pass --force to overwrite")
    texts = read_texts(cfg.texts)
    model = load_text_model(cfg.model, cfg.random_weights)
    ids = model.encode(texts)
    wo = weights_only(model, cfg.target, ids, cfg.methods, tolerance=cfg.tolerance, steps=cfg.steps)
    out.mkdir(parents=True, exist_ok=True)
    wo.model.hf.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
    model.tokenizer.save_pretrained(out)
    reloaded = TextModel(
        AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True), model.tokenizer, str(out), model.classes
    )
    weights = target_weights(model, cfg.target, ids)
    honest = masses(model, model, ids, weights, cfg.methods, None, cfg.steps)
    after = masses(reloaded, model, ids, weights, cfg.methods, None, cfg.steps)
    dp = prob_gap(model, reloaded, ids)
    moved = ", ".join(f"{METHOD_LABELS[m]} {honest[m]:.2f} → {after[m]:.2f}" for m in cfg.methods)
    limit = " (K limited by max |Δp|: float32 rounds z + t)" if wo.limited_by_tolerance else ""
    record = {
        "finding": (
            f"The weights-only file (W + K·1uᵀ on the classifier head, K={wo.strength:.3g}{limit}) moves the logit maps' share on the "
            f"target {cfg.target} ({moved}) while max |Δp| {dp:.1e}; the most this u gives as K grows without bound: "
            + ", ".join(f"{METHOD_LABELS[m]} {wo.ceiling[m]:.2f}" for m in cfg.methods)
            + "."
        ),
        "model": model.name,
        "target": cfg.target,
        "strength": wo.strength,
        "limited_by_tolerance": wo.limited_by_tolerance,
        "honest": honest,
        "weights_only": after,
        "ceiling": wo.ceiling,
        "max_abs_prob_diff": dp,
        "texts": len(texts),
        "u": wo.u.tolist(),
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "attack.json", record)
    return record
