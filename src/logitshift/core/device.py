"""Where a command runs: ``--device auto|cpu|cuda``.

:func:`resolve_device` turns the flag into a ``torch.device`` (``auto``: the
first CUDA device when one is available, else the CPU) and refuses ``cuda``
on a machine without one, with a one-line error. Code below the commands is
device-correct by construction: new tensors are made on the device of the
tensors they combine with (``torch.zeros(..., device=x.device)``,
``weights.to(act)``) and go through ``.cpu()`` before NumPy; a model is moved
with :func:`to_device`.

Example::

    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import LogitShiftError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto", index: int = 0) -> torch.device:
    """The device named by ``--device`` (``index``: which CUDA device, e.g. the local rank)."""
    if name not in DEVICES:
        raise LogitShiftError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise LogitShiftError("--device cuda: no CUDA device is available on this machine (use --device cpu or auto)")
        return torch.device("cuda", index)
    return torch.device("cpu")


def model_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def to_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` moved to ``device`` (in place, as ``nn.Module.to``); returns it."""
    return module.to(device)


__all__ = ["DEVICES", "model_device", "resolve_device", "to_device"]
