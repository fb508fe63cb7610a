"""``logitshift attack``: write a shifted model to files, for red-teaming an explanation pipeline.

Two forms:

* **A ``torch.export`` program** (``.pt2``), which plain PyTorch loads with
  logitshift not installed. Load it, like any ``.pt2`` you did not make
  yourself, with the standalone checked loader ``logitshift/safeload.py``
  (standard library + torch only: copy the file next to your code)::

      from safeload import load_module            # or: from logitshift.safeload import load_module
      model = load_module("shifted.pt2")          # checked, then torch.export.load + unflatten
      layer = model.get_submodule("base.head")    # hookable by Captum / pytorch-grad-cam

  ``torch.export.load`` on its own runs code from a hostile file (see
  :mod:`logitshift.safeload`); the files written here hold no pickle (the
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
  :func:`load_shifted` turns back into a :class:`~logitshift.shift.ShiftedModel`:
  the JSON names the base model (rebuilt with :func:`~logitshift.models.load_model`)
  and each shift term's kind, layer and numbers; the safetensors file holds
  the terms' tensors (target weights, offsets). Nothing is pickled.

Either way the export is checked before any file is left in place: the
reloaded model's probabilities must equal the original's within the tolerance
(1e-5) with identical top-1 classes on the check images, or the export is
refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .capture import INPUT, recorded, token_grid
from .device import resolve_device
from .errors import LogitShiftError
from .files import atomic_write, umask_mode, write_json
from .images import DEFAULT_SAMPLES, batch, load_images
from .models import DEFAULT_MODEL, load_model
from .safeload import load_program
from .shift import TOLERANCE, FitShift, GateShift, InputShift, PaperShift, RegionShift, ShiftedModel, Stress, compare
from .steer import steer

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


def load_shifted(path: str | os.PathLike, allow_factory: bool = False) -> ShiftedModel:
    """Rebuild a shifted model from :func:`save_shifted`'s files (either path, or their common stem).

    The base is loaded by name with :func:`~logitshift.models.load_model`
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
    spath = jpath.parent / str(meta.get("tensors", spath.name))
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
    shifted.steering = meta.get("steering", {})
    return shifted


# ----------------------------------------------------------------------------- torch.export


def token_grids(shifted: ShiftedModel, check: torch.Tensor) -> dict[str, dict]:
    """For each term layer that is a transformer's token grid: its layout (h, w, skip, channels_last; README: the reshape_transform).

    Keyed by the layer's path inside the exported module (``base.<layer>``);
    N×C×H×W layers need no entry.
    """
    names = [n for n in shifted.layers if n != INPUT]
    with recorded(shifted.base, names) as outs, torch.no_grad():
        shifted.base(check[:1])
    out = {}
    for name in names:
        layout = token_grid(outs[name].shape, check.shape[-2:]) if isinstance(outs.get(name), torch.Tensor) else None
        if layout is not None:
            out[f"base.{name}"] = layout.to_json()
    return out


def export_program(
    shifted: ShiftedModel,
    path: str | os.PathLike,
    check: torch.Tensor,
    tolerance: float = TOLERANCE,
    meta: dict | None = None,
) -> dict:
    """Write ``shifted`` as a ``torch.export`` program and verify the file.

    The program is traced on ``check`` with a dynamic batch dimension, saved to
    a temporary file, loaded back with ``torch.export.load`` and run on
    ``check``; only if its probabilities match the base model's within
    ``tolerance`` (and every top-1 class agrees) is it moved to ``path``.
    Returns what was measured.
    """
    path = Path(path)
    shifted = shifted.eval()
    example = check if check.shape[0] >= 2 else check.expand(2, *check.shape[1:]).clone()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        program = torch.export.export(shifted, (example,), dynamic_shapes={"x": {0: batch}}, strict=False)
    except Exception as exc:  # the tracer's errors are long; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LogitShiftError(f"model: torch.export could not trace the shifted model ({first[:200]})") from exc
    info = {
        "format": "torch.export",
        "layers": {name: f"base.{name}" for name in shifted.layers if name != INPUT},
        "input_size": list(check.shape[1:]),
        "token_grids": token_grids(shifted, check),
        "load": "logitshift/safeload.py: load_module(path) (checks the file, then torch.export.load + unflatten)",
        **(meta or {}),
    }
    extra = {META_NAME: json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.pt2", dir=path.parent)
    os.close(fd)
    try:
        program.example_inputs = None  # else torch.export.save pickles the check images into sample_inputs
        torch.export.save(program, tmp, extra_files=extra)
        reloaded = load_program(tmp).module()  # our own file must pass the checked loader
        with torch.no_grad():
            z = shifted.base(check)
            z_file = reloaded(check)
        eq = compare(z, z_file)
        if not eq.ok(tolerance):
            raise LogitShiftError(
                f"--out {str(path)!r}: the exported program changes probabilities by up to {eq.max_abs_prob_diff:.2e} "
                f"(top-1 agreement {eq.top1_agree:.2f}) on the check images, over the tolerance {tolerance:g}; nothing written"
            )
        os.chmod(tmp, umask_mode())  # mkstemp makes it private; the file follows the umask like any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"max_abs_prob_diff": eq.max_abs_prob_diff, "top1_agree": eq.top1_agree == 1.0, "max_abs_shift": eq.max_abs_shift}


# ----------------------------------------------------------------------------- the attack command


@dataclass(kw_only=True)
class AttackConfig:
    """What ``logitshift attack`` builds and writes (see :func:`run_attack`)."""

    target: str  # x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG of the input size
    out: str  # the .pt2 file; the safetensors + JSON form goes next to it
    model: str = DEFAULT_MODEL
    weights: str | None = None
    num_classes: int | None = None
    class_names: str | None = None
    layer: str | None = None
    methods: list[str] | None = None  # None: every registered method
    strength: float | str | None = None  # None: each term's default; "auto": calibrated to reach ``goal``
    goal: float = 0.5
    images: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLES))  # check images
    format: str = "both"  # both | pt2 | safetensors
    tolerance: float = TOLERANCE
    force: bool = False
    progress: bool = True
    device: str = "auto"
    float64_head: bool | None = None  # None: float64 only where float32 changes probabilities (check or stress inputs)


