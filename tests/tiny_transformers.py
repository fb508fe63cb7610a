"""Small vision transformers with random weights (torchvision's own classes, few layers) for fast tests."""

from __future__ import annotations

import torch
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from logitshift.core.models import _randomize_zero_heads, prepare


def tiny_vit(classes: int = 10, seed: int = 0) -> VisionTransformer:
    """A ViT for 64×64 inputs, patch 8 (an 8×8 grid plus a class token), 2 blocks, width 32 — random weights."""
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=classes)
    _randomize_zero_heads(model)  # torchvision starts a ViT's head at zero: every class would tie
    return prepare(model)


def tiny_swin(classes: int = 10, seed: int = 0) -> SwinTransformer:
    """A Swin for 64×64 inputs: patch 4, two stages (16×16 then 8×8 windows of 4), width 16 — random weights."""
    torch.manual_seed(seed)
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=classes
    )
    return prepare(model)


def images(n: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def loaded_tiny_vit():
    """A factory for ``--model tiny_transformers:loaded_tiny_vit``: a LoadedModel with a 64-pixel input (not 224)."""
    from logitshift.core.models import LoadedModel, Preprocess

    return LoadedModel(tiny_vit(), "tiny-vit", "", Preprocess(size=64, resize=72), num_classes=10)
