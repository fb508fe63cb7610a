"""``logitshift attack``: write a shifted model to files, for red-teaming an explanation pipeline.

Two forms:

* **A ``torch.export`` program** (``.pt2``), which plain PyTorch loads with
  logitshift not installed. Load it, like any ``.pt2`` you did not make
  yourself, with the standalone checked loader ``logitshift/safeload.py``
  (standard library + torch only: copy the file next to your code)::

      from safeload import load_module            # or: from logitshift.audit.safeload import load_module
      model = load_module("shifted.pt2")          # checked, then torch.export.load + unflatten
      layer = model.get_submodule("base.head")    # hookable by Captum / pytorch-grad-cam

  ``torch.export.load`` on its own runs code from a hostile file (see
  :mod:`logitshift.audit.safeload`); the files written here hold no pickle (the
  program is saved with ``example_inputs`` cleared, so the ``sample_inputs``
  member is empty and no check image is embedded) and pass the checked loader,
  which is also how the export is verified before it is moved into place.

  Why ``torch.export`` and not TorchScript (measured with torch 2.14, Captum
  0.9, pytorch-grad-cam 1.5.7 on EfficientNet-Lite0): a loaded TorchScript
  module refuses forward hooks ("not supported on
  ScriptModules"), and both Captum's ``LayerGradCam`` and every
  pytorch-grad-cam CAM hook the layer they explain, so neither runs on it;
  and ``torch.jit.load`` runs code stored in the file.
  ``torch.export.unflatten`` rebuilds the submodules as hookable modules;
  both libraries run on it unchanged (``tests/test_export.py`` runs them in a
  fresh interpreter that never imports logitshift, loading with a copy of
  ``safeload.py``). The program is traced once with a dynamic batch
  dimension; the flat ``ep.module()`` also runs but has no submodules to hook
  and refuses ``.eval()``. The file also carries ``logitshift.json``
  (``extra_files``): the dotted path of the CAM layer inside the unflattened
  module, and the input size.
* **safetensors + JSON** (``.safetensors`` and ``.json``), which
  :func:`load_shifted` turns back into a :class:`~logitshift.shift.model.ShiftedModel`:
  the JSON names the base model (rebuilt with :func:`~logitshift.core.models.load_model`)
  and each shift term's kind, layer and numbers; the safetensors file holds
  the terms' tensors (target weights, offsets). Nothing is pickled.

Either way the export is checked before any file is left in place: the
reloaded model's probabilities must equal the original's within the tolerance
(1e-5) with identical top-1 classes on the check images, or the export is
refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..core.errors import LogitShiftError
from ..core.files import atomic_write, write_json
from ..core.models import load_model
from .model import FitShift, GateShift, InputShift, PaperShift, RegionShift, ShiftedModel
from .steering import Steering

FORMAT = "logitshift-shifted-model"
VERSION = 1
META_NAME = "logitshift.json"


# ----------------------------------------------------------------------------- safetensors + JSON


def describe_terms(shifted: ShiftedModel) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Each term as a JSON-able dict, and its tensors keyed ``terms.<i>.<name>``."""
    terms, tensors = [], {}
    for i, (layer, term) in enumerate(zip(shifted.layers, shifted.shifts)):
        if isinstance(term, GateShift):
            d = {"kind": "gate", "strength": term.strength, "channels": term.channels, "leak": term.leak}
            tensors[f"terms.{i}.weights"] = term.weights
            tensors[f"terms.{i}.offset"] = term.offset.reshape(1)
        elif isinstance(term, FitShift):
            d = {"kind": "fit", "strength": term.strength, "levels": term.levels, "ridge": term.ridge}
            tensors[f"terms.{i}.weights"] = term.weights
            tensors[f"terms.{i}.offset"] = term.offset.reshape(1)
        elif isinstance(term, InputShift):
            d = {"kind": "input", "strength": term.strength, "period": term.period, "profile": term.profile}
            tensors[f"terms.{i}.weights"] = term.weights
        elif isinstance(term, RegionShift):
            d = {"kind": "region", "strength": term.strength}
            tensors[f"terms.{i}.weights"] = term.weights
        elif isinstance(term, PaperShift):
            d = {"kind": "paper", "strength": term.strength, "cell": list(term.cell)}
        else:
            raise LogitShiftError(f"shift term {type(term).__name__}: cannot be saved; known kinds are gate, fit, input, region, paper")
        terms.append({"layer": layer, **d})
    return terms, {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}


