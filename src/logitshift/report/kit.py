"""The report's HTML kit: page shell, tables, stat cards, strip charts, colour bars, legends, embedded figures.

Everything a renderer (``report/demo.py``, ``matrix.py``, ``audit.py``,
``evaluate.py``) needs to build a self-contained page: figures embedded as
base64 (downscaled to fit a size budget), inline styles and scripts, a
Content-Security-Policy that forbids every network request. Nothing here knows
a command's record.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.names import DEFAULT_MAX_MB as DEFAULT_MAX_MB

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


LADDER = ((1000, 85), (760, 80), (640, 78), (560, 75), (480, 72), (400, 70), (320, 65), (240, 60))


KEEP_PNG_BYTES = 160_000


PROGRESSIVE = False


PAPER = "M. Lerma, M. Lucas, “A Vulnerability of Attribution Methods Using Pre-Softmax Scores”, arXiv:2307.03305"


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


MAX_TABLE_ROWS = 2000


def names(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def encode(path: Path, side: int, quality: int) -> tuple[str, int, int]:
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
        rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
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
                sizes.append(len(encode(p, side, quality)[0]))
            except Exception:  # an unreadable figure is reported where it is shown
                continue
        if not sizes or sum(sizes) / len(sizes) * len(paths) <= max_bytes:
            return side, quality
    return LADDER[-1]


class Embedder:
    """Embeds each figure once; later uses of the same file copy it in the browser (``data-same``)."""

    def __init__(self, root: Path, side: int, quality: int) -> None:
        self.root = root
        self.side, self.quality = side, quality
        self.ids: dict[Any, str] = {}
        self.used: set[Path] = set()
        self.bytes = 0
        self.unreadable: list[str] = []
        self.missing: list[str] = []
        self.outside: list[str] = []

    def resolve(self, ref: str) -> Path:
        return (self.root / ref).resolve()

    def img(self, ref: str | Path, alt: str, cls: str = "zoom", wide: bool = False) -> str:
        """An ``<img>`` holding the figure ``ref`` (relative to the run folder), or a visible placeholder.

        Only files inside the run folder are embedded (a reference such as
        ``../../secret.png``, or a link pointing out of the folder, is refused).
        ``wide`` figures (grids of many small maps) get twice the pixels.
        """
        path = ref.resolve() if isinstance(ref, Path) else self.resolve(ref)
        name = str(ref) if not isinstance(ref, Path) else rel(path, self.root)
        if not path.is_relative_to(self.root.resolve()):
            self.outside.append(name)
            return f'<div class="missing-img">figure {esc(name)} lies outside the run folder: not embedded</div>'
        self.used.add(path)
        if path in self.ids:
            return f'<img class="{cls}" data-same="{self.ids[path]}" alt="{esc(alt)}">'
        if not path.is_file():
            self.missing.append(name)
            return f'<div class="missing-img">figure {esc(name)} is missing</div>'
        try:
            uri, w, h = encode(path, max(self.side * 2, 1600) if wide else self.side, self.quality)
        except Exception as exc:  # truncated or not an image: show the gap, keep going
            self.unreadable.append(f"{name} ({type(exc).__name__})")
            return f'<div class="missing-img">figure {esc(name)} could not be read (truncated or not an image)</div>'
        return self._tag(path, uri, w, h, alt, cls)

    def img_pil(self, im: Any, alt: str, cls: str = "zoom") -> str:
        """An ``<img>`` of a PIL image made here (a thumbnail cut from a figure)."""
        uri, w, h = pil_uri(im, self.side, self.quality)
        return self._tag(("pil", len(self.ids)), uri, w, h, alt, cls)

    def _tag(self, key: Any, uri: str, w: int, h: int, alt: str, cls: str) -> str:
        ident = f"img{len(self.ids) + 1}"
        self.ids[key] = ident
        self.bytes += len(uri)
        return f'<img id="{ident}" class="{cls}" src="{uri}" width="{w}" height="{h}" alt="{esc(alt)}" decoding="sync" loading="eager">'


def pil_uri(im: Any, side: int, quality: int) -> tuple[str, int, int]:
    im = im.copy()
    if max(im.size) > side:
        from PIL import Image

        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True, progressive=PROGRESSIVE)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (posix), or its name."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def esc(value: Any) -> str:
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


def cell(value: Any, extra_class: str = "") -> str:
    if isinstance(value, bool):
        return f'<td class="{"yes" if value else "no"} {extra_class}" data-v="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = value if math.isfinite(value) else ("1e308" if value > 0 else "-1e308") if not math.isnan(value) else ""
        return f'<td class="num {extra_class}" data-v="{v}">{esc(fmt(value))}</td>'
    if isinstance(value, (dict, list)):
        return f'<td class="{extra_class}"><code>{esc(json.dumps(value)[:200])}</code></td>'
    return f'<td class="{extra_class}">{esc(fmt(value))}</td>'


def table(columns: Sequence[tuple[str, str]], rows: Sequence[dict], cls: str = "sortable", caption: str = "") -> str:
    """A sortable table of ``rows`` (dicts) with ``columns`` = [(key, label)]; dotted keys reach into dicts."""
    head = "".join(f'<th scope="col">{esc(label)}</th>' for _, label in columns)
    body = []
    for row in rows[:MAX_TABLE_ROWS]:
        body.append("<tr>" + "".join(cell(get(row, k)) for k, _ in columns) + "</tr>")
    more = f'<p class="legend">first {MAX_TABLE_ROWS} of {len(rows)} rows shown</p>' if len(rows) > MAX_TABLE_ROWS else ""
    cap = f'<caption class="legend">{esc(caption)}</caption>' if caption else ""
    return f'<div class="table-wrap"><table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def get(row: dict, key: str) -> Any:
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def flat(row: dict, prefix: str = "", depth: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 0:
            out.update(flat(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out


def stat(label: str, value: str, state: str = "") -> str:
    return f'<div class="stat {state}"><div class="k">{esc(label)}</div><div class="v">{value}</div></div>'


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


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
        f'<svg class="chart" viewBox="0 0 {W} {H}" style="max-width:{int(W * 1.3)}px" role="img" aria-label="{esc(xlabel)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    marks = [float(t) for t in range(int(a), int(b) + 1)] if log else ticks(a, b)
    y0, y1 = 20, 20 + row * len(groups)
    for t in marks:
        xt = x(t)
        label = f"1e{int(t)}" if log else f"{t:g}"
        parts.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{y0}" y2="{y1}" stroke="#e3e6ec"/>')
        parts.append(f'<text x="{xt:.1f}" y="{y1 + 14}" text-anchor="middle">{esc(label)}</text>')
    if ref is not None and (not log or ref > 0):
        xr = x(tr(ref))
        parts.append(f'<line x1="{xr:.1f}" x2="{xr:.1f}" y1="{y0 - 6}" y2="{y1}" stroke="#5b6475" stroke-dasharray="4 3"/>')
        anchor = "end" if xr > W - right - 60 else "start" if xr < left + 60 else "middle"
        parts.append(f'<text x="{xr:.1f}" y="{y0 - 9}" text-anchor="{anchor}" style="fill:#5b6475">{esc(ref_label)}</text>')
    for gi, (name, vs) in enumerate(groups):
        cy = y0 + row * gi + row / 2
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end">{esc(name)}</text>')
        good = [v for v in vs if v is not None and math.isfinite(v)]
        for i, v in enumerate(good):
            jitter = ((i * 7919) % 13 - 6) * 0.9
            t = tr(v)
            cx = x(t) if t != -math.inf else left
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy + jitter:.1f}" r="3.2" fill="#2f5fb3" fill-opacity="0.5"><title>{esc(name)}: {esc(fmt(v))}</title></circle>'
            )
        if good:
            med = sorted(good)[len(good) // 2]
            tm = tr(med)
            if tm != -math.inf:
                parts.append(
                    f'<line x1="{x(tm):.1f}" x2="{x(tm):.1f}" y1="{cy - 10:.1f}" y2="{cy + 10:.1f}" stroke="#1d2330" stroke-width="2.5"><title>median {esc(fmt(med))}</title></line>'
                )
    parts.append(f'<text x="{(left + W - right) / 2:.1f}" y="{H - 4}" text-anchor="middle">{esc(xlabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def ticks(a: float, b: float, n: int = 5) -> list[float]:
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


def heat(value: float | None, hue: int = 215) -> str:
    """Background colour for a value in [0, 1]: white → saturated ``hue``."""
    if value is None:
        return ""
    v = min(max(value, 0.0), 1.0)
    return f"background: hsl({hue} {int(20 + 65 * v)}% {int(97 - 42 * v)}%)"


@dataclass
class Section:
    ident: str
    title: str
    body: str


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


def template(name: str) -> str:
    return resources.files("logitshift").joinpath(f"templates/{name}").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- colours that say what they mean

#: cell colours: red only for a failed check; neutral values stay neutral
FAILED = "background: hsl(4 78% 82%)"
PASSED = "background: hsl(145 45% 86%)"
CHANGED = "background: hsl(42 90% 82%)"
VERDICT_STYLE = {"fooled": FAILED, "unchanged": PASSED, "changed": CHANGED}
#: the colour maps of the figures (logitshift.view.figures), as CSS gradients
JET = "linear-gradient(to right, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00, #ff0000, #7f0000)"
RDBU = "linear-gradient(to right, #053061, #4393c3, #f7f7f7, #d6604d, #67001f)"


def colour_bar(signed: bool = False, label: str = "") -> str:
    """The figures' colour scale as a small bar with its end labels (``jet`` 0…1, or ``RdBu`` −1…0…+1)."""
    from ..view.display import CLIP_PERCENTILE

    ends = ("−1 (negative)", "0", "+1 (positive)") if signed else ("0", "", "1 (the map's top)")
    what = label or (
        f"map value, scaled per map and clipped at the {CLIP_PERCENTILE:g}th percentile of |map|"
        + ("; signed maps: blue negative, white 0, red positive" if signed else "")
    )
    return (
        f'<div class="colourbar"><span class="bar" style="background: {RDBU if signed else JET}"></span>'
        f'<span class="ends"><span>{esc(ends[0])}</span><span>{esc(ends[1])}</span><span>{esc(ends[2])}</span></span>'
        f'<span class="what">{esc(what)}</span></div>'
    )


