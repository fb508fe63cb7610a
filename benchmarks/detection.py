"""Detection benchmark for ``logitshift audit``: honest models against shifted ones.

Honest models: EfficientNet-Lite0 with its real ImageNet weights (224 px);
torchvision ``resnet18``, ``vgg11`` and ``mobilenet_v2`` with random weights
(no real weights can be had offline; 128 px to keep the run short); small
random CNNs (``tests/conftest.py::TinyCNN``, widths 4-16, 10 or 100 classes,
32 px).

Shifted models: every construction in :mod:`logitshift.shift` (``paper``,
``region`` and, when present, ``gate`` and the input-space ``InputShift``)
at several layers and strengths spanning three to four orders of magnitude,
and four shifts written here, outside the project's constructions, on a
plain forward hook (no :class:`~logitshift.shift.ShiftedModel`):

* ``tanh-norm``: ``t = K · tanh(mean A) · ‖A‖`` (a nonlinear function of an
  intermediate activation);
* ``gated``: ``t = K · σ(40 (mean x − τ)) · Σ A[:, :H/2, :W/2]`` with ``τ`` the
  median brightness of the images: switched on for some inputs only;
* ``logit-square``: ``t = K · mean_j z_j²`` (a function of the logits
  themselves);
* ``linear-head``: ``t = K · uᵀh`` with ``h`` the input of the last linear
  layer and ``u`` a random direction as long as a class row: the classifier
  weights become ``W + K·1uᵀ``, an honest linear classifier, so only κ can
  see it.

Honest models also include small CNNs whose logits read an early layer
directly (``TwoHeadCNN``), so the classifier's input is not a cut of the
graph: the bypass test must not call that a shift.

For every shifted model, "fooled" means that the Grad-CAM map (default layer)
or the saliency map of the top-1 logit has a Spearman correlation below 0.5
with the original model's map on at least one image. The benchmark reports
whether the audit flags every fooling shift, flags no honest model, and the
ROC-AUC of the audit's score (κ) for shifted vs honest over all models.

Run: ``.venv/bin/python benchmarks/detection.py`` (writes
``benchmarks/results/detection.json`` and ``.md``; ``--quick`` for a smaller
run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TinyCNN  # noqa: E402
from logitshift import shift as shift_mod  # noqa: E402
from logitshift.audit import THRESHOLD, audit_model  # noqa: E402
from logitshift.errors import LogitShiftError  # noqa: E402
from logitshift.images import DEFAULT_SAMPLES, batch, load_image  # noqa: E402
from logitshift.metrics import spearman  # noqa: E402
from logitshift.models import Preprocess, load_model, torchvision_model  # noqa: E402
from logitshift.shift import PaperShift, RegionShift, ShiftedModel, compare  # noqa: E402
from logitshift.targets import parse_target  # noqa: E402

FOOLED_BELOW = 0.5
CHANGED_BELOW = 0.9  # a shift "changes" an explanation when some map's Spearman drops below this


# ----------------------------------------------------------------------------- hand-written shifts


class HookShifted(nn.Module):
    """``base(x) + t·1`` with ``t = fn(A, x, z)`` computed in float64 from a forward hook on ``layer``.

    Written without any logitshift class, as an attacker would."""

    def __init__(self, base: nn.Module, layer: str, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.base = base
        self.layer = layer
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}
        handle = self.base.get_submodule(self.layer).register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            z = self.base(x)
        finally:
            handle.remove()
        t = self.fn(store["a"].double(), x.double(), z.double())
        return z.double() + t[:, None]


def tanh_norm(k: float):
    return lambda a, x, z: k * torch.tanh(a.mean(dim=(1, 2, 3))) * a.flatten(1).norm(dim=1)


def gated(k: float, tau: float):
    def fn(a, x, z):
        h, w = a.shape[-2:]
        on = torch.sigmoid(40.0 * (x.mean(dim=(1, 2, 3)) - tau))
        return k * on * a[:, :, : max(1, h // 2), : max(1, w // 2)].sum(dim=(1, 2, 3))

    return fn


def logit_square(k: float):
    return lambda a, x, z: k * z.pow(2).mean(dim=1)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


class LinearHeadShifted(nn.Module):
    """``base(x) + K·(uᵀh)·1`` with ``h`` the input of the last linear layer: the classifier's rows all gain ``K·u``.

    ``u`` is a random direction as long as an average class row of the weights,
    so ``K`` is the shift's size relative to a class. The shifted model *is*
    an honest linear classifier with weights ``W + K·1uᵀ``: only its size (κ)
    can give it away, no structural test can."""

    def __init__(self, base: nn.Module, k: float, seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.layer, linear = last_linear(base)
        weight = linear.weight.detach().double()
        u = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.register_buffer("u", k * u / u.norm() * weight.norm(dim=1).mean())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}
        handle = self.base.get_submodule(self.layer).register_forward_pre_hook(lambda _m, inputs: store.__setitem__("h", inputs[0]))
        try:
            z = self.base(x)
        finally:
            handle.remove()
        return z.double() + (store["h"].double().flatten(1) @ self.u)[:, None]


class TwoHeadCNN(nn.Module):
    """An honest CNN whose logits also read an early layer directly (a skip into the classifier).

    Its last linear layer's input is not a cut of the graph: the bypass test
    sees gradient go around it, for the centered gradients as much as for the
    common mode, and must not call that a shift."""

    def __init__(self, classes: int, width: int, seed: int) -> None:
        super().__init__()
        self.body = TinyCNN(classes, width, seed)
        g = torch.Generator().manual_seed(1000 + seed)
        self.skip = nn.Linear(width, classes)
        with torch.no_grad():
            for p in self.skip.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        early = self.body.features[1](self.body.features[0](x))
        skip = self.skip(early.mean(dim=(2, 3)))
        return skip + self.body.fc(torch.flatten(self.body.pool(self.body.features[3](self.body.features[2](early))), 1))


HAND = {"tanh-norm": tanh_norm, "gated": gated, "logit-square": logit_square}


# ----------------------------------------------------------------------------- models and cases


@dataclass
class Base:
    name: str
    module: nn.Module
    x: torch.Tensor
    cam_layer: str
    shift_layers: list[str]
    weights: str  # "real" or "random"


def small_bases(count: int, kind: str = "tiny") -> list[Base]:
    """``count`` small random CNNs at 32 px (widths 4/8/16, 10 or 100 classes): ``TinyCNN`` or ``TwoHeadCNN``."""
    pre = Preprocess(size=32, resize=32)
    x = batch([load_image(s, pre) for s in DEFAULT_SAMPLES])
    out = []
    for i in range(count):
        width = (4, 8, 16)[i % 3]
        classes = (10, 100)[(i // 3) % 2]
        name = f"{kind}-w{width}-c{classes}-s{i}"
        if kind == "tiny":
            out.append(Base(name, TinyCNN(classes, width, seed=i), x, "features", ["features", "features.1"], "random"))
        else:
            out.append(Base(name, TwoHeadCNN(classes, width, seed=i), x, "body.features", [], "random"))
    return out


def torchvision_base(name: str, size: int, cam: str, shift_layers: list[str]) -> Base:
    torch.manual_seed(0)  # the random weights, reproducibly
    loaded = torchvision_model(name, random_init=True)
    pre = Preprocess(size=size, resize=size)
    x = batch([load_image(s, pre) for s in DEFAULT_SAMPLES])
    return Base(f"{name}-random", loaded.module, x, cam, shift_layers, "random")


def lite0_base(images: int) -> Base:
    loaded = load_model()
    x = batch([load_image(s, loaded.preprocess) for s in DEFAULT_SAMPLES[:images]])
    return Base("efficientnet-lite0", loaded.module, x, "head", ["head", "blocks.10"], "real")


def grid_of(module: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int]:
    return shift_mod.layer_grid(module, layer, x)


def constructions(base: Base, layer: str, strength_scale: float) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    """(construction, strength, builder) for every project construction at ``layer``."""
    h, w = grid_of(base.module, layer, base.x)
    weights = parse_target("top-left", base.x.shape[-1]).weights(h, w) if h * w >= 4 else None
    out: list[tuple[str, float, Callable[[], nn.Module]]] = []
    for k in (1e-3, 1e-2, 1e-1, 1.0):
        out.append(("paper", k * strength_scale, lambda k=k: ShiftedModel(base.module, layer, PaperShift(k * strength_scale), torch.float64)))
    if weights is not None and 0 < float(weights.sum()) < weights.numel():
        for k in (1e-4, 1e-3, 1e-2, 1e-1):
            out.append(("region", k * strength_scale, lambda k=k: ShiftedModel(base.module, layer, RegionShift(k * strength_scale, weights), torch.float64)))
        gate = getattr(shift_mod, "GateShift", None)
        if gate is not None:
            for k in (1e-3, 1e-2, 1e-1, 1.0):
                out.append(("gate", k * strength_scale, lambda k=k: ShiftedModel(base.module, layer, gate(k * strength_scale, weights), torch.float64)))
    return out


def input_constructions(base: Base) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    cls = getattr(shift_mod, "InputShift", None)
    if cls is None:
        return []
    size = base.x.shape[-1]
    mask = parse_target("top-left", size).mask
    out = []
    for k in (1e-2, 1e-1, 1.0, 10.0):
        out.append(("input", k, lambda k=k: ShiftedModel(base.module, shift_mod.INPUT, cls(k, mask), torch.float64)))
    return out


def hand_shifts(base: Base, layer: str) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    tau = float(base.x.mean(dim=(1, 2, 3)).median())
    out = []
    for k in (1e-3, 1e-2, 1e-1, 1.0):
        out.append(("tanh-norm", k, lambda k=k: HookShifted(base.module, layer, tanh_norm(k))))
        out.append(("gated", k, lambda k=k: HookShifted(base.module, layer, gated(k, tau))))
    for k in (1e-3, 1e-2, 1e-1):
        out.append(("logit-square", k, lambda k=k: HookShifted(base.module, layer, logit_square(k))))
    for k in (1e-3, 1e-2, 1e-1, 1.0):
        out.append(("linear-head", k, lambda k=k: LinearHeadShifted(base.module, k)))
    return out


# ----------------------------------------------------------------------------- fooling


def logit_maps(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM at ``layer`` and saliency (max_c |∂z_c/∂x|) of the logit ``target``."""
    store: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    xg = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            z = model(xg)
    finally:
        handle.remove()
    a = store["a"]
    ga, gx = torch.autograd.grad(z.gather(1, target[:, None]).sum(), [a, xg])
    cam = torch.relu((ga.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)).detach()
    return cam, gx.abs().amax(dim=1).detach()


