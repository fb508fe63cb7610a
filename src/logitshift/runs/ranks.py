"""``logitshift evaluate`` under ``torchrun``: each rank's place, device and process group.

``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment (0, 1, 0 without torchrun); gloo on CPU,
NCCL on GPU; rank 0's strength and head on every rank.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from ..core.device import resolve_device
from ..core.models import LoadedModel
from ..shift.model import ShiftedModel, ShiftSetup
from ..shift.steer import steer_setup


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment torchrun sets (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def rank_device(name: str, local_rank: int) -> torch.device:
    return resolve_device(name, local_rank)


def init_dist(world: int, device: torch.device) -> bool:
    """Join the process group (gloo on CPU, NCCL on GPU); True if this call created it."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def same_shift_on_every_rank(
    shifted: ShiftedModel, loaded: LoadedModel, cfg: ShiftSetup, check: torch.Tensor, method_options: dict | None
) -> ShiftedModel:
    """Rank 0's strength and head on every rank (threads differ per rank, so an automatic search may round apart)."""
    import torch.distributed as dist

    assert shifted.steering is not None  # set by steer()
    mine: list[Any] = [shifted.steering.strength, shifted.head_dtype == torch.float64]
    chosen = list(mine)
    dist.broadcast_object_list(chosen, src=0)
    if chosen == mine:
        return shifted
    setup = replace(cfg, strength=chosen[0], float64_head=chosen[1])
    return steer_setup(loaded, setup, list(shifted.steering.methods), check, method_options=method_options)
