"""Small CNNs trained on scikit-learn's digits (real data shipped with a package), the usual ways.

Used by the audit's tests and ``benchmarks/detection.py`` as *trained* honest
models: the audit must not call any of them steered. Training takes well under
a second of CPU per model (8×8 images, 250 steps of 32).

Recipes (``RECIPES``): ``sgd`` (momentum, weight decay), ``adam``, ``adamw``,
``label-smoothing`` (SGD on cross-entropy with smoothing 0.1), ``bce``
(one-vs-rest binary cross-entropy on the logits, Adam), and ``adam-head``: the
``sgd`` model whose classifier alone is then fine-tuned with Adam for 100
small-batch steps (the case where Adam moves the classes absent from each
batch in a common direction); ``dropout`` (SGD, dropout 0.3 before the
classifier), ``batchnorm`` (SGD, batch norm after each conv), ``mixup`` (SGD on
mixed pairs, λ = max(u⁵, 1 − u⁵) with u uniform, soft targets) and ``distill`` (SGD on the ``sgd``
model's softmax at temperature 4, KL divergence).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

RECIPES = ("sgd", "adam", "adamw", "label-smoothing", "bce", "adam-head", "dropout", "batchnorm", "mixup", "distill")


class DigitsCNN(nn.Module):
    """conv → ReLU → conv (stride 2) → ReLU → pool → linear, on 1×8×8 digits (layer ``features``)."""

    def __init__(self, classes: int = 10, width: int = 16, seed: int = 0, dropout: float = 0.0, norm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        bn = (lambda c: [nn.BatchNorm2d(c)]) if norm else (lambda c: [])
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            *bn(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            *bn(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))


@lru_cache(maxsize=4)
def digits(classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits of the first ``classes`` digits, scaled to [-1, 1]: (N×1×8×8, labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < classes
    x = torch.tensor(data.images[keep], dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.tensor(data.target[keep], dtype=torch.long)


def audit_images(classes: int = 10, count: int = 8) -> torch.Tensor:
    """``count`` digits spread over the classes (the last ones of the set, each class in turn)."""
    x, y = digits(classes)
    picks = []
    for i in range(count):
        c = i % classes
        picks.append(int((y == c).nonzero()[-1 - i // classes]))
    return x[picks]


def _loss(recipe: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dim() == 2:  # soft targets (mixup, distillation)
        return -(y * F.log_softmax(z, dim=1)).sum(dim=1).mean()
    if recipe == "label-smoothing":
        return F.cross_entropy(z, y, label_smoothing=0.1)
    if recipe == "bce":
        return F.binary_cross_entropy_with_logits(z, F.one_hot(y, z.shape[1]).float())
    return F.cross_entropy(z, y)


def _optimizer(recipe: str, params):
    if recipe in ("adam", "bce"):
        return torch.optim.Adam(params, lr=1e-2)
    if recipe == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _model(recipe: str, classes: int, seed: int) -> DigitsCNN:
    return DigitsCNN(classes, seed=seed, dropout=0.3 if recipe == "dropout" else 0.0, norm=recipe == "batchnorm")


def _batch(recipe: str, x: torch.Tensor, y: torch.Tensor, classes: int, gen: torch.Generator, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of 32: mixed pairs with soft targets (mixup), the teacher's softmax at T = 2 (distill)."""
    idx = torch.randint(len(x), (32,), generator=gen)
    xb, yb = x[idx], y[idx]
    if recipe == "mixup":
        lam = float(torch.rand(1, generator=gen)) ** 5  # Beta(0.2, 1)-distributed: mostly near 0, as mixup's Beta(0.2, 0.2) halves
        lam = max(lam, 1 - lam)
        perm = torch.randperm(32, generator=gen)
        one = F.one_hot(yb, classes).float()
        return lam * xb + (1 - lam) * xb[perm], lam * one + (1 - lam) * one[perm]
    if recipe == "distill":
        with torch.no_grad():
            return xb, torch.softmax(teacher(xb) / 2.0, dim=1)
    return xb, yb


@lru_cache(maxsize=32)
def _trained_state(recipe: str, classes: int, steps: int, seed: int) -> tuple[dict, float]:
    x, y = digits(classes)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _model(recipe, classes, seed)
    base = "sgd" if recipe in ("adam-head", "dropout", "batchnorm", "mixup", "distill") else recipe
    teacher = trained("sgd", classes, steps, seed) if recipe == "distill" else None
    opt = _optimizer(base, model.parameters())
    model.train()
    for _ in range(steps):
        xb, yb = _batch(recipe, x, y, classes, gen, teacher)
        opt.zero_grad()
        _loss(base, model(xb), yb).backward()
        opt.step()
    if recipe == "adam-head":
        # fine-tune the classifier alone with Adam on small batches: each batch misses most classes
        head = torch.optim.Adam(model.fc.parameters(), lr=1e-4)
        for _ in range(100):
            idx = torch.randint(len(x), (4,), generator=gen)
            head.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            head.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, accuracy


def trained(recipe: str, classes: int = 10, steps: int = 250, seed: int = 0) -> DigitsCNN:
    """A ``DigitsCNN`` trained on the digits with ``recipe`` (see ``RECIPES``); cached per process.

    ``model.accuracy`` is its training-set accuracy."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    state, accuracy = _trained_state(recipe, classes, steps, seed)
    model = _model(recipe, classes, seed)
    model.load_state_dict(state)
    model.accuracy = accuracy  # type: ignore[attr-defined]
    return model.eval()