def build_terms(terms: list[dict], tensors: dict[str, torch.Tensor], source: str) -> dict[str, nn.Module]:
    """Rebuild the shift terms from :func:`describe_terms`' output."""
    out: dict[str, nn.Module] = {}
    for i, d in enumerate(terms):
        try:
            kind, layer = d["kind"], d["layer"]
            if kind == "gate":
                gate = GateShift(d["strength"], tensors[f"terms.{i}.weights"], d["channels"], d["leak"])
                gate.offset.copy_(tensors[f"terms.{i}.offset"].reshape(()))
                term: nn.Module = gate
            elif kind == "fit":
                fit = FitShift(d["strength"], tensors[f"terms.{i}.weights"], d["levels"], d["ridge"])
                fit.offset.copy_(tensors[f"terms.{i}.offset"].reshape(()))
                term = fit
            elif kind == "input":
                term = InputShift(d["strength"], tensors[f"terms.{i}.weights"], d["period"], d["profile"])
            elif kind == "region":
                term = RegionShift(d["strength"], tensors[f"terms.{i}.weights"])
            elif kind == "paper":
                term = PaperShift(d["strength"], tuple(d["cell"]))
            else:
                raise LogitShiftError(f"shift file {source!r}: term {i} has unknown kind {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise LogitShiftError(f"shift file {source!r}: term {i} is malformed ({type(exc).__name__}: {exc})") from None
        out[layer] = term
    return out


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(json, safetensors)`` for a path given with either suffix, ``.pt2``, or none."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors", ".pt2") else p
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def save_shifted(
    shifted: ShiftedModel, path: str | os.PathLike, model: str, weights: str | None = None, extra: dict | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.safetensors`` (see :func:`load_shifted`)."""
    from safetensors.torch import save_file

    terms, tensors = describe_terms(shifted)
    jpath, spath = _paths(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "weights": None if weights is None else str(weights),
        "head_dtype": None if shifted.head_dtype is None else str(shifted.head_dtype).replace("torch.", ""),
        "terms": terms,
        "tensors": spath.name,
        **(extra or {}),
    }
    atomic_write(spath, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    write_json(jpath, meta)
    return jpath, spath


def _tensors_beside(jpath: Path, name: object) -> Path:
    """The safetensors file a shift JSON names: a plain file name in the JSON's own folder (no folder part, no
    ``..``, no absolute path, no link out of the folder), so a file someone sent cannot make us read another."""
    text = str(name)
    inside = jpath.parent / text
    if not isinstance(name, str) or not name or Path(text).name != text or text in (".", ".."):
        raise LogitShiftError(
            f"shift file {str(jpath)!r}: names tensors {text[:80]!r}; expected a file name beside it, with no folder part"
        )
    if inside.is_symlink():
        raise LogitShiftError(f"shift file {str(jpath)!r}: its tensors file {text!r} is a symbolic link; expected a file beside it")
    return inside


def load_shifted(path: str | os.PathLike, allow_factory: bool = False) -> ShiftedModel:
    """Rebuild a shifted model from :func:`save_shifted`'s files (either path, or their common stem).

    The base is loaded by name with :func:`~logitshift.core.models.load_model`
    (with the recorded weights file, if any); the terms from the safetensors
    file. A file that names a user factory (``package.module:factory``) would
    import code chosen by whoever wrote the file: it is refused unless the
    caller passes ``allow_factory=True``. Example::

        >>> shifted = load_shifted("runs/attack/shifted.json")
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    jpath, spath = _paths(path)
    if not jpath.is_file():
        raise LogitShiftError(f"shift file {str(jpath)!r}: not found")
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LogitShiftError(f"shift file {str(jpath)!r}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LogitShiftError(f"shift file {str(jpath)!r}: not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise LogitShiftError(f"shift file {str(jpath)!r}: version {meta.get('version')!r}, this logitshift reads version {VERSION}")
    spath = _tensors_beside(jpath, meta.get("tensors", spath.name))
    if not spath.is_file():
        raise LogitShiftError(f"shift file {str(spath)!r}: not found (named by {jpath.name})")
    try:
        tensors = load_file(str(spath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LogitShiftError(f"shift file {str(spath)!r}: not a readable safetensors file ({exc})") from None
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("terms"), list):
        raise LogitShiftError(f"shift file {str(jpath)!r}: expected a model name and a list of terms")
    if ":" in meta["model"] and not allow_factory:
        raise LogitShiftError(
            f"shift file {str(jpath)!r}: names the model factory {meta['model']!r}; code is imported only when "
            "named explicitly (load_shifted(..., allow_factory=True))"
        )
    loaded = load_model(meta["model"], meta.get("weights"))
    terms = build_terms(meta.get("terms") or [], tensors, str(jpath))
    dtype = {None: None, "float64": torch.float64, "float32": torch.float32}.get(meta.get("head_dtype"))
    shifted = ShiftedModel(loaded.module, terms, head_dtype=dtype).eval()
    shifted.steering = Steering.from_json(meta["steering"], f"shift file {str(jpath)!r}: key 'steering'") if meta.get("steering") else None
    return shifted


__all__ = ["build_terms", "describe_terms", "load_shifted", "save_shifted"]
