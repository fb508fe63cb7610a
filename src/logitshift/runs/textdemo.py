"""``logitshift demo --texts``: the blind spot on a text classifier's token attributions.

Loads the text model (``fortunes-bert`` trained here on first use, a local HuggingFace folder, or
``--random-weights FAMILY``), builds the token shift (:func:`~logitshift.shift.steer.steer_tokens`,
automatic strength, checked on the texts and the stress inputs), then draws for each text its tokens
coloured by saliency, gradient × input and IG on the embeddings: the original and the shifted model's
logit maps and the shifted model's prob map (immune). Writes one PNG per text and ``summary.json``
(per method: honest and shifted logit-map target mass, least Spearman of the prob / centered maps,
max |Δp|); ``finding`` states the result with its numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attribution import METHOD_LABELS
from ..attribution.tokens import TOKEN_METHODS, token_maps
from ..core.files import check_out, provenance, run_dir, write_json
from ..core.metrics import target_mass
from ..core.text import TRAINED, load_text_model, read_texts
from ..shift.tokens import steer_tokens, token_effect
from ..view.tokens import TokenRow, token_figure

#: the texts the demo explains when none are given (every one holds "the" and tokens at 1–2)
DEFAULT_TEXTS = (
    "The computer is down again and the network is slow.",
    "The people will vote for the candidate who promises the least.",
    "Love is the answer, but what was the question?",
)


@dataclass(kw_only=True)
class TextDemoConfig:
    model: str = TRAINED
    random_weights: bool = False
    texts: list[str] = field(default_factory=lambda: list(DEFAULT_TEXTS))
    target: str = "pos:1-2"
    methods: list[str] = field(default_factory=lambda: list(TOKEN_METHODS))
    strength: float | str = "auto"
    goal: float = 0.5
    steps: int = 32
    out: str = "runs/demo-text"
    force: bool = False
    figures: bool = True


def finding(target: str, k: float, effects: list, dp: float, stress_dp: float) -> str:
    """The result in one sentence, numbers first."""
    moved = ", ".join(f"{METHOD_LABELS[e.method]} {e.honest_mass:.2f} → {e.shifted_mass:.2f}" for e in effects)
    rho = min(min(e.spearman.values()) for e in effects)
    return (
        f"The token shift (K={k:.3g}, target {target}) moves the logit maps' share on the target tokens ({moved}) while max |Δp| "
        f"{max(dp, stress_dp):.1e} (texts and stress inputs); the prob and centered maps are unchanged (min ρ {rho:.4f})."
    )


def run_text_demo(cfg: TextDemoConfig) -> dict[str, Any]:
    """Run the text demo; the summary is also written to ``cfg.out/summary.json``."""
    start = time.perf_counter()
    check_out(cfg.out, cfg.force)
    texts = read_texts(cfg.texts)
    model = load_text_model(cfg.model, cfg.random_weights)
    ids = model.encode(texts)
    shifted = steer_tokens(model, cfg.target, ids, cfg.methods, cfg.strength, goal=cfg.goal, steps=cfg.steps)
    effects = token_effect(model, shifted, ids, cfg.methods, steps=cfg.steps)
    maps = token_maps(shifted, model, ids, cfg.methods, ["logit", "prob"], ("original", "shifted"), steps=cfg.steps)
    s = shifted.steering
    assert s is not None  # steer_tokens always records what it built
    out = run_dir(cfg.out, cfg.force)
    term = shifted.shifts[0]
    results = []
    for i, t in enumerate(ids):
        w = term.weights(model.embed(t))[0].cpu().numpy()  # type: ignore[operator]
        figure = None
        if cfg.figures:
            rows = [
                TokenRow(
                    f"{METHOD_LABELS[m]} · {variant} · {score}",
                    maps.maps[(m, score, variant)][i].cpu().numpy(),
                    m != "saliency",
                    f"mass {float(target_mass(maps.maps[(m, score, variant)][i][None, None].cpu(), torch.from_numpy(w)[None])[0]):.2f}",
                )
                for m in cfg.methods
                for variant, score in (("original", "logit"), ("shifted", "logit"), ("shifted", "prob"))
            ]
            title = f"{model.name}: class {model.classes[maps.targets[i]]!r}; outlined: the target ({cfg.target}); each row scaled to its own max |value|"
            figure = token_figure(out / f"text{i + 1:02d}.png", maps.tokens[i], rows, w, title)
        results.append(
            {
                "text": texts[i],
                "tokens": maps.tokens[i],
                "class": model.classes[maps.targets[i]],
                "target_tokens": w.tolist(),
                "figure": figure,
            }
        )
    summary = {
        "finding": finding(s["target"], s["strength"]["input"], effects, s["max_abs_prob_diff"], s["stress"]["max_abs_prob_diff"]),
        "model": model.name,
        "model_info": model.info,
        "steering": s.to_json(),
        "effects": [e.__dict__ for e in effects],
        "results": results,
        "seconds": time.perf_counter() - start,
        "provenance": provenance(),
    }
    write_json(out / "summary.json", summary)
    return summary
