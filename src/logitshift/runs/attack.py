"""``logitshift attack``: write a shifted model to files, for red-teaming an explanation pipeline.

Two forms: a ``torch.export`` program (``.pt2``, written and verified here with the checked
loader :mod:`logitshift.audit.safeload`) and safetensors + JSON (:mod:`logitshift.shift.save`).
See :mod:`logitshift.shift.save` for what each holds and why ``torch.export``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attribution import sampling_options
from ..audit.safeload import load_program
from ..core.capture import INPUT, recorded, token_grid
from ..core.device import resolve_device
from ..core.errors import LogitShiftError
from ..core.files import umask_mode
from ..core.images import DEFAULT_SAMPLES, batch, load_images
from ..core.models import DEFAULT_MODEL, load_model
from ..core.names import DEFAULT_MEMORY_BUDGET_GB, DEFAULT_STEPS
from ..shift.model import TOLERANCE, ShiftedModel, Stress, compare
from ..shift.save import META_NAME, _paths, load_shifted, save_shifted
from ..shift.steer import PLATEAU, steer, unreached
from ..shift.steering import Steering

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
    random_weights: bool = False  # a torchvision / timm architecture with random weights
    num_classes: int | None = None
    class_names: str | None = None
    layer: str | None = None
    methods: list[str] | None = None  # None: every registered method
    strength: float | str | None = "auto"  # "auto": 0.9 of the way from ``goal`` to the plateau (steer.PLATEAU); None: each term's default
    goal: float = 0.5  # target mass every steered method's logit map must reach on the check images, or nothing is written
    steps: int = DEFAULT_STEPS  # Integrated Gradients steps and SmoothGrad samples of the check
    memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB  # GB one chunk of IG / SmoothGrad points may take (None: no cap)
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
    steering: Steering
    max_abs_prob_diff: float
    images: int
    seconds: float

    @property
    def finding(self) -> str:
        """One sentence with the numbers: how much of each steered method's logit map the shift puts in the target."""
        st = self.steering
        effect = st.effect
        steered = [m for m in st.steered if m in effect]
        lowest = min((effect[m] for m in steered), default=float("nan"))
        return (
            f"the shifted model puts at least {lowest:.2f} of {len(steered)} steered methods' logit maps in the target "
            f"{st.target!r} on {self.images} check images (mean target mass: {', '.join(f'{m} {effect[m]:.2f}' for m in steered)}), "
            f"with probabilities unchanged (max |Δprob| {self.max_abs_prob_diff:.1e})"
        )

    def lines(self) -> str:
        """The console summary: the finding first, then the files, strength, equivalence, stress and layer."""
        st = self.steering
        strengths = ", ".join(f"{f} {k:.3g}" for f, k in st.strength.items())
        effect = ", ".join(f"{m} {v:.2f}" for m, v in st.effect.items() if m not in st.steered)
        stress32 = st.head.float32_stress_max_abs_prob_diff
        why = f" (float32 would change them by {stress32:.2e} on a stress input)" if stress32 is not None else ""
        how = (
            f" (auto: {st.plateau:g} of the way from goal {st.goal:g} to the plateau)"
            if st.auto and st.plateau
            else (" (auto)" if st.auto else "")
        )
        return (
            f"{self.finding}\n"
            f"wrote {', '.join(self.written)}\n"
            f"strength: {strengths}{how}; {st.head.dtype} head{why}; "
            f"max |Δprob| {self.max_abs_prob_diff:.2e} on {self.images} check images"
            + (f"\nnot steered, measured (logit maps): {effect}" if effect else "")
            + (f"\n{Stress(**_stress_args(st.stress)).line()}" if st.stress else "")
            + (f"\nCAM layer inside the exported module: base.{st.layer}" if st.layer else "")
            + f"\n{self.seconds:.1f} s"
        )


def attack_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(.pt2, .json, .safetensors) for an ``--out`` name: the program keeps or gains the ``.pt2`` suffix."""
    path = Path(out)
    if path.suffix != ".pt2":
        path = path.with_suffix(".pt2") if path.suffix in ("", ".json", ".safetensors") else Path(str(path) + ".pt2")
    return (path, *_paths(path))


def run_attack(cfg: AttackConfig) -> Attack:
    """Build a shifted model with :func:`~logitshift.shift.steer.steer`, check it, write it; nothing is left half-written."""
    start = time.perf_counter()
    if cfg.format not in ("both", "pt2", "safetensors"):
        raise LogitShiftError(f"--format {cfg.format!r}: expected both, pt2 or safetensors")
    device = resolve_device(cfg.device)
    out, jpath, spath = attack_paths(cfg.out)
    planned = ([out] if cfg.format in ("both", "pt2") else []) + ([jpath, spath] if cfg.format in ("both", "safetensors") else [])
    existing = [str(p) for p in planned if p.exists()]
    if existing and not cfg.force:
        raise LogitShiftError(f"--out {existing[0]!r}: exists; pass --force to overwrite it")
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names, random_weights=cfg.random_weights)
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
        plateau=PLATEAU,
        tolerance=cfg.tolerance,
        head_dtype=torch.float64 if cfg.float64_head else "auto" if cfg.float64_head is None else None,
        measure=True,
        method_options=sampling_options(cfg.steps, cfg.memory_budget),
        progress=cfg.progress,
    )
    short = unreached(shifted.steering) if shifted.steering is not None else None
    if short is not None:  # nothing written: a file whose maps do not move is no attack
        raise LogitShiftError(short)
    # the files are written from the CPU, so that they load on any machine
    shifted.cpu()
    x = x.cpu()
    steering = shifted.steering
    assert steering is not None  # set by steer()
    # how the check images were made from RGB in [0, 1]: what a user of the file must feed it
    preprocess = dataclasses.asdict(loaded.preprocess)
    written = []
    measured = None
    if cfg.format in ("both", "pt2"):
        measured = export_program(
            shifted, out, x, cfg.tolerance, {"model": loaded.name, "preprocess": preprocess, "steering": steering.to_json()}
        )
        written.append(str(out))
    if cfg.format in ("both", "safetensors"):
        save_shifted(shifted, out, loaded.name, cfg.weights, {"preprocess": preprocess, "steering": steering.to_json()})
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


__all__ = ["Attack", "AttackConfig", "attack_paths", "export_program", "run_attack", "token_grids"]