@dataclass
class Attack:
    """What :func:`run_attack` wrote and measured."""

    written: list[str]
    steering: dict[str, Any]
    max_abs_prob_diff: float
    images: int
    seconds: float

    def lines(self) -> str:
        """The console summary: the files first, then strength, equivalence, effect, stress and layer."""
        st = self.steering
        strengths = ", ".join(f"{f} {k:.3g}" for f, k in st["strength"].items())
        effect = ", ".join(f"{m} {v:.2f}" for m, v in st["effect"].items())
        head = st.get("head") or {}
        why = (
            f" (float32 would change them by {head['float32_stress_max_abs_prob_diff']:.2e} on a stress input)"
            if "float32_stress_max_abs_prob_diff" in head
            else ""
        )
        return (
            f"wrote {', '.join(self.written)}\n"
            f"strength: {strengths}{' (auto)' if st['auto'] else ''}; {head.get('dtype', 'float32')} head{why}; "
            f"max |Δprob| {self.max_abs_prob_diff:.2e} on {self.images} check images"
            + (f"\ntarget mass reached (logit maps): {effect}" if effect else "")
            + (f"\n{Stress(**_stress_args(st['stress'])).line()}" if st.get("stress") else "")
            + (f"\nCAM layer inside the exported module: base.{st['layer']}" if st["layer"] else "")
            + f"\n{self.seconds:.1f} s"
        )


def attack_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(.pt2, .json, .safetensors) for an ``--out`` name: the program keeps or gains the ``.pt2`` suffix."""
    path = Path(out)
    if path.suffix != ".pt2":
        path = path.with_suffix(".pt2") if path.suffix in ("", ".json", ".safetensors") else Path(str(path) + ".pt2")
    return (path, *_paths(path))


def run_attack(cfg: AttackConfig) -> Attack:
    """Build a shifted model with :func:`~logitshift.steer.steer`, check it, write it; nothing is left half-written."""
    start = time.perf_counter()
    if cfg.format not in ("both", "pt2", "safetensors"):
        raise LogitShiftError(f"--format {cfg.format!r}: expected both, pt2 or safetensors")
    device = resolve_device(cfg.device)
    out, jpath, spath = attack_paths(cfg.out)
    planned = ([out] if cfg.format in ("both", "pt2") else []) + ([jpath, spath] if cfg.format in ("both", "safetensors") else [])
    existing = [str(p) for p in planned if p.exists()]
    if existing and not cfg.force:
        raise LogitShiftError(f"--out {existing[0]!r}: exists; pass --force to overwrite it")
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names)
    loaded.module.to(device)
    x = batch(load_images(cfg.images or DEFAULT_SAMPLES, loaded.preprocess)).to(device)
    shifted = steer(
        loaded,
        cfg.target,
        methods=cfg.methods,
        strength=cfg.strength,
        layer=cfg.layer,
        check=x,
        goal=cfg.goal,
        tolerance=cfg.tolerance,
        head_dtype=torch.float64 if cfg.float64_head else "auto" if cfg.float64_head is None else None,
        progress=cfg.progress,
    )
    # the files are written from the CPU, so that they load on any machine
    shifted.cpu()
    x = x.cpu()
    steering = shifted.steering
    # how the check images were made from RGB in [0, 1]: what a user of the file must feed it
    preprocess = dataclasses.asdict(loaded.preprocess)
    written = []
    measured = None
    if cfg.format in ("both", "pt2"):
        measured = export_program(shifted, out, x, cfg.tolerance, {"model": loaded.name, "preprocess": preprocess, "steering": steering})
        written.append(str(out))
    if cfg.format in ("both", "safetensors"):
        save_shifted(shifted, out, loaded.name, cfg.weights, {"preprocess": preprocess, "steering": steering})
        reloaded = load_shifted(jpath, allow_factory=True)  # the user named this model on the command line
        with torch.no_grad():
            eq = compare(loaded.module(x), reloaded(x))
        if not eq.ok(cfg.tolerance):  # pragma: no cover - the same terms, the same numbers
            for p in (jpath, spath):
                p.unlink(missing_ok=True)
            raise LogitShiftError(f"--out {str(jpath)!r}: the reloaded model changes probabilities by {eq.max_abs_prob_diff:.2e}; removed")
        measured = measured or {"max_abs_prob_diff": eq.max_abs_prob_diff, "top1_agree": eq.top1_agree == 1.0}
        written += [str(jpath), str(spath)]
    assert measured is not None
    return Attack(written, steering, measured["max_abs_prob_diff"], x.shape[0], time.perf_counter() - start)


def _stress_args(d: dict) -> dict:
    return {"max_abs_prob_diff": d["max_abs_prob_diff"], "worst": d["worst_input"], "tolerance": d["tolerance"]}


__all__ = [
    "Attack",
    "AttackConfig",
    "attack_paths",
    "build_terms",
    "describe_terms",
    "export_program",
    "load_shifted",
    "run_attack",
    "save_shifted",
]
