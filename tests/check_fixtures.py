"""A tiny model and user explainers for ``logitshift check`` tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from logitshift.core.models import LoadedModel, Preprocess

SIZE = 64


class Small(nn.Module):
    """conv → ReLU → conv → ReLU (layer ``features``, 16×16 grid of 32 channels) → pool → linear, random weights."""

    def __init__(self, classes: int = 10, width: int = 32, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.eval()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def small() -> LoadedModel:
    return LoadedModel(Small(), "small", "features", Preprocess(size=SIZE, resize=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), 10)


def saliency(model, x, classes):
    """|∂z_c/∂x|, max over channels: reads the logit."""
    x = x.detach().clone().requires_grad_(True)
    z = model(x)
    (g,) = torch.autograd.grad(z.gather(1, classes[:, None]).sum(), x)
    return g.abs().amax(dim=1)


def centered_saliency(model, x, classes):
    """|∂(z_c − mean z)/∂x|: immune."""
    x = x.detach().clone().requires_grad_(True)
    z = model(x)
    s = z.gather(1, classes[:, None]).squeeze(1) - z.mean(dim=1)
    (g,) = torch.autograd.grad(s.sum(), x)
    return g.abs().amax(dim=1)


NOT_CALLABLE = 3
