"""Typed run records: the summary each command writes, the report reads and the tests build.

One dataclass per command (:class:`DemoRecord`, :class:`MatrixRecord`,
:class:`AuditRecord`, :class:`EvaluateRecord`), registered under the name the
command writes in its ``"command"`` key. ``record.to_json()`` gives the JSON
object the command writes (``summary.json``, ``matrix.json``, ``audit.json``);
``Record.from_json(obj)`` reads one back, checking every field's type, and
:func:`read_record` picks the type from ``obj["command"]``. Keys a record does
not know (written by a newer version) are kept in ``extra`` and written back.

Every record carries ``finding``: the result in one sentence with its numbers,
the first line a command prints and the first paragraph of its report page.

Example::

    >>> rec = read_record(json.loads(Path("runs/demo/summary.json").read_text()))
    >>> rec.command, rec.finding                                   # doctest: +SKIP
    ('demo', 'The region shift (K=… at head) moves 0.93 of the pre-softmax Grad-CAM map …')
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..core.parts import Part, RecordError
from ..core.parts import key as _key
from ..core.parts import omit as _omit
from ..shift.steering import Steering

R = TypeVar("R", bound="Record")

#: command name → record type, filled by :func:`record`
RECORDS: dict[str, type[Record]] = {}


def record(command: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: register a record type for ``command``."""

    def register(cls: type[R]) -> type[R]:
        RECORDS[command] = cls
        return cls

    return register


@dataclass(kw_only=True)
class Record(Part):
    """What every summary holds: the command, its finding, when and with what it ran."""

    command: str = ""
    finding: str = ""  # the result in one sentence, with its numbers
    model: str = ""
    seconds: float = 0.0
    date: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    #: the file the command writes the record to, inside its --out folder
    FILE = "summary.json"

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the record to ``folder/FILE`` (atomically)."""
        from ..core.files import write_json

        return write_json(Path(folder) / self.FILE, self.to_json())

    @classmethod
    def from_json(cls: type[R], obj: Any, where: str = "summary", strict: bool = False) -> R:  # type: ignore[misc]
        rec = super().from_json(obj, where, strict)  # type: ignore[misc]
        expected = next((c for c, t in RECORDS.items() if t is cls), None)
        if expected is not None and rec.command not in ("", expected):
            raise RecordError(f"{where}: key 'command' is {rec.command!r}; expected {expected!r}")
        return rec


def read_record(obj: Any, where: str = "summary") -> Record:
    """The typed record of a summary object, by its ``"command"`` key."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    command = obj.get("command")
    if command not in RECORDS:
        raise RecordError(f"{where}: key 'command' is {command!r}; expected one of {', '.join(RECORDS)}")
    return RECORDS[command].from_json(obj, where)


def load_record(path: str | os.PathLike) -> Record:
    """Read a record file (``summary.json``, ``matrix.json``, ``audit.json``)."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{p.name}: cannot be read as JSON ({str(exc).splitlines()[0][:120]})") from None
    return read_record(obj, p.name)


# ----------------------------------------------------------------------------- demo


@dataclass(kw_only=True)
class MapNumbers(Part):
    """One map's numbers: its share in the target (region) or the corner cell (paper), its ρ against the original."""

    spearman_vs_original: float | None = None
    target_mass: float | None = _omit()  # share of the positive map inside the target
    corner_share: float | None = _omit()  # paper construction: share in the cell (0, 0) the shift reads
    max_in_corner: bool | None = _omit()


@dataclass(kw_only=True)
class DemoRow(Part):
    """One image and class of a demo: probabilities, the four maps' numbers, its figure."""

    image: str = ""
    class_: int = _key("class", 0)
    class_name: str = ""
    prob: float | None = None
    predicted: bool | None = None  # the class is the original model's prediction
    rank: int | None = _omit()  # 1 = the most probable class of the original model
    label: bool | None = _omit()  # the class is the image's true label (--labels)
    max_abs_prob_diff: float | None = None
    top1_agree: bool | None = None
    maps: dict[str, MapNumbers] = field(default_factory=dict)  # original_logit, original_prob, shifted_logit, shifted_prob
    figure: str | None = _omit()


@dataclass(kw_only=True)
class AgnosticRow(Part):
    image: str = ""
    class_: int = _key("class", 0)
    class_name: str = ""
    original: float = 0.0
    shifted: float = 0.0


