"""Small CNNs trained on scikit-learn's digits (real data shipped with a package), the usual ways.

Used by the audit's tests and ``benchmarks/detection.py`` as *trained* honest
models: the audit must not call any of them steered. Training takes well under
a second of CPU per model (8×8 images, 250 steps of 32).

Recipes (``RECIPES``): ``sgd`` (momentum, weight decay), ``adam``, ``adamw``,
``label-smoothing`` (SGD on cross-entropy with smoothing 0.1), ``bce``
(one-vs-rest binary cross-entropy on the logits, Adam), and ``adam-head``: the
``sgd`` model whose classifier alone is then fine-tuned with Adam for 100
small-batch steps (the case where Adam moves the classes absent from each
batch in a common direction).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

RECIPES = ("sgd", "adam", "adamw", "label-smoothing", "bce", "adam-head")


class DigitsCNN(nn.Module):
    """conv → ReLU → conv (stride 2) → ReLU → pool → linear, on 1×8×8 digits (layer ``features``)."""

    def __init__(self, classes: int = 10, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


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


@lru_cache(maxsize=32)
def _trained_state(recipe: str, classes: int, steps: int, seed: int) -> tuple[dict, float]:
    x, y = digits(classes)
    gen = torch.Generator().manual_seed(seed)
    model = DigitsCNN(classes, seed=seed)
    base = "sgd" if recipe == "adam-head" else recipe
    opt = _optimizer(base, model.parameters())
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (32,), generator=gen)
        opt.zero_grad()
        _loss(base, model(x[idx]), y[idx]).backward()
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
    model = DigitsCNN(classes, seed=seed)
    model.load_state_dict(state)
    model.accuracy = accuracy  # type: ignore[attr-defined]
    return model.eval()
