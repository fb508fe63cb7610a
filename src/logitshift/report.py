"""``logitshift report RUN_DIR``: one self-contained HTML page from a run folder.

The page holds everything it shows: figures are embedded as base64 JPEG/PNG
(downscaled so that a run of 200 images stays under the size budget), the
styles and the small scripts (sortable tables, click-to-zoom, a panel filter)
are inline, and a Content-Security-Policy forbids every network request, so
the file works opened straight from disk and can be mailed or archived.

Sections are rendered from whatever the folder holds, keyed on what
``summary.json`` says (``"command"``: demo, matrix, audit, evaluate):

* a header saying what was run (command, model, layers, construction,
  strength, target, versions, date) with a line to cite;
* the equivalence figures: max |Δprob| per image against the tolerance and
  top-1 agreement;
* the paper-style 2×2 panels per image and class, with their numbers;
* the methods × scores matrix as a coloured table with thumbnails;
* the audit verdict and its evidence;
* an evaluation's tables and distribution plots;
* any other table in ``summary.json`` and any other figure in the folder.

A folder from an interrupted run (no ``summary.json``, a truncated one, figures
named in the summary but absent, temporary files of an unfinished write) still
gives a page, with a visible note at the top that says what is missing.

Example::

    >>> from logitshift.report import write_report
    >>> write_report("runs/demo")                     # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .attribution import METHOD_LABELS
from .errors import LogitShiftError
from .files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
#: total size of the embedded images the page aims to stay under (base64 bytes).
DEFAULT_MAX_MB = 24.0
#: (longest side in pixels, JPEG quality), best first; the first level whose
#: estimated total fits the budget is used for every figure of the page.
LADDER = ((1000, 85), (760, 80), (640, 78), (560, 75), (480, 72), (400, 70), (320, 65), (240, 60))
#: a PNG at most this large (and no larger than the level's side) is kept as it is:
#: line plots stay crisp, JPEG would only blur them.
KEEP_PNG_BYTES = 160_000
#: baseline JPEG decodes faster in browsers than progressive (measured in benchmarks/report_size.py)
PROGRESSIVE = False
PAPER = "M. Lerma, M. Lucas, “A Vulnerability of Attribution Methods Using Pre-Softmax Scores”, arXiv:2307.03305"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
MAP_KEYS = ("original_logit", "original_prob", "shifted_logit", "shifted_prob")
MAX_TABLE_ROWS = 2000
FOOLED = "background: hsl(4 78% 80%)"
UNCHANGED = "background: hsl(145 45% 86%)"
CHANGED = "background: hsl(42 90% 80%)"
VERDICT_STYLE = {"fooled": FOOLED, "unchanged": UNCHANGED, "changed": CHANGED}


# ----------------------------------------------------------------------------- reading a run folder


@dataclass
class Run:
    """What a run folder holds, and what is missing from it."""

    path: Path
    summary: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    stores: list[Path] = field(default_factory=list)
    markdown: list[Path] = field(default_factory=list)
    summary_name: str = "summary.json"
    #: what could be learnt without a summary (the configuration an evaluate store records)
    inferred: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str | None:
        s = self.summary or self.inferred
        return str(s.get("command")) if s.get("command") else None


def _walk(path: Path, depth: int = 3, root: Path | None = None) -> Iterable[Path]:
    """Files under ``path`` (not hidden folders, not links leading out of ``root``), ``depth`` folders deep."""
    root = root or path.resolve()
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            if depth > 0 and not entry.name.startswith("."):
                yield from _walk(entry, depth - 1, root)
        elif entry.is_file() and entry.resolve().is_relative_to(root):
            yield entry


#: the files a command may write its summary to, in order of preference (``audit`` writes audit.json).
SUMMARY_FILES = ("summary.json", "audit.json", "matrix.json", "evaluation.json")


def _summary_file(path: Path) -> Path | None:
    """``summary.json``, else the first top-level JSON file that names its ``"command"``."""
    for name in SUMMARY_FILES:
        if (path / name).is_file():
            return path / name
    for f in sorted(path.glob("*.json")):
        try:
            if f.stat().st_size < 50_000_000 and isinstance(obj := json.loads(f.read_text(encoding="utf-8")), dict) and "command" in obj:
                return f
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return None


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read ``run_dir``: its ``summary.json`` (if any and if whole), figures, stores and tables.

    Raises :class:`LogitShiftError` when the folder does not exist or holds
    nothing a report could show.
    """
    path = Path(run_dir)
    if not path.exists():
        raise LogitShiftError(
            f"RUN_DIR {str(path)!r}: no such folder; expected a folder written by logitshift demo, matrix, audit or evaluate"
        )
    if not path.is_dir():
        raise LogitShiftError(f"RUN_DIR {str(path)!r}: not a folder; expected a run folder (the --out of a logitshift command)")
    run = Run(path=path, summary=None)
    summary_path = _summary_file(path)
    if summary_path is not None:
        try:
            loaded = json.loads(summary_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            run.notes.append(
                f"{summary_path.name} is not valid JSON ({exc}); the run was probably interrupted while writing it. Showing the files found."
            )
        else:
            if isinstance(loaded, dict):
                run.summary = loaded
                run.summary_name = summary_path.name
            else:
                run.notes.append(f"{summary_path.name} does not hold a JSON object; showing the files found.")
    else:
        run.notes.append(
            "summary.json is missing: the run did not finish (or this is not a logitshift run folder). Showing the files found; the numbers are not available."
        )
    partial = []
    for f in _walk(path):
        name = f.name
        if name.startswith("."):
            if ".tmp" in name:
                partial.append(f.relative_to(path).as_posix())
            continue
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            run.images.append(f)
        elif suffix in STORE_SUFFIXES:
            run.stores.append(f)
        elif suffix == ".md":
            run.markdown.append(f)
    if partial:
        run.notes.append(f"{len(partial)} partly written file(s) left by an interrupted write: " + _names(partial))
    if run.summary is None and run.stores:
        run.inferred = _store_config(run.stores[0])
        run.notes.append(
            f"the results store {_rel(run.stores[0], path)} holds what was finished; `logitshift evaluate ... --resume` continues the run"
        )
    if run.summary is None and not run.images and not run.stores:
        raise LogitShiftError(
            f"RUN_DIR {str(path)!r}: holds neither summary.json nor figures nor a results store; expected a folder written by logitshift demo, matrix, audit or evaluate"
        )
    return run


def _store_config(store: Path) -> dict[str, Any]:
    """The configuration ``logitshift evaluate`` records in its store (``meta`` table, key ``config``), or {}."""
    try:
        con = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        finally:
            con.close()
        config = json.loads(row[0]) if row else None
    except (sqlite3.Error, ValueError):
        return {}
    return {"command": "evaluate", **config} if isinstance(config, dict) else {}


def _names(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------------------- embedding images


def _encode(path: Path, side: int, quality: int) -> tuple[str, int, int]:
    """``path`` as a data URI no larger than ``side`` px on its longest side: (uri, width, height).

    Small PNGs that need no downscaling are kept byte for byte; everything else
    becomes a JPEG of the given quality (transparency composited on white).
    """
    from PIL import Image

    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        w, h = im.size
        if path.suffix.lower() == ".png" and len(raw) <= KEEP_PNG_BYTES and max(w, h) <= side:
            return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), w, h
        if max(w, h) <= side and path.suffix.lower() in (".jpg", ".jpeg") and len(raw) <= KEEP_PNG_BYTES:
            return "data:image/jpeg;base64," + base64.b64encode(raw).decode("ascii"), w, h
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = im.convert("RGB")
    if max(w, h) > side:
        rgb.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality, optimize=True, progressive=PROGRESSIVE)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), rgb.width, rgb.height