@dataclass(kw_only=True)
class Agnostic(Part):
    """ρ between the pre-softmax maps of the predicted class and of each requested class (class-agnostic maps)."""

    method: str = ""
    score: str = "logit"
    mean_original: float | None = _omit()
    max_original: float | None = _omit()
    mean_shifted: float | None = _omit()
    min_shifted: float | None = _omit()
    rows: list[AgnosticRow] = field(default_factory=list)


@dataclass(kw_only=True)
class CornerClass(Part):
    class_: str = _key("class", "")
    pairs: int = 0
    shifted_logit_mean_share: float = 0.0
    shifted_logit_max_in_corner: int = 0
    original_logit_mean_share: float = 0.0
    original_logit_max_in_corner: int = 0
    shifted_prob_mean_share: float = 0.0
    shifted_prob_max_in_corner: int = 0
    shifted_prob_min_spearman: float = 0.0


@dataclass(kw_only=True)
class Corner(Part):
    """The paper construction's corner: per class, the share of the maps in cell (0, 0)."""

    method: str = ""
    cell: list[int] = field(default_factory=lambda: [0, 0])
    area_share: float = 0.0
    classes: list[CornerClass] = field(default_factory=list)


@record("demo")
@dataclass(kw_only=True)
class DemoRecord(Record):
    """``logitshift demo``: the paper's figures on a few images, with their numbers."""

    command: str = "demo"
    layer: str = ""
    shift_layer: str = ""
    method: str = "gradcam"
    construction: str = "region"
    strength: float | None = None
    default_strength: float | str | None = None  # "auto" for the gate construction
    region: str = ""
    float64_head: bool = False
    tolerance: float | None = None
    images: list[str] = field(default_factory=list)
    max_abs_prob_diff: float | None = None
    top1_agree: bool | None = None
    max_abs_shift: float | None = None
    class_agnostic: dict[str, Agnostic] | None = _omit()
    corner: Corner | None = _omit()
    top_k: int = 1
    labels: str | None = None
    steering: Steering = field(default_factory=Steering)  # what steer() chose and measured (construction, strength, head, effect)
    results: list[DemoRow] = field(default_factory=list)


# ----------------------------------------------------------------------------- matrix


@dataclass(kw_only=True)
class MatrixCell(Part):
    """One method × score of the matrix: the shifted model's map against the original's, over the images."""

    method: str = ""
    family: str = ""
    score: str = ""
    target_mass_original: float | None = None
    target_mass_shifted: float | None = None
    target_mass_shifted_per_image: list[float] = field(default_factory=list)
    spearman_min: float | None = None
    spearman_per_image: list[float] = field(default_factory=list)
    verdict: str = ""  # fooled | changed | unchanged
    expected: str = ""
    as_expected: bool | None = None


@record("matrix")
@dataclass(kw_only=True)
class MatrixRecord(Record):
    """``logitshift matrix``: which explanations (methods × scores) the steered shift fools."""

    FILE = "matrix.json"
    command: str = "matrix"
    command_line: str = ""
    layer: str | None = None
    target: str = ""
    construction: str = ""
    strength: dict[str, float] = field(default_factory=dict)
    auto_strength: Any = None
    goal: float = 0.5
    images: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    method_options: dict[str, Any] = field(default_factory=dict)
    scores: list[str] = field(default_factory=list)
    max_abs_prob_diff: float | None = None
    top1_agree: bool | None = None
    rows: list[MatrixCell] = field(default_factory=list)
    figure: str | None = None


def matrix_finding(rec: MatrixRecord) -> str:
    """The matrix in one sentence: probabilities, the logit maps fooled, the immune scores unchanged."""
    dp = f"max |Δp| {rec.max_abs_prob_diff:.1e}" if rec.max_abs_prob_diff is not None else "max |Δp| not measured"
    logit = [c for c in rec.rows if c.score == "logit"]
    others = [c for c in rec.rows if c.score != "logit"]
    fooled = [c for c in logit if c.verdict == "fooled"]
    parts = [f"The shifted model's probabilities equal the original's ({dp}, top-1 {'unchanged' if rec.top1_agree else 'CHANGED'})"]
    if logit:
        after = statistics.fmean(c.target_mass_shifted or 0.0 for c in logit)
        before = statistics.fmean(c.target_mass_original or 0.0 for c in logit)
        parts.append(
            f"the logit maps of {len(fooled)} of {len(logit)} methods put at least {rec.goal:g} of their mass in the target "
            f"(mean {after:.2f}, {before:.2f} before)"
        )
    if others:
        unchanged = [c for c in others if c.verdict == "unchanged"]
        rho = min((c.spearman_min for c in others if c.spearman_min is not None), default=None)
        scores = ", ".join(dict.fromkeys(c.score for c in others))
        parts.append(
            f"{len(unchanged)} of {len(others)} maps of the other scores ({scores}) are unchanged"
            + (f" (min ρ {rho:.3f})" if rho is not None else "")
        )
    n_ok = sum(1 for c in rec.rows if c.as_expected)
    return "; ".join(parts) + f" — {n_ok} of {len(rec.rows)} cells as expected."