def fooling(base: Base, shifted: nn.Module, reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict:
    target, cam0, sal0 = reference
    cam1, sal1 = logit_maps(shifted, "base." + base.cam_layer, base.x, target)
    with torch.no_grad():
        eq = compare(base.module(base.x), shifted(base.x))
    s_cam = spearman(cam1, cam0)
    s_sal = spearman(sal1, sal0)
    return {
        "gradcam_spearman_min": float(s_cam.min()),
        "saliency_spearman_min": float(s_sal.min()),
        "fooled": bool(min(float(s_cam.min()), float(s_sal.min())) < FOOLED_BELOW),
        "changed": bool(min(float(s_cam.min()), float(s_sal.min())) < CHANGED_BELOW),
        "max_abs_prob_diff": eq.max_abs_prob_diff,
        "top1_agree": eq.top1_agree == 1.0,
    }


def audit_row(model: nn.Module, x: torch.Tensor, probes: int) -> dict:
    r = audit_model(model, x, probes=probes)
    tests = r.tests()
    return {
        "score": r.score,
        "kappa": r.kappa,
        "bypass": tests["bypass"]["ratio"] if "bypass" in tests else None,
        "head": tests["head"]["ratio"] if "head" in tests else None,
        "deciding": max(tests, key=lambda k: tests[k]["ratio"]),
        "flagged": r.shifted,
        "where": r.where,
        "disagreement_max": max(max(e.disagreement) for e in r.evidence),
    }


# ----------------------------------------------------------------------------- report


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Mann-Whitney estimate of the ROC-AUC (ties count one half)."""
    pos = np.array([s for s, l in zip(scores, labels) if l])
    neg = np.array([s for s, l in zip(scores, labels) if not l])
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


#: Constructions that are honest classifiers by construction: reported as the audit's limit, not in the headline figures.
LIMITS = ("linear-head",)


def summarize(every: list[dict], threshold: float) -> dict:
    """Headline figures over every row but the ``LIMITS`` constructions; those get their own block."""
    rows = [r for r in every if r["construction"] not in LIMITS]
    honest = [r for r in rows if not r["shifted"]]
    shifted = [r for r in rows if r["shifted"]]
    limit = [r for r in every if r["construction"] in LIMITS]
    fooling = [r for r in shifted if r["fooled"]]
    changed = [r for r in shifted if r["changed"]]
    return {
        "changing_shifts": len(changed),
        "changing_missed": sum(not r["flagged"] for r in changed),
        "roc_auc_changing_vs_honest": roc_auc([r["score"] for r in honest + changed], [False] * len(honest) + [True] * len(changed)),
        "inconsequential_flagged": sum(r["flagged"] for r in shifted if not r["changed"]),
        "honest_models": len(honest),
        "shifted_models": len(shifted),
        "fooling_shifts": len(fooling),
        "false_positives": sum(r["flagged"] for r in honest),
        "fooling_missed": sum(not r["flagged"] for r in fooling),
        "shifted_flagged": sum(r["flagged"] for r in shifted),
        "roc_auc": roc_auc([r["score"] for r in rows], [r["shifted"] for r in rows]),
        "roc_auc_fooling_vs_honest": roc_auc([r["score"] for r in honest + fooling], [False] * len(honest) + [True] * len(fooling)),
        "honest_score_max": max(r["score"] for r in honest),
        "fooling_score_min": min((r["score"] for r in fooling), default=float("nan")),
        "honest_kappa_max": max(r["kappa"] for r in honest),
        "fooling_kappa_min": min((r["kappa"] for r in fooling), default=float("nan")),
        "threshold": threshold,
        "by_test": {t: sum(r["flagged"] and r["deciding"] == t for r in shifted) for t in ("kappa", "bypass", "head")},
        "roc_auc_kappa_only": roc_auc([r["kappa"] for r in rows], [r["shifted"] for r in rows]),
        "limits": {
            "models": len(limit),
            "flagged": sum(r["flagged"] for r in limit),
            "fooling": sum(r["fooled"] for r in limit),
            "fooling_missed": sum(r["fooled"] and not r["flagged"] for r in limit),
            "changing_missed": sum(r["changed"] and not r["flagged"] for r in limit),
            "roc_auc_vs_honest": roc_auc([r["score"] for r in honest + limit], [False] * len(honest) + [True] * len(limit)),
            "roc_auc_every_row": roc_auc([r["score"] for r in every], [r["shifted"] for r in every]),
        },
    }


def per_construction(rows: list[dict]) -> list[str]:
    out = []
    names = list(dict.fromkeys(r["construction"] for r in rows if r["shifted"]))
    for name in names:
        rs = [r for r in rows if r["construction"] == name]
        changed, fooled = [r for r in rs if r["changed"]], [r for r in rs if r["fooled"]]
        decided = "/".join(str(sum(r["flagged"] and r["deciding"] == t for r in rs)) for t in ("kappa", "bypass", "head"))
        out.append(
            f"| `{name}` | {len(rs)} | {sum(r['flagged'] for r in rs)} | {len(changed)} / {sum(r['flagged'] for r in changed)} | "
            f"{len(fooled)} / {sum(r['flagged'] for r in fooled)} | {min(r['score'] for r in rs):.3g} | {decided} |"
        )
    return out


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Detection benchmark: `logitshift audit`",
        "",
        f"Generated by `benchmarks/detection.py` on {result['machine']} in {result['seconds']:.0f} s wall"
        + (f" ({result['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in result else "")
        + " "
        f"(torch {result['torch']}, {result['threads']} threads). Score: max(κ / {s['threshold']:g}, bypass ratio, head ratio) "
        f"(`logitshift.audit`); above 1 the audit says *shifted*. A shift *fools* when the top-1 logit's Grad-CAM "
        f"(default layer) or saliency map has Spearman < {FOOLED_BELOW} against the original's on some image.",
        "",
        "| | value |",
        "|---|---|",
        f"| honest models | {s['honest_models']} |",
        f"| shifted models | {s['shifted_models']} (of which fooling: {s['fooling_shifts']}) |",
        f"| honest models flagged (false positives) | {s['false_positives']} |",
        f"| fooling shifts missed | {s['fooling_missed']} |",
        f"| shifted models flagged | {s['shifted_flagged']} / {s['shifted_models']} |",
        f"| ROC-AUC, all shifted vs honest | {s['roc_auc']:.4f} |",
        f"| ROC-AUC, fooling shifts vs honest | {s['roc_auc_fooling_vs_honest']:.4f} |",
        f"| shifts that change a map (Spearman < {CHANGED_BELOW}) | {s['changing_shifts']}, missed {s['changing_missed']} |",
        f"| ROC-AUC, map-changing shifts vs honest | {s['roc_auc_changing_vs_honest']:.4f} |",
        f"| shifts that change no map (all Spearman ≥ {CHANGED_BELOW}) flagged | {s['inconsequential_flagged']} / {s['shifted_models'] - s['changing_shifts']} |",
        f"| largest score of an honest model | {s['honest_score_max']:.3g} |",
        f"| smallest score of a fooling shift | {s['fooling_score_min']:.3g} |",
        f"| largest κ of an honest model / smallest κ of a fooling shift | {s['honest_kappa_max']:.3g} / {s['fooling_kappa_min']:.3g} |",
        f"| flagged shifts decided by κ / bypass / head | {s['by_test']['kappa']} / {s['by_test']['bypass']} / {s['by_test']['head']} |",
        f"| ROC-AUC with κ alone (no structural test) | {s['roc_auc_kappa_only']:.4f} |",
        "",
        "## Per construction",
        "",
        "| construction | models | flagged | change a map (ρ < 0.9) / flagged | fool (ρ < 0.5) / flagged | smallest score | decided by κ / bypass / head |",
        "|---|---:|---:|---:|---:|---:|---|",
        *per_construction(result["rows"]),
        "",
        "## Limit: a linear shift of the classifier's input",
        "",
        "`linear-head` (``t = K·uᵀh``) turns the classifier weights into ``W + K·1uᵀ``: the shifted model *is* an honest "
        "linear classifier, so no test of the function can single it out; only its size (κ) can. These rows are not in "
        "the figures above.",
        "",
        "| | value |",
        "|---|---|",
        f"| `linear-head` models flagged | {s['limits']['flagged']} / {s['limits']['models']} |",
        f"| of them fooling, missed | {s['limits']['fooling_missed']} of {s['limits']['fooling']} |",
        f"| of them changing a map (Spearman < {CHANGED_BELOW}), missed | {s['limits']['changing_missed']} |",
        f"| ROC-AUC, `linear-head` vs honest | {s['limits']['roc_auc_vs_honest']:.4f} |",
        f"| ROC-AUC, every row of this benchmark (`linear-head` included) | {s['limits']['roc_auc_every_row']:.4f} |",
        "",
        "## Honest models",
        "",
        "| model | weights | score | κ | bypass | head | evidence at | max 1−Spearman (logit vs centered) |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]

    def ratio(v) -> str:
        return "–" if v is None else f"{v:.3g}"

    for r in result["rows"]:
        if not r["shifted"]:
            lines.append(
                f"| {r['model']} | {r['weights']} | {r['score']:.3g} | {r['kappa']:.3g} | {ratio(r['bypass'])} | {ratio(r['head'])} | {r['where']} | {r['disagreement_max']:.3f} |"
            )
    lines += [
        "",
        "## Shifted models",
        "",
        "| model | construction | layer | K | score | κ | bypass | head | flagged | fooled | Grad-CAM ρ min | saliency ρ min | max Δp |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["shifted"]:
            lines.append(
                f"| {r['model']} | {r['construction']} | {r['layer']} | {r['strength']:g} | {r['score']:.3g} | {r['kappa']:.3g} | "
                f"{ratio(r['bypass'])} | {ratio(r['head'])} | "
                f"{'yes' if r['flagged'] else 'no'} | {'yes' if r['fooled'] else 'no'} | {r['gradcam_spearman_min']:.2f} | "
                f"{r['saliency_spearman_min']:.2f} | {r['max_abs_prob_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def run(quick: bool, probes: int, progress: bool = True) -> dict:
    from tqdm import tqdm

    start, cpu = time.perf_counter(), time.process_time()
    bases: list[Base] = small_bases(4 if quick else 30)
    honest_only: list[Base] = small_bases(2 if quick else 12, "twohead")
    if not quick:
        bases.append(torchvision_base("resnet18", 128, "layer4", ["layer4", "layer2"]))
        honest_only += [torchvision_base("vgg11", 128, "features.19", []), torchvision_base("mobilenet_v2", 128, "features", [])]
        bases.append(lite0_base(2))
    jobs: list[tuple[Base, str, str, float, Callable[[], nn.Module] | None]] = []
    for b in bases + honest_only:
        jobs.append((b, "honest", "", 0.0, None))
    for b in bases:
        shift_layers = b.shift_layers if not b.name.startswith("tiny") or int(b.name.split("-s")[-1]) < 4 else []
        for layer in shift_layers:
            for cons, k, build in constructions(b, layer, 1.0):
                jobs.append((b, cons, layer, k, build))
        if shift_layers:
            for cons, k, build in hand_shifts(b, shift_layers[-1]):
                jobs.append((b, cons, shift_layers[-1], k, build))
            for cons, k, build in input_constructions(b):
                jobs.append((b, cons, "input", k, build))
    references: dict[str, tuple] = {}
    rows = []
    for b, cons, layer, k, build in tqdm(jobs, desc="detection", unit="model", disable=not progress, file=sys.stderr):
        row = {"model": b.name, "weights": b.weights, "construction": cons, "layer": layer, "strength": k, "shifted": build is not None}
        if build is None:
            row.update(audit_row(b.module, b.x, probes))
        else:
            if b.name not in references:
                with torch.no_grad():
                    target = b.module(b.x).argmax(dim=1)
                references[b.name] = (target, *logit_maps(b.module, b.cam_layer, b.x, target))
            try:
                shifted = build()
                row.update(fooling(b, shifted, references[b.name]))
            except LogitShiftError as exc:
                row["skipped"] = str(exc)
                rows.append(row)
                continue
            row.update(audit_row(shifted, b.x, probes))
        rows.append(row)
    kept = [r for r in rows if "skipped" not in r]
    return {
        "summary": summarize(kept, THRESHOLD),
        "rows": kept,
        "skipped": [r for r in rows if "skipped" in r],
        "probes": probes,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "machine": f"{platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only (seconds)")
    parser.add_argument("--probes", type=int, default=None, help="audit probes (default: the audit's default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for detection.json and detection.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from logitshift.audit import DEFAULT_PROBES

    result = run(args.quick, args.probes or DEFAULT_PROBES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "detection-quick" if args.quick else "detection"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result).split("## Honest")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
