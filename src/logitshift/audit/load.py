"""A model to audit, from a name or from a file someone else made (checked before torch reads it)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from ..core.capture import first_line
from ..core.errors import LogitShiftError

# ----------------------------------------------------------------------------- loading


def load_file(path: str | Path) -> tuple[nn.Module, bool]:
    """A model from a file someone else made: a ``torch.export`` program (``.pt2``), checked by
    :mod:`logitshift.audit.safeload` before torch reads it. Returns the module and whether its layers can be hooked.

    TorchScript is refused: ``torch.jit.load`` runs code stored in the file
    (``__setstate__``) and its ``forward`` is code too, and no check of ours
    makes that safe. Pickled models are never loaded.
    """
    from .safeload import load_module

    path = Path(path)
    if not path.is_file():
        raise LogitShiftError(f"model file {str(path)!r}: not found")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise LogitShiftError(f"model file {str(path)!r}: cannot be read ({exc.strerror or exc})") from None
    if not is_zip:
        raise LogitShiftError(
            f"model file {str(path)!r}: not a torch.export (.pt2) archive (a pickled state dict? "
            "audit it as MODEL --weights FILE; pickled models are never loaded)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise LogitShiftError(f"model file {str(path)!r}: not a readable zip archive ({first_line(exc)})") from None
    if not any(n.endswith("/archive_format") for n in names):
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            raise LogitShiftError(
                f"model file {str(path)!r}: TorchScript is not loaded, because torch.jit.load runs code stored in the file; "
                "send a .pt2 written by torch.export.save, or a state dict (.safetensors) with the model's name or factory"
            )
        raise LogitShiftError(
            f"model file {str(path)!r}: not a torch.export (.pt2) program (a pickled torch.save file? audit a state dict "
            "as MODEL --weights FILE; pickled models are never loaded)"
        )
    return load_module(path), True


def is_model_file(spec: str) -> bool:
    """Whether ``spec`` names a file (audited in a limited child) rather than a model name."""
    path = Path(spec)
    return path.suffix in (".pt2", ".pt", ".pth", ".jit", ".ts", ".zip", ".json", ".safetensors") or path.is_file()


def load_target(spec: str, weights: str | None = None, **model: Any):
    """``(module, preprocess, hookable, name)`` for a model name (as in ``load_model``) or a model file.

    Files: a ``torch.export`` program (``.pt2``, checked by :mod:`logitshift.audit.safeload`), or the
    safetensors + JSON pair that ``logitshift attack`` writes (rebuilt with
    :func:`logitshift.shift.save.load_shifted`). The preprocessing is the recorded
    model's when a JSON beside the file names it, else ImageNet mean/std at 224 px. ``model``: the
    :func:`~logitshift.core.models.load_model` options of a model name (``num_classes``, ``class_names``, ``random_weights``).
    """
    from ..core.models import load_model, prepare

    path = Path(spec)
    if not is_model_file(spec):
        loaded = load_model(spec, weights, **model)
        return loaded.module, loaded.preprocess, True, loaded.name
    if weights is not None:
        raise LogitShiftError(f"--weights {weights!r}: only for a model name; {spec!r} is a file with its own weights")
    given = [k for k, v in model.items() if v]
    if given:
        flag = "--" + given[0].replace("_", "-").replace("class-names", "classes")
        raise LogitShiftError(f"{flag}: only for a model name; {spec!r} is a file that records its own model")
    if path.suffix in (".json", ".safetensors"):
        from ..shift.save import load_shifted

        shifted = load_shifted(path)
        return prepare(shifted), _recorded_preprocess(path.with_suffix(".json")), True, path.name
    module, hookable = load_file(path)
    if hookable:
        prepare(module)
    return module, _recorded_preprocess(path.with_suffix(".json")), hookable, path.name


def _recorded_preprocess(sidecar: Path):
    """The preprocessing of the model named in ``sidecar`` (a JSON written beside an export), if any."""
    import json

    from ..core.models import Preprocess, load_model

    try:
        meta = json.loads(sidecar.read_text())
    except Exception:  # no sidecar, not JSON: the ImageNet default
        return Preprocess()
    recorded = meta.get("preprocess") if isinstance(meta, dict) else None
    if isinstance(recorded, dict):  # written by `attack` since issue 17: no model needs loading
        return checked_preprocess(recorded, f"sidecar {str(sidecar)!r}")
    try:
        name = meta.get("model") if isinstance(meta, dict) else None
        if isinstance(name, str) and ":" not in name:  # never import code named by a file
            return load_model(name).preprocess
    except Exception:  # model not loadable here: the ImageNet default
        pass
    return Preprocess()


def _shown(value) -> str:
    import json

    return json.dumps(value, default=str)[:60]


MAX_SIZE = 4096  # pixels: the largest input side a recorded preprocess may ask for


def checked_preprocess(recorded: dict, where: str):
    """A recorded ``preprocess`` (``size``, ``resize``, ``mean``, ``std``), validated: whole numbers
    8 ≤ size ≤ resize ≤ :data:`MAX_SIZE`, three finite means, three finite stds > 0 (a std of 0 makes every
    input infinite, and an audit of infinite inputs concludes nothing). Anything else: one line naming the field."""
    from ..core.models import Preprocess

    def whole(key: str, low: int) -> int:
        v = recorded.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_SIZE:
            raise LogitShiftError(f"{where}: preprocess.{key} is {_shown(v)}; expected a whole number from {low} to {MAX_SIZE}")
        return v

    def three(key: str, positive: bool) -> tuple[float, float, float]:
        v = recorded.get(key)
        numbers = [e for e in v if isinstance(e, (int, float)) and not isinstance(e, bool)] if isinstance(v, list) else []
        if len(numbers) != 3 or len(v or []) != 3 or not all(math.isfinite(e) and (e > 0 or not positive) for e in numbers):
            need = "three finite numbers > 0" if positive else "three finite numbers"
            raise LogitShiftError(f"{where}: preprocess.{key} is {_shown(v)}; expected {need} (one per RGB channel)")
        return (float(numbers[0]), float(numbers[1]), float(numbers[2]))

    size = whole("size", 8)
    return Preprocess(size=size, resize=whole("resize", size), mean=three("mean", False), std=three("std", True))