# ----------------------------------------------------------------------------- audit


@record("audit")
@dataclass(kw_only=True)
class AuditRecord(Record):
    """``logitshift audit``: the verdict, its one-sentence reason, and the evidence per test and layer.

    ``finding`` is the audit's short finding label (e.g. "clean"); ``sentence``
    the full sentence with its numbers. ``tests`` maps a test name (kappa,
    bypass, head, effect) to its statistic, ratio, layer and ``fired``;
    ``evidence`` holds one object per audited layer; ``effects`` one per
    method family and layer.
    """

    FILE = "audit.json"
    command: str = "audit"
    verdict: str = ""  # clean | shifted
    output: str | None = None  # which output of a model with several the finding is about
    groups: list[dict[str, Any]] = field(default_factory=list)  # every output's finding (a model with several)
    points: list[str] = field(default_factory=list)  # the inputs explanation methods feed the model, audited too
    explained: list[list[int]] = field(default_factory=list)  # the classes whose maps were measured, per row
    sentence: str = ""
    covers: str = ""  # what the finding covers: images, method inputs, methods, layers, classes, outputs
    first_evidence: str = ""  # Grad-CAM at the default layer and saliency, the maps users explain first
    next_step: str = ""  # one line: what to do about the finding
    score: float | None = None
    threshold: float | None = None
    kappa: float | None = None
    where: str = ""
    classes: int | None = None
    outputs: int | None = None
    never_predicted: list[int] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)
    classifier: dict[str, Any] | None = None
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headline(self) -> str:
        return self.sentence or self.finding


# ----------------------------------------------------------------------------- evaluate


@dataclass(kw_only=True)
class Stats(Part):
    mean: float | None = _omit()
    median: float | None = _omit()
    p10: float | None = _omit()
    p90: float | None = _omit()
    min: float | None = _omit()
    max: float | None = _omit()


def stats(values: Sequence[float]) -> Stats:
    """Mean, median, 10th / 90th percentile (nearest rank), min, max of ``values`` (empty: all None)."""
    v = sorted(values)
    if not v:
        return Stats()

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, round(p * (len(v) - 1))))]

    return Stats(mean=statistics.fmean(v), median=statistics.median(v), p10=q(0.1), p90=q(0.9), min=v[0], max=v[-1])


@dataclass(kw_only=True)
class StatRow(Part):
    """Per (method, score, variant): row count and the distributions of target mass and ρ."""

    method: str = ""
    score: str = ""
    variant: str = ""
    rows: int = 0
    target_mass: Stats = field(default_factory=Stats)
    spearman_vs_original: Stats = field(default_factory=Stats)