def legend(items: Sequence[tuple[str, str]]) -> str:
    """A legend: (term, meaning) pairs, e.g. ("dashed outline", "the shift's target"), ("mass", "share … inside the target")."""
    return '<dl class="legend-list">' + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items) + "</dl>"


def finding(sentence: str) -> str:
    """The page's first paragraph: the result in one sentence with its numbers."""
    return f'<p class="finding" id="finding">{esc(sentence)}</p>'


def figure(img_html: str, caption: str = "") -> str:
    return f"<figure>{img_html}" + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "") + "</figure>"


def page(title: str, header: str, sections: Sequence[Section], notes: Sequence[str], footer: str) -> str:
    """The self-contained page: header (finding first), table of contents, notes of what is missing, sections, footer."""
    from .._version import __version__

    note = ""
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        note = (
            '<div class="note warn" id="missing" role="alert"><strong>This run folder is incomplete: some parts are missing or '
            f"could not be read.</strong><ul>{items}</ul></div>"
        )
    toc = "".join(f'<li><a href="#{s.ident}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.ident}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="generator" content="logitshift {__version__}">'
        f"<title>{esc(title)}</title><style>{template('report.css')}</style></head><body>"
        f'{header}<nav class="toc"><ul>{toc}</ul></nav><main>{note}{body}<footer>{footer}</footer></main>'
        '<div id="lightbox" hidden><img alt=""><p></p></div>'
        f"<script>{template('report.js')}</script></body></html>\n"
    )


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
