"""Tabular models: MLPs trained here, in seconds, on scikit-learn's bundled data sets (no download).

=====================  ================================  ========================
``--model``            data (scikit-learn, offline)      rows × features → classes
=====================  ================================  ========================
``breast-cancer-mlp``  ``load_breast_cancer``            569 × 30 → 2
``wine-mlp``           ``load_wine``                     178 × 13 → 3
=====================  ================================  ========================

Each data set is split 75 / 25 (stratified, ``random_state=0``); the model's
input is a row standardised with the training split's mean ``μ`` and
standard deviation ``σ`` (``x = (row − μ) / σ``: the role an image's
normalisation plays), so the training mean is the zero vector. The MLP is
``F → 32 → ReLU → 32 → ReLU → K`` (layer ``hidden`` is the last ReLU),
trained full-batch with Adam (lr 0.01, weight decay 1e-4, 300 steps, seed 0):
the same weights on every run on one machine, test accuracy reported by
:attr:`TabularModel.accuracy`.

Inputs (:func:`load_rows`): a CSV file of raw rows (a header naming the data
set's features in any order, or no header and one value per feature, in the
data set's order), or ``test`` / ``test:N`` (the held-out rows).
Targets (:func:`feature_target`): ``features:NAME,NAME`` or
``features:0,3`` (indices); the attacker's features as a 1×F mask, so the
image code's maps-and-masks measures (share of positive attribution mass in
the target) read feature attributions as 1×F maps.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import LogitShiftError
from .loaded import LoadedModel
from .targets import Target

#: --model name -> scikit-learn loader name
MODELS = {"breast-cancer-mlp": "load_breast_cancer", "wine-mlp": "load_wine"}
HIDDEN = 32
STEPS = 300
SEED = 0


@dataclass(frozen=True)
class TabularData:
    """A data set split for training: raw rows (float64) and labels."""

    name: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.x_train.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.x_train.std(axis=0).clip(min=1e-12)

    def standardize(self, rows: np.ndarray) -> torch.Tensor:
        """``(row − μ) / σ`` as float32, N×F."""
        return torch.as_tensor((np.asarray(rows, dtype=np.float64) - self.mean) / self.std, dtype=torch.float32)


@functools.cache
def dataset(model_name: str) -> TabularData:
    """The data set behind a tabular ``--model`` name, split 75/25 (stratified, random_state 0)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if model_name not in MODELS:
        raise LogitShiftError(f"tabular model {model_name!r}: unknown; expected one of {', '.join(MODELS)}")
    bunch = getattr(datasets, MODELS[model_name])()
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=0.25, random_state=SEED, stratify=bunch.target)
    return TabularData(
        model_name.removesuffix("-mlp"),
        tuple(str(f) for f in bunch.feature_names),
        tuple(str(c) for c in bunch.target_names),
        x_tr.astype(np.float64),
        y_tr.astype(np.int64),
        x_te.astype(np.float64),
        y_te.astype(np.int64),
    )