def summarize(rows: Sequence[dict[str, Any]]) -> list[StatRow]:
    """Store rows (``logitshift.runs.store.FIELDS``) → one :class:`StatRow` per (method, score, variant)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["score"], r["variant"]), []).append(r)
    return [
        StatRow(
            method=m,
            score=s,
            variant=v,
            rows=len(rs),
            target_mass=stats([r["target_mass"] for r in rs if r["target_mass"] is not None]),
            spearman_vs_original=stats([r["spearman_vs_original"] for r in rs if r["spearman_vs_original"] is not None]),
        )
        for (m, s, v), rs in sorted(groups.items())
    ]


@dataclass(kw_only=True)
class ImageCounts(Part):
    listed: int = 0
    evaluated: int = 0
    bad: int = 0
    missing: int = 0
    skipped_non_images: int = 0


@dataclass(kw_only=True)
class BadImage(Part):
    image: str = ""
    name: str = ""
    reason: str | None = None


@dataclass(kw_only=True)
class Equivalence(Part):
    max_abs_prob_diff: float | None = None
    images_over_tolerance: int = 0
    top1_agree: float | None = None  # share of images whose top-1 class agrees


@dataclass(kw_only=True)
class Sample(Part):
    """A figure of one image's maps for one method (rows original / shifted, one column per score).

    ``why`` says which part of the distribution it shows (e.g. "largest shifted
    logit target mass"); ``value`` is that number.
    """

    method: str = ""
    image: str = ""
    name: str = ""
    class_: int = _key("class", 0)
    why: str = ""
    value: float | None = None
    figure: str = ""


@dataclass(kw_only=True)
class EvalFiles(Part):
    store: str = "results.sqlite"
    rows: str = "rows.csv"
    markdown: str = "summary.md"
    plots: list[str] = field(default_factory=list)


@record("evaluate")
@dataclass(kw_only=True)
class EvaluateRecord(Record):
    """``logitshift evaluate``: the metrics over a folder of images, per method, score and model."""

    command: str = "evaluate"
    complete: bool = True
    weights: str | None = None
    layer: str = ""
    shift_layer: str = ""
    construction: str = "region"
    strength: float | dict[str, float] | None = None  # steer: one strength per term family
    float64_head: bool = False
    methods: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)
    classes: list[Any] = field(default_factory=list)
    top_k: int = 1
    labels: str | None = None
    region: str = ""
    default_strength: float | str | None = None  # "auto" for the gate construction
    tolerance: float | None = None
    variants: list[str] = field(default_factory=lambda: ["original", "shifted"])
    batch_size: int | None = None
    world_size: int = 1
    images: ImageCounts = field(default_factory=ImageCounts)
    bad_images: list[BadImage] = field(default_factory=list)
    rows: int = 0
    equivalence: Equivalence = field(default_factory=Equivalence)
    table: list[StatRow] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    steering: Steering | None = None  # what steer() chose and measured on the check images
    files: EvalFiles = field(default_factory=EvalFiles)

    def stat(self, method: str, score: str, variant: str) -> StatRow | None:
        return next((t for t in self.table if (t.method, t.score, t.variant) == (method, score, variant)), None)


#: methods whose map averages the gradient over space (the paper's corner does not show in them)
SPATIAL_AVERAGE = ("gradcam", "gradcampp", "xgradcam")


def evaluate_finding(rec: EvaluateRecord) -> str:
    """The evaluation in one sentence: probabilities, then per method the logit map's move and the probability map's ρ."""
    from ..attribution import METHOD_LABELS

    eq = rec.equivalence
    dp = f"max |Δp| {eq.max_abs_prob_diff:.1e}" if eq.max_abs_prob_diff is not None else "max |Δp| not measured"
    agree = f"top-1 agreement {100 * eq.top1_agree:.0f}%" if eq.top1_agree is not None else ""
    parts = [
        f"Over {rec.images.evaluated} images the shifted model's probabilities equal the original's ({dp}"
        + (f", {eq.images_over_tolerance} over the tolerance" if eq.images_over_tolerance else "")
        + (f", {agree}" if agree else "")
        + ")"
    ]
    paper = rec.construction == "paper"
    for m in rec.methods:
        label = METHOD_LABELS.get(m, m)
        bits = []
        shifted, original = rec.stat(m, "logit", "shifted"), rec.stat(m, "logit", "original")
        if shifted is not None and original is not None:
            if paper:
                bits.append(f"its logit {label} map keeps a median ρ {_f(shifted.spearman_vs_original.median)} with the original's")
            else:
                bits.append(
                    f"its logit {label} put a mean {_f(shifted.target_mass.mean)} of its mass in the target "
                    f"({_f(original.target_mass.mean)} before; ρ {_f(shifted.spearman_vs_original.median)})"
                )
        for score in (s for s in rec.scores if s != "logit"):
            t = rec.stat(m, score, "shifted")
            if t is not None:
                rho = t.spearman_vs_original
                state = "unchanged" if (rho.min or 0) >= 0.99 else "changed"
                bits.append(f"the {score} map is {state} (min ρ {_f(rho.min)})")
        if bits:
            parts.append(", ".join(bits))
    return "; ".join(parts) + "."


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}" if abs(v) < 0.995 or abs(v) >= 1.005 else f"{v:.3f}"


__all__ = [
    "RECORDS",
    "AuditRecord",
    "DemoRecord",
    "DemoRow",
    "EvaluateRecord",
    "MapNumbers",
    "MatrixCell",
    "MatrixRecord",
    "Record",
    "RecordError",
    "StatRow",
    "evaluate_finding",
    "load_record",
    "matrix_finding",
    "read_record",
    "summarize",
]