def choose_level(paths: Sequence[Path], max_bytes: float, samples: int = 6) -> tuple[int, int]:
    """The best (side, quality) of :data:`LADDER` whose estimated total size fits ``max_bytes``.

    The estimate is the mean encoded size of up to ``samples`` figures spread
    over ``paths``, times ``len(paths)``. Example: 200 demo figures of
    720×760 px and a 24 MB budget give (1000, 85) → about 105 kB each → 21 MB.
    """
    if not paths:
        return LADDER[0]
    step = max(1, len(paths) // samples)
    probe = list(paths[::step])[:samples]
    for side, quality in LADDER:
        sizes = []
        for p in probe:
            try:
                sizes.append(len(_encode(p, side, quality)[0]))
            except Exception:  # an unreadable figure is reported where it is shown
                continue
        if not sizes or sum(sizes) / len(sizes) * len(paths) <= max_bytes:
            return side, quality
    return LADDER[-1]


class Embedder:
    """Embeds each figure once; later uses of the same file copy it in the browser (``data-same``)."""

    def __init__(self, run: Run, side: int, quality: int) -> None:
        self.run = run
        self.side, self.quality = side, quality
        self.ids: dict[Any, str] = {}
        self.used: set[Path] = set()
        self.bytes = 0
        self.unreadable: list[str] = []
        self.missing: list[str] = []
        self.outside: list[str] = []

    def resolve(self, ref: str) -> Path:
        return (self.run.path / ref).resolve()

    def img(self, ref: str | Path, alt: str, cls: str = "zoom", wide: bool = False) -> str:
        """An ``<img>`` holding the figure ``ref`` (relative to the run folder), or a visible placeholder.

        Only files inside the run folder are embedded (a reference such as
        ``../../secret.png``, or a link pointing out of the folder, is refused).
        ``wide`` figures (grids of many small maps) get twice the pixels.
        """
        path = ref.resolve() if isinstance(ref, Path) else self.resolve(ref)
        name = str(ref) if not isinstance(ref, Path) else _rel(path, self.run.path)
        if not path.is_relative_to(self.run.path.resolve()):
            self.outside.append(name)
            return f'<div class="missing-img">figure {_e(name)} lies outside the run folder: not embedded</div>'
        self.used.add(path)
        if path in self.ids:
            return f'<img class="{cls}" data-same="{self.ids[path]}" alt="{_e(alt)}">'
        if not path.is_file():
            self.missing.append(name)
            return f'<div class="missing-img">figure {_e(name)} is missing</div>'
        try:
            uri, w, h = _encode(path, max(self.side * 2, 1600) if wide else self.side, self.quality)
        except Exception as exc:  # truncated or not an image: show the gap, keep going
            self.unreadable.append(f"{name} ({type(exc).__name__})")
            return f'<div class="missing-img">figure {_e(name)} could not be read (truncated or not an image)</div>'
        return self._tag(path, uri, w, h, alt, cls)

    def img_pil(self, im: Any, alt: str, cls: str = "zoom") -> str:
        """An ``<img>`` of a PIL image made here (a thumbnail cut from a figure)."""
        uri, w, h = _pil_uri(im, self.side, self.quality)
        return self._tag(("pil", len(self.ids)), uri, w, h, alt, cls)

    def _tag(self, key: Any, uri: str, w: int, h: int, alt: str, cls: str) -> str:
        ident = f"img{len(self.ids) + 1}"
        self.ids[key] = ident
        self.bytes += len(uri)
        return f'<img id="{ident}" class="{cls}" src="{uri}" width="{w}" height="{h}" alt="{_e(alt)}" decoding="async">'


def _bands(rgb: Any, axis: int, min_fill: float = 0.5) -> list[tuple[int, int]]:
    """Runs of rows (``axis=1``) or columns (``axis=0``) of ``rgb`` whose share of non-white pixels is ≥ ``min_fill`` of the largest share."""
    import numpy as np

    ink = (np.asarray(rgb, dtype=np.int16) < 235).any(axis=2)
    fill = ink.mean(axis=axis)
    on = fill >= min_fill * fill.max()
    runs, start = [], None
    for i, v in enumerate(list(on) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    longest = max((b - a for a, b in runs), default=0)
    return [(a, b) for a, b in runs if b - a >= 0.3 * longest]


def _pil_uri(im: Any, side: int, quality: int) -> tuple[str, int, int]:
    im = im.copy()
    if max(im.size) > side:
        from PIL import Image

        im.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True, progressive=PROGRESSIVE)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (posix), or its name."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


# ----------------------------------------------------------------------------- small HTML helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number as a person reads it: 3.19e-06, 0.394, 326.2; booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        a = abs(value)
        if a == 0:
            return "0"
        if a < 1e-3 or a >= 1e5:
            return f"{value:.2e}"
        if a < 10:
            return f"{value:.3f}"
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if value is None:
        return "—"
    return str(value)


def _cell(value: Any, extra_class: str = "") -> str:
    if isinstance(value, bool):
        return f'<td class="{"yes" if value else "no"} {extra_class}" data-v="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = value if math.isfinite(value) else ("1e308" if value > 0 else "-1e308") if not math.isnan(value) else ""
        return f'<td class="num {extra_class}" data-v="{v}">{_e(fmt(value))}</td>'
    if isinstance(value, (dict, list)):
        return f'<td class="{extra_class}"><code>{_e(json.dumps(value)[:200])}</code></td>'
    return f'<td class="{extra_class}">{_e(fmt(value))}</td>'


def table(columns: Sequence[tuple[str, str]], rows: Sequence[dict], cls: str = "sortable", caption: str = "") -> str:
    """A sortable table of ``rows`` (dicts) with ``columns`` = [(key, label)]; dotted keys reach into dicts."""
    head = "".join(f'<th scope="col">{_e(label)}</th>' for _, label in columns)
    body = []
    for row in rows[:MAX_TABLE_ROWS]:
        body.append("<tr>" + "".join(_cell(_get(row, k)) for k, _ in columns) + "</tr>")
    more = f'<p class="legend">first {MAX_TABLE_ROWS} of {len(rows)} rows shown</p>' if len(rows) > MAX_TABLE_ROWS else ""
    cap = f'<caption class="legend">{_e(caption)}</caption>' if caption else ""
    return f'<div class="table-wrap"><table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def _get(row: dict, key: str) -> Any:
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _flat(row: dict, prefix: str = "", depth: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 0:
            out.update(_flat(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out


def _auto_columns(rows: Sequence[dict], limit: int = 16) -> list[tuple[str, str]]:
    keys: list[str] = []
    for row in rows[:50]:
        for k, v in _flat(row).items():
            if k not in keys and not isinstance(v, (list, dict)):
                keys.append(k)
    return [(k, k.replace("_", " ")) for k in keys[:limit]]


def stat(label: str, value: str, state: str = "") -> str:
    return f'<div class="stat {state}"><div class="k">{_e(label)}</div><div class="v">{value}</div></div>'


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _first(d: dict, keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


# ----------------------------------------------------------------------------- inline SVG charts


def svg_strip(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    lo: float | None = None,
    hi: float | None = None,
    log: bool = False,
    ref: float | None = None,
    ref_label: str = "",
    xlabel: str = "",
) -> str:
    """A dot strip chart: one row per group, one dot per value, a bar at the median.

    Drawn as inline SVG (no plotting library, crisp in print). With ``log`` the
    axis is log10 (zeros are drawn at the left edge).
    """
    vals = [v for _, vs in groups for v in vs if v is not None and math.isfinite(v)]
    if not vals:
        return ""

    def tr(v: float) -> float:
        if not log:
            return v
        return math.log10(v) if v > 0 else -math.inf

    finite = [tr(v) for v in vals if tr(v) != -math.inf] + ([tr(ref)] if ref and (not log or ref > 0) else [])
    a = tr(lo) if lo is not None else (min(finite) if finite else 0.0)
    b = tr(hi) if hi is not None else (max(finite) if finite else 1.0)
    if log:
        a, b = math.floor(a), math.ceil(b)
    if b <= a:
        b = a + 1
    W, left, right, row = 640, 150, 24, 24
    H = 26 + row * len(groups) + 34
    x = lambda v: left + (min(max(v, a), b) - a) / (b - a) * (W - left - right)  # noqa: E731
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" style="max-width:{int(W * 1.3)}px" role="img" aria-label="{_e(xlabel)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    ticks = [float(t) for t in range(int(a), int(b) + 1)] if log else _ticks(a, b)
    y0, y1 = 20, 20 + row * len(groups)
    for t in ticks:
        xt = x(t)
        label = f"1e{int(t)}" if log else f"{t:g}"
        parts.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{y0}" y2="{y1}" stroke="#e3e6ec"/>')
        parts.append(f'<text x="{xt:.1f}" y="{y1 + 14}" text-anchor="middle">{_e(label)}</text>')
    if ref is not None and (not log or ref > 0):
        xr = x(tr(ref))
        parts.append(f'<line x1="{xr:.1f}" x2="{xr:.1f}" y1="{y0 - 6}" y2="{y1}" stroke="#b3261e" stroke-dasharray="4 3"/>')
        anchor = "end" if xr > W - right - 60 else "start" if xr < left + 60 else "middle"
        parts.append(f'<text x="{xr:.1f}" y="{y0 - 9}" text-anchor="{anchor}" style="fill:#b3261e">{_e(ref_label)}</text>')
    for gi, (name, vs) in enumerate(groups):
        cy = y0 + row * gi + row / 2
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end">{_e(name)}</text>')
        good = [v for v in vs if v is not None and math.isfinite(v)]
        for i, v in enumerate(good):
            jitter = ((i * 7919) % 13 - 6) * 0.9
            t = tr(v)
            cx = x(t) if t != -math.inf else left
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy + jitter:.1f}" r="3.2" fill="#2f5fb3" fill-opacity="0.5"><title>{_e(name)}: {_e(fmt(v))}</title></circle>'
            )
        if good:
            med = sorted(good)[len(good) // 2]
            tm = tr(med)
            if tm != -math.inf:
                parts.append(
                    f'<line x1="{x(tm):.1f}" x2="{x(tm):.1f}" y1="{cy - 10:.1f}" y2="{cy + 10:.1f}" stroke="#1d2330" stroke-width="2.5"><title>median {_e(fmt(med))}</title></line>'
                )
    parts.append(f'<text x="{(left + W - right) / 2:.1f}" y="{H - 4}" text-anchor="middle">{_e(xlabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(a: float, b: float, n: int = 5) -> list[float]:
    span = b - a
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10)
    start = math.ceil(a / step) * step
    out, t = [], start
    while t <= b + 1e-9 * span:
        out.append(round(t, 10))
        t += step
    return out


def _heat(value: float | None, hue: int = 8) -> str:
    """Background colour for a value in [0, 1]: white → saturated ``hue``."""
    if value is None:
        return ""
    v = min(max(value, 0.0), 1.0)
    return f"background: hsl({hue} {int(20 + 65 * v)}% {int(97 - 42 * v)}%)"


# ----------------------------------------------------------------------------- sections


@dataclass
class Section:
    ident: str
    title: str
    body: str


class Report:
    """Builds the sections of one page from a :class:`Run`."""

    def __init__(self, run: Run, embed: Embedder) -> None:
        self.run = run
        self.s = run.summary or run.inferred
        self.embed = embed
        self.sections: list[Section] = []
        self.consumed: set[str] = {"command", "versions", "date", "created", "started", "finished"}
        self._bad_listed = False

    # -- header ------------------------------------------------------------
    HEADER_FIELDS = (
        ("model", "model"),
        ("weights", "weights"),
        ("layer", "explanation layer"),
        ("shift_layer", "shift layer"),
        ("method", "method"),
        ("construction", "construction"),
        ("strength", "strength K"),
        ("region", "target"),
        ("target", "target"),
        ("methods", "methods"),
        ("scores", "scores"),
        ("images", "images"),
        ("float64_head", "float64 head"),
        ("tolerance", "tolerance"),
        ("seconds", "run time (s)"),
    )

    def date(self) -> tuple[str, str]:
        for key in ("date", "finished", "created", "started", "timestamp"):
            if self.s.get(key):
                return str(self.s[key]), "run date"
        src = self.run.path / self.run.summary_name
        if not src.is_file():
            src = max(self.run.images, key=lambda p: p.stat().st_mtime, default=self.run.path)
        t = _dt.datetime.fromtimestamp(src.stat().st_mtime, _dt.UTC)
        return t.strftime("%Y-%m-%d %H:%M UTC"), f"{src.name} written"

    def header(self) -> str:
        from . import __version__

        cmd = self.run.command or "incomplete run"
        if self.run.summary is None and self.run.command:
            cmd += " (incomplete)"
        items = []
        for key, label in self.HEADER_FIELDS:
            if key not in self.s or self.s[key] in (None, "", []):
                continue
            self.consumed.add(key)
            value = self.s[key]
            if isinstance(value, list):
                shown = f"{len(value)}: " + _names([str(v) for v in value], 6)
            elif isinstance(value, dict) and "evaluated" in value:
                shown = f"{value['evaluated']} evaluated of {value.get('listed', '?')}" + (
                    f" ({value['bad']} unreadable)" if value.get("bad") else ""
                )
            elif isinstance(value, dict):
                shown = ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
            elif key == "seconds" and _num(value) is not None:
                shown = f"{value:.1f}"
            else:
                shown = fmt(value)
            items.append(f"<div><dt>{_e(label)}</dt><dd>{_e(shown)}</dd></div>")
        date, date_label = self.date()
        items.append(f"<div><dt>{_e(date_label)}</dt><dd>{_e(date)}</dd></div>")
        versions = self.s.get("versions") if isinstance(self.s.get("versions"), dict) else {}
        vtext = " · ".join(f"{k} {v}" for k, v in versions.items()) or f"not recorded (report by logitshift {__version__})"
        items.append(f"<div><dt>versions</dt><dd>{_e(vtext)}</dd></div>")
        bits = [
            f"logitshift {versions.get('logitshift', __version__)}",
            f"“logitshift {self.run.command}”" if self.run.command else "run folder " + self.run.path.name,
        ]
        if self.s.get("model"):
            bits.append(f"model {self.s['model']}" + (f", layer {self.s['layer']}" if self.s.get("layer") else ""))
        if self.s.get("construction"):
            strength = self.s.get("strength")
            shown = (
                ", ".join(f"{k} {v:g}" if _num(v) is not None else f"{k} {v}" for k, v in strength.items())
                if isinstance(strength, dict)
                else fmt(strength)
            )
            k = f", K={shown}" if strength is not None else ""
            bits.append(f"{self.s['construction']} shift{k}" + (f" at {self.s['shift_layer']}" if self.s.get("shift_layer") else ""))
        bits.append(date)
        cite = "; ".join(bits) + f". After {PAPER}."
        line = self.s.get("command_line") or self.s.get("argv")
        self.consumed.update({"command_line", "argv"})
        if isinstance(line, list):
            line = " ".join(map(str, line))
        command = f'<p class="cite">Command: <code>{_e(line)}</code></p>' if line else ""
        finding = self.s.get("finding")
        self.consumed.add("finding")
        finding_html = f'<p class="finding" id="finding">{_e(finding)}</p>' if isinstance(finding, str) and finding else ""
        return (
            f'<header class="page"><div class="inner"><h1>logitshift report · <span class="cmd">{_e(cmd)}</span></h1>{finding_html}'
            f'<p class="lede">Run folder <code>{_e(self.run.path.resolve())}</code>. The logit shift z → z + t(x)·1 keeps every '
            f"prediction and probability and changes every gradient of a logit; this page shows what it does to the explanations.</p>"
            f'<dl class="meta">{"".join(items)}</dl>{command}<p class="cite">Cite as: <code>{_e(cite)}</code></p></div></header>'
        )

    # -- rows of a demo-like summary ---------------------------------------
    def rows(self) -> list[dict]:
        rows = self.s.get("results")
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            return rows
        return []

    def equivalence(self) -> None:
        rows = [r for r in self.rows() if "max_abs_prob_diff" in r]
        nested = self.s.get("equivalence") if isinstance(self.s.get("equivalence"), dict) else {}
        top = _num(self.s.get("max_abs_prob_diff", nested.get("max_abs_prob_diff")))
        if not rows and top is None:
            return
        self.consumed.update({"max_abs_prob_diff", "top1_agree", "max_abs_shift", "equivalence"})
        tol = _num(self.s.get("tolerance"))
        diffs = [_num(r.get("max_abs_prob_diff")) for r in rows]
        worst = top if top is not None else max((d for d in diffs if d is not None), default=None)
        cards = []
        if worst is not None:
            ok = tol is None or worst <= tol
            cards.append(
                stat(
                    "max |Δprob|",
                    f"{_e(fmt(worst))}"
                    + (f" <small>≤ {_e(fmt(tol))}</small>" if tol and ok else (f" <small>&gt; {_e(fmt(tol))}</small>" if tol else "")),
                    "ok" if ok else "bad",
                )
            )
        agree = [r.get("top1_agree") for r in rows if isinstance(r.get("top1_agree"), bool)]
        if agree:
            n = sum(agree)
            cards.append(stat("top-1 agreement", f"{n} / {len(agree)}", "ok" if n == len(agree) else "bad"))
        elif isinstance(self.s.get("top1_agree"), bool):
            cards.append(stat("top-1 agreement", "all" if self.s["top1_agree"] else "not all", "ok" if self.s["top1_agree"] else "bad"))
        elif _num(nested.get("top1_agree")) is not None:
            share = float(nested["top1_agree"])
            cards.append(stat("top-1 agreement", f"{100 * share:.1f}% of images", "ok" if share == 1 else "bad"))
        if _num(nested.get("images_over_tolerance")) is not None:
            n = nested["images_over_tolerance"]
            cards.append(stat("images over the tolerance", str(n), "ok" if n == 0 else "bad"))
        if _num(self.s.get("max_abs_shift")) is not None:
            cards.append(stat("largest |t(x)|", _e(fmt(self.s["max_abs_shift"]))))
        body = (
            '<p class="lede">The shifted model must be equivalent to the original: the same probabilities (max |Δprob| '
            "within the tolerance) and the same top-1 class on every image.</p>"
            f'<div class="stats">{"".join(cards)}</div>'
        )
        per_image: dict[str, float] = {}
        for r in rows:
            d = _num(r.get("max_abs_prob_diff"))
            if d is not None:
                name = str(r.get("image", "?"))
                per_image[name] = max(per_image.get(name, 0.0), d)
        zeros = sum(1 for d in per_image.values() if d == 0)
        if per_image and zeros == len(per_image):
            body += f'<p class="legend">max |Δprob| is exactly 0 on all {zeros} images.</p>'
        elif per_image:
            label = "max |Δprob| between the original and the shifted model (log scale)" + (
                f"; {zeros} image(s) exactly 0, drawn at the left edge" if zeros else ""
            )
            body += svg_strip(
                [("max |Δprob| per image", list(per_image.values()))],
                log=True,
                ref=tol,
                ref_label=f"tolerance {fmt(tol)}" if tol else "",
                xlabel=label,
            )
        if rows:
            cols = [
                ("image", "image"),
                ("class", "class"),
                ("class_name", "class name"),
                ("prob", "p"),
                ("predicted", "predicted"),
                ("max_abs_prob_diff", "max |Δprob|"),
                ("top1_agree", "top-1 agrees"),
            ]
            body += table([c for c in cols if any(c[0] in r for r in rows)], rows)
        self.sections.append(Section("equivalence", "Equivalence", body))

    def panels(self) -> None:
        rows = [r for r in self.rows() if "figure" in r or "maps" in r]
        if not rows:
            return
        self.consumed.update({"results", "images"})
        expected = [str(i) for i in self.s.get("images", [])] if isinstance(self.s.get("images"), list) else []
        seen = {str(r.get("image")) for r in rows}
        absent = [i for i in expected if i not in seen]
        if absent:
            self.run.notes.append(f"{len(absent)} image(s) listed in {self.run.summary_name} have no results: " + _names(absent))
        corner = self.corner_rows(rows)
        method = METHOD_LABELS.get(str(self.s.get("method", "gradcam")), str(self.s.get("method", "gradcam")))
        maps_overview = self.map_overview(rows, corner)
        # rows that share a figure (the paper construction: one figure per image, every class in it) share a panel
        groups: dict[str, list[dict]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(str(r["figure"]) if r.get("figure") else f"#{i}", []).append(r)
        cards = []
        tol = _num(self.s.get("tolerance"))
        for group in groups.values():
            first = group[0]
            title = f"{first.get('image', '?')} · " + ", ".join(f"{r.get('class_name', '')} ({r.get('class', '?')})" for r in group)
            fig = (
                self.embed.img(str(first["figure"]), f"{title}: {method} of the original and the shifted model, pre- and post-softmax")
                if first.get("figure")
                else '<div class="missing-img">no figure recorded for this row</div>'
            )
            badges = []
            for r in group:
                name = f"{r.get('class_name', '')}: " if len(group) > 1 else ""
                if r.get("predicted") is not None:
                    badges.append(f'<span class="badge">{_e(name)}{"predicted class" if r.get("predicted") else "requested class"}</span>')
                if _num(r.get("prob")) is not None:
                    badges.append(f'<span class="badge">{_e(name)}p = {_e(fmt(r["prob"]))}</span>')
            diffs = [_num(r.get("max_abs_prob_diff")) for r in group if _num(r.get("max_abs_prob_diff")) is not None]
            if diffs:
                ok = tol is None or max(diffs) <= tol  # type: ignore[operator]
                badges.append(f'<span class="badge {"ok" if ok else "bad"}">max |Δprob| {_e(fmt(max(diffs)))}</span>')  # type: ignore[type-var]
            agree = [r["top1_agree"] for r in group if isinstance(r.get("top1_agree"), bool)]
            if agree:
                badges.append(f'<span class="badge {"ok" if all(agree) else "bad"}">top-1 {"agrees" if all(agree) else "differs"}</span>')
            facts = self.panel_numbers(group, corner)
            key = " ".join(f"{r.get('image', '')} {r.get('class_name', '')} {r.get('class', '')}" for r in group).lower()
            cards.append(
                f'<article class="panel" data-key="{_e(key)}"><h3>{_e(title)}</h3><div class="badges">{"".join(badges)}</div>'
                f"<figure>{fig}</figure>{facts}</article>"
            )
        if corner:
            lede = (
                f'<p class="lede">One figure per image, as in the paper\'s Figures 3–5: rows are the original and the shifted model; for each class, '
                f"the columns are the pre-softmax (logit) and post-softmax (probability) {_e(method)} maps; the dashed outline is the cell (0, 0) the shift reads. "
                "Under each figure, <b>corner</b> is the share of the positive map in that cell (<b>max</b>: the map's largest cell is that cell) "
                "and <b>ρ</b> the Spearman rank correlation with the original model's map for the same score and class. Click a figure to enlarge it.</p>"
            )
        else:
            lede = (
                '<p class="lede">One figure per image and class, as in the paper\'s Figures 3–5: rows are the original and the shifted model, '
                f"columns pre-softmax (logit) and post-softmax (probability) {_e(method)}; the dashed outline is the shift's target. "
                "Under each figure, <b>mass</b> is the share of the positive map inside the target and <b>ρ</b> the Spearman rank correlation with the "
                "original model's map for the same score (one dot per image and class in the charts, bar = median). Click a figure to enlarge it.</p>"
            )
        body = (
            lede
            + maps_overview
            + f'<div class="toolbar"><label>Filter <input id="panel-filter" type="search" placeholder="image or class name"></label><span id="panel-count">{len(cards)} shown</span></div>'
            + f'<div class="panels">{"".join(cards)}</div>'
        )
        self.sections.append(Section("panels", f"Panels ({len(cards)})", body))

    @staticmethod
    def corner_rows(rows: list[dict]) -> bool:
        """Whether the maps carry the paper construction's corner numbers instead of a target mass."""
        return any(
            isinstance(r.get("maps"), dict) and any(isinstance(m, dict) and "corner_share" in m for m in r["maps"].values()) for r in rows
        )

    @staticmethod
    def panel_numbers(rows: list[dict], corner: bool = False) -> str:
        """The maps' numbers laid out like the figure: rows original/shifted; per class, columns pre/post-softmax."""
        group = [r for r in rows if isinstance(r.get("maps"), dict) and r["maps"]]
        if not group:
            return ""
        trs = []
        for variant in ("original", "shifted"):
            tds = []
            for r in group:
                for score in ("logit", "prob"):
                    m = r["maps"].get(f"{variant}_{score}")
                    if not isinstance(m, dict):
                        tds.append('<td class="num">—</td>')
                        continue
                    rho = _num(m.get("spearman_vs_original"))
                    if corner:
                        share = _num(m.get("corner_share"))
                        peak = " · <b>max</b>" if m.get("max_in_corner") is True else ""
                        tds.append(
                            f'<td class="num" style="{_heat(share)}">corner <b>{_e(fmt(share))}</b>{peak} · ρ <b>{_e(fmt(rho))}</b></td>'
                        )
                    else:
                        mass = _num(m.get("target_mass"))
                        tds.append(f'<td class="num" style="{_heat(mass)}">mass <b>{_e(fmt(mass))}</b> · ρ <b>{_e(fmt(rho))}</b></td>')
            trs.append(f'<tr><th scope="row">{variant}</th>{"".join(tds)}</tr>')
        if len(group) == 1:
            heads = '<th class="num">pre-softmax (logit)</th><th class="num">post-softmax (prob)</th>'
        else:
            heads = "".join(
                f'<th class="num">{_e(r.get("class_name", r.get("class", "")))} · {s}</th>' for r in group for s in ("pre", "post")
            )
        return f'<table class="numbers"><thead><tr><th></th>{heads}</tr></thead><tbody>{"".join(trs)}</tbody></table>'

    def map_overview(self, rows: list[dict], corner: bool = False) -> str:
        groups_mass, groups_rho = [], []
        metric = "corner_share" if corner else "target_mass"
        keys = [k for k in MAP_KEYS if any(isinstance(r.get("maps"), dict) and k in r["maps"] for r in rows)]
        for k in keys:
            label = k.replace("_logit", " · pre-softmax").replace("_prob", " · post-softmax")
            groups_mass.append((label, [_num(_get(r, f"maps.{k}.{metric}")) for r in rows]))
            groups_rho.append((label, [_num(_get(r, f"maps.{k}.spearman_vs_original")) for r in rows]))
        if not keys:
            return ""
        what = (
            "corner share: share of the positive map in the corner cell (0, 0)"
            if corner
            else "target mass: share of the positive map inside the target"
        )
        return (
            '<div class="charts">'
            + svg_strip(groups_mass, lo=0, hi=1, xlabel=what)
            + svg_strip(groups_rho, lo=-1, hi=1, xlabel="ρ: Spearman against the original model's map, same score")
            + "</div>"
        )

    def paper_effects(self) -> None:
        """The paper construction's two effects: the corner (per-cell maps) and the class-agnostic map (averaged Grad-CAM)."""
        corner = self.s.get("corner") if isinstance(self.s.get("corner"), dict) else None
        agnostic = self.s.get("class_agnostic") if isinstance(self.s.get("class_agnostic"), dict) else None
        if not corner and not agnostic:
            return
        self.consumed.update({"corner", "class_agnostic"})
        body = ""
        if corner and isinstance(corner.get("classes"), list):
            method = METHOD_LABELS.get(str(corner.get("method")), str(corner.get("method")))
            body += (
                f'<h3>The upper-left corner ({_e(method)})</h3><p class="lede">Share of the positive pre-softmax map in the cell (0, 0) the shift '
                f"reads (the cell is {_e(fmt(corner.get('area_share')))} of the grid) and on how many image×class pairs the map's maximum is there. "
                "A map that keeps the gradient per cell (HiResCAM, LayerCAM) gains K·Σ_k A_k00 in that cell whatever the class; "
                "one that averages it over space (Grad-CAM) does not.</p>"
            )
            rows = []
            for c in corner["classes"]:
                if not isinstance(c, dict):
                    continue
                n = c.get("pairs")
                rows.append(
                    {
                        "class": c.get("class"),
                        "shifted": c.get("shifted_logit_mean_share"),
                        "shifted_max": f"{c.get('shifted_logit_max_in_corner')}/{n}",
                        "original": c.get("original_logit_mean_share"),
                        "original_max": f"{c.get('original_logit_max_in_corner')}/{n}",
                        "post": c.get("shifted_prob_mean_share"),
                        "post_rho": c.get("shifted_prob_min_spearman"),
                    }
                )
            body += table(
                [
                    ("class", "class"),
                    ("shifted", "shifted: corner share"),
                    ("shifted_max", "max there"),
                    ("original", "original: corner share"),
                    ("original_max", "max there"),
                    ("post", "post-softmax share"),
                    ("post_rho", "post-softmax min ρ"),
                ],
                rows,
            )
        if agnostic:
            body += (
                '<h3>The class-agnostic map</h3><p class="lede">Spearman between the pre-softmax maps of the predicted class and of the requested '
                "class, on the original and the shifted model: near 1 means the explanation no longer depends on the class asked about.</p>"
            )
            for name, entry in agnostic.items():
                if not isinstance(entry, dict):
                    continue
                cards = []
                for key, label in (
                    ("mean_original", "mean ρ, original"),
                    ("mean_shifted", "mean ρ, shifted"),
                    ("min_shifted", "min ρ, shifted"),
                ):
                    if _num(entry.get(key)) is not None:
                        cards.append(stat(label, _e(fmt(entry[key]))))
                body += f"<h4>{_e(METHOD_LABELS.get(name, name))}</h4>" + f'<div class="stats">{"".join(cards)}</div>'
                if isinstance(entry.get("rows"), list) and entry["rows"]:
                    body += table(
                        [("image", "image"), ("class_name", "requested class"), ("original", "ρ original"), ("shifted", "ρ shifted")],
                        entry["rows"],
                    )
        self.sections.append(Section("effects", "The paper's effects", body))

    # -- methods × scores matrix --------------------------------------------
    MASS_KEYS = ("target_mass_shifted", "target_mass", "mass", "mean_target_mass", "shifted_target_mass")
    RHO_KEYS = ("spearman_vs_original", "spearman", "spearman_min", "mean_spearman")
    THUMB_KEYS = ("thumbnail", "figure", "image", "map")

    def matrix_cells(self) -> tuple[str, list[dict]] | None:
        for key in ("cells", "matrix", "table", "rows", "results"):
            v = self.s.get(key)
            if isinstance(v, list) and v and all(isinstance(r, dict) and "method" in r and "score" in r for r in v):
                return key, v
            if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
                cells = []
                for method, row in v.items():
                    for score, cell in row.items():
                        cells.append({"method": method, "score": score, **(cell if isinstance(cell, dict) else {"value": cell})})
                if cells:
                    return key, cells
        return None

    def matrix(self) -> None:
        if self.run.command in ("demo", "audit", "evaluate"):
            return
        found = self.matrix_cells()
        if not found:
            return
        key, cells = found
        self.consumed.update({key, "methods", "scores"})
        grid = self._refs(self.s.get("figure"), self.s.get("figures"), self.s.get("grid"))
        tiles = self.grid_tiles(grid[0], cells) if len(grid) == 1 and not any(_first(c, self.THUMB_KEYS) for c in cells) else {}
        rho_label = "the smallest Spearman over the images" if any("spearman_min" in c for c in cells) else "Spearman"
        body = (
            '<p class="lede">Each cell: the mean share of the shifted model\'s map inside the target (large = the explanation was steered), '
            f"ρ = {rho_label} of the shifted model's map against the original model's (1 = unchanged). "
            "Click a column header to sort the methods by it; click a thumbnail to enlarge it.</p>" + self.matrix_table(cells, tiles)
        )
        if grid:
            body += (
                '<div class="gallery wide">'
                + "".join(
                    f"<figure>{self.embed.img(ref, 'figure grid: methods × scores', wide=True)}<figcaption>{_e(ref)}</figcaption></figure>"
                    for ref in grid
                )
                + "</div>"
            )
        self.consumed.update({"figure", "figures", "grid"})
        self.sections.append(Section("matrix", "Methods × scores", body))

    def grid_tiles(self, ref: str, cells: list[dict]) -> dict[tuple[str, str], Any]:
        """Thumbnails cut from a figure grid of methods (rows) × maps (columns), found by its image panels.

        The panels are the bands of rows and columns that are mostly not white
        (titles are thin text). With one column more than there are scores, the
        first is the original model's map. Returns {} when the grid does not
        have the expected shape.
        """
        path = self.embed.resolve(ref)
        if not path.is_file() or not path.is_relative_to(self.run.path.resolve()):
            return {}
        methods = list(dict.fromkeys(str(c["method"]) for c in cells))
        scores = list(dict.fromkeys(str(c["score"]) for c in cells))
        try:
            from PIL import Image

            with Image.open(path) as im:
                rgb = im.convert("RGB")
            rows, cols = _bands(rgb, axis=1), _bands(rgb, axis=0)
        except Exception:
            return {}
        if len(rows) != len(methods) or len(cols) not in (len(scores), len(scores) + 1):
            return {}
        keys = (["original"] if len(cols) == len(scores) + 1 else []) + scores
        return {(m, k): rgb.crop((c0, r0, c1, r1)) for (r0, r1), m in zip(rows, methods) for (c0, c1), k in zip(cols, keys)}

    def matrix_table(self, cells: list[dict], tiles: dict[tuple[str, str], Any] | None = None) -> str:
        """Methods (rows) × scores (columns), coloured by the verdict (fooled / changed / unchanged) or else by the target mass.

        Cells that carry a ``variant`` are read for the shifted model only; several
        rows per (method, score), e.g. one per image, are averaged. ``tiles``
        holds thumbnails cut from the figure grid, keyed (method, score), with
        ``(method, "original")`` for the original model's map.
        """
        tiles = tiles or {}
        if any("variant" in c for c in cells):
            cells = [c for c in cells if c.get("variant") == "shifted"]
        methods = [str(m) for m in self.s.get("methods", [])] if isinstance(self.s.get("methods"), list) else []
        scores = [str(s) for s in self.s.get("scores", [])] if isinstance(self.s.get("scores"), list) else []
        agg: dict[tuple[str, str], dict] = {}
        for c in cells:
            m, s = str(c["method"]), str(c["score"])
            if m not in methods:
                methods.append(m)
            if s not in scores:
                scores.append(s)
            a = agg.setdefault(
                (m, s),
                {"mass": [], "rho": [], "mass0": [], "verdicts": [], "expected": None, "surprise": False, "thumb": None, "note": None},
            )
            mass, rho = _first(c, self.MASS_KEYS), _first(c, self.RHO_KEYS)
            a["mass"].append(_num(mass.get("mean") if isinstance(mass, dict) else mass))
            a["rho"].append(_num(rho.get("mean") if isinstance(rho, dict) else rho))
            a["mass0"].append(_num(c.get("target_mass_original")))
            if isinstance(c.get("verdict"), str):
                a["verdicts"].append(c["verdict"].lower())
            elif isinstance(c.get("fooled"), bool):
                a["verdicts"].append("fooled" if c["fooled"] else "unchanged")
            if c.get("as_expected") is False:
                a["surprise"], a["expected"] = True, c.get("expected")
            t = _first(c, self.THUMB_KEYS)
            if a["thumb"] is None and isinstance(t, str) and t.lower().endswith(IMAGE_SUFFIXES):
                a["thumb"] = t
            if c.get("note") or c.get("why") or c.get("reason"):
                a["note"] = str(_first(c, ("note", "why", "reason")))

        def mean(xs: list) -> float | None:
            xs = [x for x in xs if x is not None]
            return sum(xs) / len(xs) if xs else None

        reference = any((m, "original") in tiles for m in methods)
        seen_verdicts: set[str] = set()
        any_mass_only = False
        head = '<th scope="col">method</th>'
        if reference:
            head += '<th scope="col" class="center">original model · logit</th>'
        head += "".join(f'<th scope="col" class="center">{_e(s)}</th>' for s in scores)
        trs = []
        for m in methods:
            tds = [f'<th scope="row" data-v="{_e(m)}">{_e(m)}</th>']
            if reference:
                mass0 = mean([x for s in scores if (m, s) in agg for x in agg[(m, s)]["mass0"]])
                thumb = self.embed.img_pil(tiles[(m, "original")], f"{m}: original model, logit") if (m, "original") in tiles else ""
                tds.append(
                    f'<td class="cell ref" data-v="{"" if mass0 is None else mass0}"><div class="m">{_e(fmt(mass0)) if mass0 is not None else ""}</div><div class="s">original</div>{thumb}</td>'
                )
            for s in scores:
                a = agg.get((m, s))
                if a is None:
                    tds.append('<td class="cell" data-v="">—</td>')
                    continue
                mass, rho = mean(a["mass"]), mean(a["rho"])
                verdict = max(set(a["verdicts"]), key=a["verdicts"].count) if a["verdicts"] else None
                if verdict in VERDICT_STYLE:
                    style = VERDICT_STYLE[verdict]
                    seen_verdicts.add(verdict)
                else:
                    style = _heat(mass)
                    any_mass_only = True
                if a["thumb"]:
                    thumb = self.embed.img(a["thumb"], f"{m} × {s}")
                elif (m, s) in tiles:
                    thumb = self.embed.img_pil(tiles[(m, s)], f"{m}: shifted model, {s}")
                else:
                    thumb = ""
                surprise = f'<div class="surprise">⚠ expected {_e(a["expected"] or "otherwise")}</div>' if a["surprise"] else ""
                tds.append(
                    f'<td class="cell" style="{style}" data-v="{"" if mass is None else mass}" title="{_e(a["note"] or "")}">'
                    f'<div class="m">{_e(fmt(mass)) if mass is not None else ""}</div>'
                    f'<div class="s">{("ρ " + _e(fmt(rho))) if rho is not None else ""}{(" · " + _e(verdict)) if verdict else ""}</div>{surprise}{thumb}</td>'
                )
            trs.append("<tr>" + "".join(tds) + "</tr>")
        legend = [
            f'<span class="swatch" style="{VERDICT_STYLE[v]}"></span>{v}' for v in ("fooled", "changed", "unchanged") if v in seen_verdicts
        ]
        if any_mass_only:
            legend.append(
                f'<span class="swatch" style="{_heat(0.2)}"></span>to<span class="swatch" style="{_heat(0.9)}"></span>more of the map inside the target'
            )
        surprises = sum(1 for a in agg.values() if a["surprise"])
        count = (
            f'<p class="legend">{len(agg) - surprises} of {len(agg)} cells as expected (logit fooled, immune scores unchanged).</p>'
            if any(c.get("as_expected") is not None for c in cells)
            else ""
        )
        return (
            f'<p class="legend">colour: {" ".join(legend)}</p>{count}'
            f'<div class="table-wrap fit"><table class="sortable matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'
        )

    # -- audit ---------------------------------------------------------------
    def audit(self) -> None:
        verdict = self.s.get("verdict")
        if verdict is None and self.run.command != "audit":
            return
        self.consumed.update(
            {
                "verdict",
                "score",
                "threshold",
                "kappa",
                "where",
                "classes",
                "classifier",
                "tests",
                "evidence",
                "figure",
                "figures",
                "exit_code",
            }
        )
        self.consumed.update({"finding", "sentence", "effects", "never_predicted", "passed_over", "outputs"})
        word = str(verdict).lower() if verdict is not None else "unknown"
        cls = word if word in ("clean", "shifted") else "unknown"
        detail = []
        for key, label in (("score", "score"), ("kappa", "κ max"), ("threshold", "κ threshold")):
            value = self.s.get(key)
            if value is not None:
                detail.append(f"{label} {value:.3g}" if _num(value) is not None else f"{label} {value}")
        if self.s.get("where"):
            detail.append(f"evidence at {self.s['where']}")
        if self.s.get("classes"):
            detail.append(f"{self.s['classes']} classes")
        if verdict is None:
            self.run.notes.append(f"the audit verdict is missing from {self.run.summary_name}")
        sentence = self.s.get("sentence")
        body = (
            f'<div class="verdict {cls}"><span class="word">{_e(word)}</span><span class="detail">{_e(" · ".join(detail))}</span></div>'
            + (f'<p class="lede"><b>{_e(str(sentence))}</b></p>' if isinstance(sentence, str) else "")
            + '<p class="lede">The effect compares, for every method and audited layer, the logit map with the map without the part of '
            "the common mode that a structural test proves is a shift, and with the map whose common mode is held to the largest size honest "
            "classes give (exactly 0 for an honest model; a map counts as changed below Spearman 0.9). "
            "The bypass test measures the part of the common-mode gradient that does not flow through the classifier's input (zero for an honest "
            "model, whatever its size); the head test, how much the classifier's common-mode gradient varies from image to image. "
            "κ compares the common mode's size (plain, and weighted by the activations as CAMs weight it) with the spread of the class gradients: "
            "evidence only. The score is the largest of the bypass and head ratios and effect / 0.1: above 1 the verdict is shifted.</p>"
        )
        effects_html = ""
        effects = self.s.get("effects")
        if isinstance(effects, list) and effects and all(isinstance(m, dict) for m in effects):
            hit = sorted((m for m in effects if _num(m.get("effect")) is not None and m["effect"] > 0), key=lambda m: -m["effect"])[:12]
            if hit:
                rows = [
                    {
                        "method": m.get("method"),
                        "layer": m.get("layer"),
                        "effect": m.get("effect"),
                        "structural": max(m.get("structural") or [0]),
                        "size": max(m.get("size") or [0]),
                    }
                    for m in hit
                ]
                effects_html = "<h3>Maps the common mode changes</h3>" + table(
                    [
                        ("method", "method"),
                        ("layer", "layer"),
                        ("effect", "effect (1 − Spearman)"),
                        ("structural", "structural"),
                        ("size", "size"),
                    ],
                    rows,
                )
        tests = self.s.get("tests")
        if isinstance(tests, dict) and tests and all(isinstance(t, dict) for t in tests.values()):
            rows = [
                {
                    "test": k,
                    "value": t.get("value"),
                    "ratio": t.get("ratio"),
                    "layer": t.get("layer", ""),
                    "fired": "yes" if t.get("fired") else "no",
                }
                for k, t in tests.items()
            ]
            body += "<h3>Tests</h3>" + table(
                [("test", "test"), ("value", "statistic"), ("ratio", "ratio (fires above 1)"), ("layer", "layer"), ("fired", "fired")], rows
            )
        evidence = self.s.get("evidence")
        if isinstance(evidence, list) and evidence and all(isinstance(e, dict) for e in evidence):
            body += "<h3>Evidence per layer</h3>" + self.audit_evidence(evidence)
        elif isinstance(evidence, dict) and evidence:
            nested = {k: v for k, v in evidence.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
            scalars = {k: v for k, v in evidence.items() if k not in nested}
            if scalars:
                body += "<h3>Evidence</h3>" + table([("k", "measure"), ("v", "value")], [{"k": k, "v": v} for k, v in scalars.items()])
            for k, v in nested.items():
                body += f"<h3>{_e(k.replace('_', ' '))}</h3>" + table(_auto_columns(v), [_flat(x) for x in v])
        elif self.run.command == "audit":
            self.run.notes.append(f"the audit's evidence is missing from {self.run.summary_name}")
        body += effects_html
        figs = self._refs(self.s.get("figure"), self.s.get("figures"))
        figs += [
            _rel(p, self.run.path) for p in self.run.images if p.stem.lower().startswith("audit") and _rel(p, self.run.path) not in figs
        ]
        if self.run.command == "audit" and not figs:
            self.run.notes.append("the audit figure (audit.png) is missing")
        if figs:
            body += (
                '<div class="gallery wide">'
                + "".join(
                    f"<figure>{self.embed.img(f, 'where the shift acts: κ per layer and per cell', wide=True)}<figcaption>{_e(f)}</figcaption></figure>"
                    for f in figs
                )
                + "</div>"
            )
        self.sections.append(Section("audit", "Audit verdict", body))

    def audit_evidence(self, evidence: list[dict]) -> str:
        """Per-layer rows (κ max, norms, disagreement), then κ per image × layer when the lists are per image."""

        def mean(v: Any) -> Any:
            xs = [x for x in v if _num(x) is not None] if isinstance(v, list) else None
            return sum(xs) / len(xs) if xs else v if not isinstance(v, list) else None

        def top(v: Any) -> Any:
            xs = [x for x in v if _num(x) is not None] if isinstance(v, list) else None
            return max(xs) if xs else v if not isinstance(v, list) else None

        rows = []
        for e in evidence:
            shape = e.get("shape")
            rows.append(
                {
                    "layer": e.get("layer"),
                    "shape": "×".join(map(str, shape)) if isinstance(shape, list) else shape,
                    "kappa_max": e.get("kappa_max", top(e.get("kappa"))),
                    "common": mean(e.get("common_norm")),
                    "class": mean(e.get("class_norm")),
                    "disagreement": e.get("disagreement_max", top(e.get("disagreement"))),
                    "bypass": e.get("bypass_max", top(e.get("bypass"))),
                }
            )
        cols = [
            ("layer", "layer"),
            ("shape", "shape"),
            ("kappa_max", "κ max"),
            ("common", "mean ‖∇ mean z‖"),
            ("class", "mean ‖∇(z_c − mean z)‖"),
            ("disagreement", "max 1 − Spearman"),
            ("bypass", "max bypass fraction"),
        ]
        cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
        out = table(cols, rows)
        names = [str(n) for n in self.s.get("images", [])] if isinstance(self.s.get("images"), list) else []
        kappas = [e.get("kappa") for e in evidence]
        if names and all(isinstance(k, list) and len(k) == len(names) for k in kappas):
            per_image = [{"image": n, **{str(e.get("layer")): k[i] for e, k in zip(evidence, kappas)}} for i, n in enumerate(names)]
            out += "<h3>κ per image and layer</h3>" + table(
                [("image", "image")] + [(str(e.get("layer")), str(e.get("layer"))) for e in evidence], per_image
            )
        return out

    # -- evaluation ------------------------------------------------------------
    def evaluate(self) -> None:
        if self.run.command != "evaluate" and not (self.run.stores and self.run.summary is None):
            return
        body = ""
        images = self.s.get("images")
        cards = []
        if isinstance(images, dict):
            self.consumed.add("images")
            for k in ("listed", "evaluated", "bad", "missing"):
                if _num(images.get(k)) is not None:
                    bad = k in ("bad", "missing") and images[k] > 0
                    cards.append(stat(f"images {k}", _e(fmt(images[k])), "bad" if bad else ""))
            if images.get("missing"):
                self.run.notes.append(
                    f"{images['missing']} listed image(s) were never evaluated (the run stopped early; resume it with --resume)"
                )
        if _num(self.s.get("rows")) is not None:
            self.consumed.add("rows")
            cards.append(stat("result rows", _e(fmt(self.s["rows"]))))
        if cards:
            body += f'<div class="stats">{"".join(cards)}</div>'
        if self.run.command == "evaluate" and self.s.get("complete") is False:
            self.run.notes.append(f"{self.run.summary_name} says the evaluation is not complete")
        self.consumed.add("complete")
        stats = self.s.get("table")
        if isinstance(stats, list) and stats and all(isinstance(r, dict) and "method" in r and "score" in r for r in stats):
            self.consumed.add("table")
            body += (
                "<h3>Methods × scores, shifted model</h3>"
                "<p class=\"lede\">Mean share of the shifted model's maps inside the target and mean ρ against the original model's maps, over all images.</p>"
                + self.matrix_table(stats)
            )
            flat = [_flat(r) for r in stats]
            cols = [("method", "method"), ("score", "score"), ("variant", "model"), ("rows", "rows")]
            for metric, short in (("target_mass", "mass"), ("spearman_vs_original", "ρ")):
                cols += [
                    (f"{metric}.{q}", f"{short} {q}") for q in ("mean", "median", "p10", "p90") if any(f"{metric}.{q}" in r for r in flat)
                ]
            body += "<h3>Statistics per method, score and model</h3>" + table([c for c in cols if any(c[0] in r for r in flat)], flat)
        for key in ("bad_images", "bad_files", "skipped", "failed", "errors", "unreadable"):
            bad = self.s.get(key)
            if isinstance(bad, list) and bad:
                self.consumed.add(key)
                rows = [b if isinstance(b, dict) else {"file": b} for b in bad]
                self._bad_listed = True
                body += f"<h3>Files not evaluated ({len(rows)})</h3>" + table(_auto_columns(rows), [_flat(r) for r in rows])
        tables = self.s.get("tables")
        if isinstance(tables, dict):
            self.consumed.add("tables")
            for name, t in tables.items():
                body += f"<h3>{_e(str(name).replace('_', ' '))}</h3>" + self._any_table(t)
        if self.run.summary is None or "table" not in self.s:
            for store in self.run.stores:
                body += self.store_summary(store)
        files = self.s.get("files") if isinstance(self.s.get("files"), dict) else {}
        plots = self._refs(self.s.get("plots"), files.get("plots"), self.s.get("figures"), self.s.get("distributions"))
        if not plots and self.run.summary is None:
            plots = [_rel(p, self.run.path) for p in self.run.images if p.parent.name == "plots"]
        self.consumed.update({"plots", "figures", "distributions", "files"})
        if plots:
            body += (
                '<h3>Distributions</h3><div class="gallery">'
                + "".join(
                    f"<figure>{self.embed.img(p, Path(p).stem.replace('_', ' '))}<figcaption>{_e(p)}</figcaption></figure>" for p in plots
                )
                + "</div>"
            )
        if body:
            self.sections.append(Section("evaluation", "Evaluation", body))

    def store_summary(self, store: Path) -> str:
        """What a SQLite results store holds, read-only: images done/bad, rows, means per method/score/variant.

        Works on the store of a run still in progress or killed (WAL mode: the
        last committed batch is what is read).
        """
        name = _rel(store, self.run.path)
        try:
            con = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
            tabs = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        except sqlite3.Error as exc:
            self.run.notes.append(f"results store {name} could not be read ({exc})")
            return ""
        q = lambda c: '"' + str(c).replace('"', '""') + '"'  # noqa: E731
        out = [f"<h3>Results store <code>{_e(name)}</code></h3>"]
        try:
            counts = {t: con.execute(f"SELECT COUNT(*) FROM {q(t)}").fetchone()[0] for t in tabs}
            cards = [stat("result rows" if t == "rows" else f"{t} rows", str(n)) for t, n in counts.items() if t not in ("meta", "images")]
            if "images" in tabs and "status" in self._columns(con, "images"):
                status = dict(con.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
                cards.insert(0, stat("images done", str(status.get("done", 0))))
                if status.get("bad"):
                    cards.insert(1, stat("images not evaluated", str(status["bad"]), "bad"))
            out.append(f'<div class="stats">{"".join(cards)}</div>')
            if "images" in tabs and {"status", "reason"} <= set(self._columns(con, "images")) and not self._bad_listed:
                bad = [
                    dict(zip(("image", "reason"), r))
                    for r in con.execute("SELECT image, reason FROM images WHERE status = 'bad' ORDER BY image")
                ]
                if bad:
                    out.append(f"<h3>Files not evaluated ({len(bad)})</h3>" + table([("image", "file"), ("reason", "reason")], bad))
            for t in tabs:
                if t in ("meta", "images") or not counts[t]:
                    continue
                cols = self._columns(con, t)
                group = [c for c in cols if c in ("method", "score", "model", "variant")]
                nums = [c for c, ty in cols.items() if any(x in ty for x in ("REAL", "FLOA", "DOUB")) and c not in group][:8]
                if group and nums:
                    sql = (
                        f"SELECT {', '.join(map(q, group))}, COUNT(*), {', '.join(f'AVG({q(c)})' for c in nums)} FROM {q(t)} "
                        f"GROUP BY {', '.join(map(q, group))} LIMIT {MAX_TABLE_ROWS}"
                    )
                    keys = group + ["rows"] + [f"mean {c}" for c in nums]
                    rows = [dict(zip(keys, r)) for r in con.execute(sql)]
                    out.append(
                        f"<h3>Means per {' × '.join(group)} (table <code>{_e(t)}</code>)</h3>"
                        + table([(k, k.replace("_", " ")) for k in keys], rows)
                    )
        except sqlite3.Error as exc:
            self.run.notes.append(f"results store {name} could not be read ({exc})")
        finally:
            con.close()
        return "".join(out)

    @staticmethod
    def _columns(con: sqlite3.Connection, t: str) -> dict[str, str]:
        return {r[1]: (r[2] or "").upper() for r in con.execute(f'PRAGMA table_info("{t.replace(chr(34), chr(34) * 2)}")')}

    # -- anything else ---------------------------------------------------------
    def leftovers(self) -> None:
        body = ""
        scalars = {k: v for k, v in self.s.items() if k not in self.consumed and not isinstance(v, (list, dict))}
        if scalars:
            body += "<h3>Settings and totals</h3>" + table([("k", "key"), ("v", "value")], [{"k": k, "v": v} for k, v in scalars.items()])
        for k, v in self.s.items():
            if k in self.consumed or k in scalars:
                continue
            if isinstance(v, (list, dict)) and v:
                rendered = self._any_table(v)
                if rendered:
                    body += f"<h3>{_e(k.replace('_', ' '))}</h3>" + rendered
        for md in self.run.markdown if self.run.summary is None else []:
            for i, rows in enumerate(parse_markdown_tables(md.read_text(encoding="utf-8", errors="replace"))):
                body += f"<h3>{_e(md.name)}{f' ({i + 1})' if i else ''}</h3>" + table([(c, c) for c in rows[0]], rows)
        if body:
            self.sections.append(Section("details", "Details", body))

    def _any_table(self, value: Any) -> str:
        if isinstance(value, str):
            parsed = parse_markdown_tables(value)
            return "".join(table([(c, c) for c in rows[0]], rows) for rows in parsed) if parsed else f"<pre>{_e(value)}</pre>"
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            flat = [_flat(x) for x in value]
            return table(_auto_columns(flat), flat)
        if isinstance(value, list) and value and all(not isinstance(x, (dict, list)) for x in value):
            return f"<p>{_e(_names([fmt(x) for x in value], 40))}</p>"
        if isinstance(value, dict) and value:
            if all(isinstance(x, dict) for x in value.values()):
                rows = [{"name": k, **_flat(x)} for k, x in value.items()]
                return table(_auto_columns(rows), rows)
            return table([("k", "key"), ("v", "value")], [{"k": k, "v": v} for k, v in _flat(value).items()])
        return ""

    def other_figures(self) -> None:
        rest = [p for p in self.run.images if p.resolve() not in self.embed.used]
        if not rest:
            return
        title = "Figures found" if self.run.summary is None else "Other figures"
        lede = (
            "summary.json is missing, so these figures are shown without their numbers."
            if self.run.summary is None
            else f"Figures in the folder that {self.run.summary_name} does not mention (for example left over from an earlier run in the same folder)."
        )
        figs = "".join(
            f"<figure>{self.embed.img(p, p.stem.replace('_', ' '))}<figcaption>{_e(_rel(p, self.run.path))}</figcaption></figure>"
            for p in rest
        )
        self.sections.append(
            Section("figures", f"{title} ({len(rest)})", f'<p class="lede">{_e(lede)}</p><div class="gallery">{figs}</div>')
        )

    @staticmethod
    def _refs(*values: Any) -> list[str]:
        out: list[str] = []
        for v in values:
            items = v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else [v]
            for item in items:
                if isinstance(item, str) and item.lower().endswith(IMAGE_SUFFIXES) and item not in out:
                    out.append(item)
        return out

    def build(self) -> list[Section]:
        self.equivalence()
        self.paper_effects()
        self.panels()
        self.matrix()
        self.audit()
        self.evaluate()
        self.leftovers()
        self.other_figures()
        return self.sections


def parse_markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Pipe tables in Markdown ``text`` as lists of row dicts (header → cell)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        head, rule = lines[i].strip(), lines[i + 1].strip()
        if head.startswith("|") and re.fullmatch(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?", rule):
            cols = [c.strip() for c in head.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(cols, cells + [""] * (len(cols) - len(cells)))))
                i += 1
            if rows:
                tables.append(rows)
        else:
            i += 1
    return tables


# ----------------------------------------------------------------------------- the page


def _template(name: str) -> str:
    return resources.files("logitshift").joinpath(f"templates/{name}").read_text(encoding="utf-8")


def render(run: Run, max_mb: float = DEFAULT_MAX_MB) -> tuple[str, Embedder]:
    """The page for ``run`` as one HTML string (and the embedder, for its statistics)."""
    side, quality = choose_level(run.images, max_mb * 1e6)
    embed = Embedder(run, side, quality)
    report = Report(run, embed)
    header = report.header()
    sections = report.build()
    if embed.missing:
        run.notes.append(f"{len(embed.missing)} figure(s) named in {run.summary_name} are missing: " + _names(embed.missing))
    if embed.outside:
        run.notes.append(
            f"{len(embed.outside)} figure reference(s) point outside the run folder and were not embedded: " + _names(embed.outside)
        )
    if embed.unreadable:
        run.notes.append(f"{len(embed.unreadable)} figure(s) could not be read: " + _names(embed.unreadable))
    if not sections:
        run.notes.append("nothing in this folder could be shown")
    notes = ""
    if run.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in run.notes)
        notes = f'<div class="note warn" id="missing" role="alert"><strong>This run folder is incomplete: some parts are missing or could not be read.</strong><ul>{items}</ul></div>'
    toc = "".join(f'<li><a href="#{s.ident}">{_e(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.ident}"><h2>{_e(s.title)}</h2>{s.body}</section>' for s in sections)
    from . import __version__

    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"logitshift {run.command or 'run'} · {run.path.resolve().name}"
    page = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="generator" content="logitshift {__version__}">'
        f"<title>{_e(title)}</title><style>{_template('report.css')}</style></head><body>"
        f'{header}<nav class="toc"><ul>{toc}</ul></nav><main>{notes}{body}'
        f"<footer>Generated by logitshift {_e(__version__)} on {_e(generated)} from <code>{_e(run.path.resolve())}</code>; "
        f"{len(embed.ids)} figures embedded (longest side ≤ {side} px). Self-contained: no network access. {_e(PAPER)}.</footer></main>"
        '<div id="lightbox" hidden><img alt=""><p></p></div>'
        f"<script>{_template('report.js')}</script></body></html>\n"
    )
    return page, embed


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, max_mb: float = DEFAULT_MAX_MB) -> Path:
    """Write the self-contained HTML report of ``run_dir`` to ``out`` (default ``run_dir/report.html``).

    Other commands call this for their ``--report`` flag, after their
    ``summary.json`` is written. ``max_mb`` bounds the embedded figures (the
    page adds its text and tables on top).
    """
    return _write(run_dir, out, max_mb)[0]


def _write(run_dir: str | os.PathLike, out: str | os.PathLike | None, max_mb: float) -> tuple[Path, Run, Embedder]:
    run = load_run(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    if target.is_dir():
        raise LogitShiftError(f"--out {str(target)!r}: is a folder; expected an HTML file name")
    page, embed = render(run, max_mb)
    return atomic_write(target, page), run, embed


@dataclass
class ReportConfig:
    """What ``logitshift report`` renders: the run folder, the page's path (default ``RUN_DIR/report.html``) and its figure budget."""

    run_dir: str
    out: str | None = None
    max_mb: float = DEFAULT_MAX_MB


@dataclass
class Written:
    """The page :func:`run_report` wrote: its path, size, number of embedded figures, and notes about an incomplete folder."""

    path: Path
    figures: int
    notes: list[str]

    def line(self) -> str:
        size = self.path.stat().st_size / 1e6
        return f"report: {self.path} ({size:.1f} MB, {self.figures} figures)" + (
            f"; incomplete run folder: {len(self.notes)} note(s) at the top of the page" if self.notes else ""
        )


def run_report(cfg: ReportConfig) -> Written:
    """Write the report page of ``cfg.run_dir`` (see :func:`write_report`)."""
    path, run, embed = _write(cfg.run_dir, cfg.out, cfg.max_mb)
    return Written(path, len(embed.ids), list(run.notes))