class MLP(nn.Module):
    """``F → 32 → ReLU → 32 → ReLU (hidden) → K``."""

    def __init__(self, features: int, classes: int, width: int = HIDDEN) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def train(data: TabularData, steps: int = STEPS, seed: int = SEED) -> MLP:
    """Full-batch Adam (lr 0.01, weight decay 1e-4) on the standardised training split, cross-entropy."""
    g = torch.Generator().manual_seed(seed)
    model = MLP(len(data.features), len(data.classes))
    with torch.no_grad():
        for p in model.parameters():  # initialised from our own generator: independent of the global seed
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / max(p.shape[-1], 1) ** 0.5)
    x, y = data.standardize(data.x_train), torch.as_tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model: nn.Module, data: TabularData) -> float:
    """Share of the held-out rows classified correctly."""
    with torch.no_grad():
        pred = model(data.standardize(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


@dataclass
class TabularModel(LoadedModel):
    """A tabular classifier: its data set (feature names, standardisation) and held-out accuracy."""

    data: TabularData | None = None
    accuracy: float = 0.0
    features: tuple[str, ...] = field(default_factory=tuple)


@functools.cache
def _trained(name: str) -> tuple[MLP, float]:
    data = dataset(name)
    model = train(data)
    return model, accuracy(model, data)


def tabular_model(name: str) -> TabularModel:
    """A bundled tabular model by ``--model`` name, trained on first use (seconds) and kept for the process."""
    data = dataset(name)
    module, acc = _trained(name)
    return TabularModel(
        module, name, "hidden", num_classes=len(data.classes), class_names=data.classes, data=data, accuracy=acc, features=data.features
    )


def is_tabular(name: str) -> bool:
    return name in MODELS


def load_rows(spec: str, data: TabularData) -> tuple[torch.Tensor, list[str]]:
    """(standardised N×F rows, a name per row) from ``test``, ``test:N`` or a CSV file of raw rows."""
    if spec == "test" or spec.startswith("test:"):
        n = len(data.x_test)
        if spec.startswith("test:"):
            try:
                n = int(spec[5:])
            except ValueError:
                raise LogitShiftError(f"rows {spec!r}: expected test:N with N a number of rows") from None
            if not 0 < n <= len(data.x_test):
                raise LogitShiftError(f"rows {spec!r}: {data.name} has {len(data.x_test)} held-out rows, asked for {n}")
        return data.standardize(data.x_test[:n]), [f"test row {i}" for i in range(n)]
    if not os.path.isfile(spec):
        raise LogitShiftError(f"rows {spec!r}: no such CSV file (or 'test' / 'test:N' for the held-out rows)")
    with open(spec, newline="") as fh:
        table = [row for row in csv.reader(fh) if row]
    if not table:
        raise LogitShiftError(f"rows {spec!r}: the file is empty; expected one row of {len(data.features)} feature values per line")
    header = [h.strip() for h in table[0]]
    order = list(range(len(data.features)))
    if set(header) & set(data.features):
        missing = [f for f in data.features if f not in header]
        if missing:
            raise LogitShiftError(f"rows {spec!r}: the header lacks feature(s) {', '.join(missing[:3])} of {data.name}")
        order = [header.index(f) for f in data.features]
        table = table[1:]
    rows = []
    for i, row in enumerate(table, start=1):
        try:
            values = [float(row[j]) for j in order]
        except (ValueError, IndexError):
            raise LogitShiftError(f"rows {spec!r}: row {i} is not {len(data.features)} numbers") from None
        rows.append(values)
    if not rows:
        raise LogitShiftError(f"rows {spec!r}: a header and no rows")
    return data.standardize(np.asarray(rows)), [f"row {i}" for i in range(1, len(rows) + 1)]


def feature_target(spec: str, model: TabularModel) -> Target:
    """``features:NAME,NAME`` or ``features:I,J`` as a 1×F mask; a corner name (the image default) picks the
    two features the model's first layer weighs least (the attacker's natural choice: features it does not use)."""
    names = model.features
    text = str(spec).strip()
    mask = torch.zeros(1, len(names))
    if not text.startswith("features:"):
        if any(c in text for c in (",", "/", ".")) or text not in ("top-left", "top-right", "bottom-left", "bottom-right", "center"):
            raise LogitShiftError(f"target {text!r}: a tabular model's target is features:NAME,NAME or features:I,J")
        first = next(m for m in model.module.modules() if isinstance(m, nn.Linear))
        least = first.weight.detach().norm(dim=0).argsort()[:2]
        mask[0, least] = 1.0
        return Target(mask, "features:" + ",".join(names[int(i)] for i in sorted(least.tolist())))
    for item in text[len("features:") :].split(","):
        item = item.strip()
        if item.isdigit() and int(item) < len(names):
            mask[0, int(item)] = 1.0
        elif item in names:
            mask[0, names.index(item)] = 1.0
        else:
            raise LogitShiftError(f"target {text!r}: {item!r} is not a feature of {model.name} (names or indices 0–{len(names) - 1})")
    if float(mask.sum()) == 0 or float(mask.sum()) == len(names):
        raise LogitShiftError(f"target {text!r}: must name some but not all of the {len(names)} features")
    return Target(mask, text)


__all__ = [
    "MLP",
    "MODELS",
    "TabularData",
    "TabularModel",
    "accuracy",
    "dataset",
    "feature_target",
    "is_tabular",
    "load_rows",
    "tabular_model",
    "train",
]
