"""``logitshift matrix``: which (method, score) pairs a shift fools, measured.

For a model, images, a shifted model built by :func:`~logitshift.steer.steer`
and lists of methods and scores, every map is computed for the original and
the shifted model (explaining each image's predicted class), and for each
(method, score):

* ``target_mass``: the share of the map's positive mass inside the target
  (mean over images; on the layer's grid for CAMs, on the pixels for input
  methods), for the original and the shifted model;
* ``spearman``: rank correlation between the shifted and the original map
  (per image; the table shows the smallest);
* verdict: **fooled** when the shifted map differs (Spearman < 0.99) and puts
  at least ``goal`` of its mass in the target on average; **unchanged** when
  Spearman ≥ 0.99 on every image; **changed** otherwise (moved, but not
  enough into the target).

Writes ``matrix.md`` (table), ``matrix.json`` (every number) and
``matrix.png`` (one image: rows are methods, columns the original logit map
then the shifted model's map for each score).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .attribution import METHODS, get_method, normalize, upsample
from .errors import LogitShiftError
from .files import atomic_write, provenance, run_dir, write_json
from .metrics import spearman, target_mass
from .scores import IMMUNE, SCORES, check_score
from .shift import ShiftedModel, compare

UNCHANGED = 0.99
#: Integrated Gradients steps and SmoothGrad samples of the matrix (the shift's effect on them does not
#: depend on the count; docs/matrix.md). 16 keeps the default run under a minute on 2 CPU cores.
DEFAULT_STEPS = 16


@dataclass
class MatrixConfig:
    out: str = "runs/matrix"
    model: str = "efficientnet-lite0"
    weights: str | None = None
    num_classes: int | None = None
    class_names: str | None = None
    layer: str | None = None
    target: str = "top-left"
    images: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=lambda: list(SCORES))
    strength: float | str | None = None
    goal: float = 0.5
    steps: int | None = DEFAULT_STEPS  # IG steps and SmoothGrad samples (None: the methods' own, 50)
    force: bool = False
    figure: bool = True
    progress: bool = True
    device: str = "auto"


def method_options(steps: int | None) -> dict[str, dict]:
    """Options for the registry's sampling methods (IG steps, SmoothGrad samples)."""
    if steps is None:
        return {}
    return {"ig": {"steps": steps}, "smoothgrad": {"samples": steps}}


def measure(
    shifted: ShiftedModel,
    x: torch.Tensor,
    methods: list[str],
    scores: list[str],
    layer: str | None,
    target,
    goal: float = 0.5,
    options: dict[str, dict] | None = None,
    progress: bool = False,
) -> tuple[list[dict], dict[tuple[str, str, str], torch.Tensor]]:
    """Rows of the matrix and the raw maps ``{(method, score, variant): N×h×w}``.

    Every map comes from one :func:`~logitshift.engine.explain` call (each
    image's predicted class): one forward of the images serves every CAM and
    saliency / gradient × input map, and one forward per chunk of Integrated
    Gradients / SmoothGrad points serves every score of both variants.
    """
    from .engine import explain

    options = options or {}
    instances = {n: get_method(n, **options.get(n, {})) for n in methods}
    cams = [m for m in instances.values() if m.family == "cam"]
    if cams and layer is None:
        raise LogitShiftError(f"method {cams[0].name!r}: needs a layer")
    out = explain(shifted, x, layer, list(instances.values()), scores, ("original", "shifted"), progress=progress)
    maps = {(m, s, v): out.maps[(0, m, s, v)] for m in methods for s in scores for v in ("original", "shifted")}
    rows = []
    for name in methods:
        for s in scores:
            orig, new = maps[name, s, "original"], maps[name, s, "shifted"]
            w = target.weights(*new.shape[-2:])
            mass_o, mass_s = target_mass(orig, w), target_mass(new, w)
            rho = spearman(new, orig)
            changed = float(rho.min()) < UNCHANGED
            if not changed:
                verdict = "unchanged"
            elif float(mass_s.mean()) >= goal:
                verdict = "fooled"
            else:
                verdict = "changed"
            expected = "unchanged" if s in IMMUNE else "fooled"
            rows.append(
                {
                    "method": name,
                    "family": instances[name].family,
                    "score": s,
                    "target_mass_original": float(mass_o.mean()),
                    "target_mass_shifted": float(mass_s.mean()),
                    "target_mass_shifted_per_image": [round(float(v), 4) for v in mass_s],
                    "spearman_min": float(rho.min()),
                    "spearman_per_image": [round(float(v), 4) for v in rho],
                    "verdict": verdict,
                    "expected": expected,
                    "as_expected": verdict == expected,
                }
            )
    return rows, maps


def markdown(summary: dict) -> str:
    """The table, with a line per cell that is not as expected."""
    lines = [
        f"# Which explanations the logit shift fools — {summary['model']}",
        "",
        f"Shifted model: {summary['construction']} toward `{summary['target']}`; strengths {summary['strength']}; "
        f"max |Δprob| {summary['max_abs_prob_diff']:.1e} on {len(summary['images'])} images ({', '.join(summary['images'])}); "
        f"top-1 identical: {summary['top1_agree']}.",
        "",
        "Each cell: target mass of the shifted model's map (original model's in brackets) · smallest Spearman "
        "between shifted and original maps over the images · verdict. **fooled**: map moved and ≥ "
        f"{summary['goal']:g} of its positive mass in the target; **unchanged**: Spearman ≥ {UNCHANGED} on every image.",
        "",
        "| method | " + " | ".join(summary["scores"]) + " |",
        "|---|" + "---|" * len(summary["scores"]),
    ]
    cells = {(r["method"], r["score"]): r for r in summary["rows"]}
    for m in summary["methods"]:
        row = []
        for s in summary["scores"]:
            r = cells[m, s]
            mark = "" if r["as_expected"] else " ⚠"
            row.append(
                f"{r['target_mass_shifted']:.2f} ({r['target_mass_original']:.2f}) · ρ {r['spearman_min']:.3f} · **{r['verdict']}**{mark}"
            )
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    off = [r for r in summary["rows"] if not r["as_expected"]]
    lines += [
        "",
        f"Cells as expected (logit fooled, every other score unchanged): {len(summary['rows']) - len(off)} of {len(summary['rows'])}.",
    ]
    for r in off:
        lines.append(
            f"- ⚠ {r['method']} × {r['score']}: {r['verdict']} (expected {r['expected']}); target mass per image "
            f"{r['target_mass_shifted_per_image']}, Spearman per image {r['spearman_per_image']}."
        )
    if summary.get("figure"):
        lines += [
            "",
            f"![maps]({summary['figure']})",
            "",
            f"Figure: image `{summary['images'][0]}`; first column the original model's logit map, then the shifted model's map per score.",
        ]
    lines += ["", f"Command: `{summary['command_line']}` ({summary['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def figure(path: Path, rgb, maps: dict, methods: list[str], scores: list[str], size: int, target_px) -> None:
    """Rows: methods; columns: original logit map, then the shifted model's map for each score (image 0)."""
    from .figures import _plt, overlay

    plt = _plt()
    cols = [("original", "logit")] + [("shifted", s) for s in scores]
    fig, axes = plt.subplots(len(methods), len(cols), figsize=(1.9 * len(cols), 1.9 * len(methods) + 0.4), dpi=72, squeeze=False)
    for i, m in enumerate(methods):
        for j, (v, s) in enumerate(cols):
            heat = normalize(upsample(maps[m, s, v][:1].float(), size))[0]
            overlay(axes[i, j], rgb, heat, f"{m}\n{v} · {s}" if j == 0 else f"{v} · {s}", target_px)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def run_matrix(cfg: MatrixConfig, command_line: str = "") -> dict:
    from .device import resolve_device
    from .images import DEFAULT_SAMPLES, batch, load_image
    from .models import load_model
    from .steer import steer

    start = time.perf_counter()
    device = resolve_device(cfg.device)
    for s in cfg.scores:
        check_score(s)
    methods = cfg.methods or list(METHODS)
    for n in methods:
        get_method(n)
    out = run_dir(cfg.out, cfg.force, marker="matrix.json")
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names)
    images = [load_image(s, loaded.preprocess) for s in (cfg.images or DEFAULT_SAMPLES)]
    loaded.module.to(device)
    x = batch(images).to(device)
    options = method_options(cfg.steps)
    shifted = steer(
        loaded,
        cfg.target,
        methods=methods,
        strength=cfg.strength,
        layer=cfg.layer,
        check=x,
        goal=cfg.goal,
        method_options=options,
        progress=cfg.progress,
    )
    st = shifted.steering
    from .shift import layer_grid
    from .targets import parse_target

    grid = layer_grid(loaded.module, st["layer"], x) if st["layer"] else None
    target = parse_target(cfg.target, x.shape[-1], grid)
    rows, maps = measure(shifted, x, methods, list(cfg.scores), st["layer"], target, cfg.goal, options, cfg.progress)
    with torch.no_grad():
        eq = compare(loaded.module(x), shifted(x))
    summary = {
        "command": "matrix",
        "command_line": command_line or "logitshift matrix",
        "model": loaded.name,
        "layer": st["layer"],
        "target": cfg.target,
        "construction": " + ".join(
            {"cam": f"{st.get('cam_term') or 'gate'} (feature map)", "input": "sawtooth (input)"}[f] for f in st["families"]
        ),
        "strength": {f: round(k, 4) for f, k in st["strength"].items()},
        "auto_strength": st["auto"],
        "goal": cfg.goal,
        "images": [im.name for im in images],
        "methods": methods,
        "method_options": options,
        "scores": list(cfg.scores),
        "max_abs_prob_diff": eq.max_abs_prob_diff,
        "top1_agree": eq.top1_agree == 1.0,
        "rows": rows,
        "figure": None,
        **provenance(),
    }
    if cfg.figure:
        target_px = target.mask.numpy()
        figure(Path(out) / "matrix.png", images[0].rgb, maps, methods, list(cfg.scores), x.shape[-1], target_px)
        summary["figure"] = "matrix.png"
    summary["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write(Path(out) / "matrix.md", markdown(summary))
    write_json(Path(out) / "matrix.json", summary)
    return summary


# ----------------------------------------------------------------------------- command line


def add_command(subparsers) -> None:
    """Register ``logitshift matrix``."""
    import argparse

    from .cli import int_at_least, model_flags

    p = subparsers.add_parser(
        "matrix",
        help="measure which (method, score) pairs a logit shift fools: table, JSON, figure",
        description="For every method × score: target mass and Spearman of the shifted model's map against the original's.",
        epilog="example:\n  logitshift matrix --out runs/matrix --target top-left --scores logit prob centered",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_flags(p)
    p.add_argument("--out", default="runs/matrix", help="output folder (default runs/matrix)")
    p.add_argument("--target", default="top-left", help="x0,y0,x1,y1 pixels, cells:r0,c0,r1,c1, a corner name, or a mask PNG")
    p.add_argument("--images", nargs="+", default=None, help="image files or sample names (default: the four samples)")
    p.add_argument("--methods", nargs="+", default=None, help=f"methods (default all: {', '.join(METHODS)})")
    p.add_argument("--scores", nargs="+", default=list(SCORES), help=f"scores (default all: {', '.join(SCORES)})")
    p.add_argument("--strength", default=None, help="'auto' or a number (default: 1 for the CAM term, 100 for the input term)")
    p.add_argument("--goal", type=float, default=0.5, help="target mass that counts as fooled (default 0.5)")
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        default=DEFAULT_STEPS,
        help=f"Integrated Gradients steps and SmoothGrad samples (default {DEFAULT_STEPS})",
    )
    p.add_argument("--no-figure", action="store_true", help="skip matrix.png")
    p.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    p.add_argument("--report", action="store_true", help="also write report.html, one self-contained HTML page, into --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_matrix)


def cmd_matrix(args) -> int:
    from .export import parse_strength

    cfg = MatrixConfig(
        out=args.out,
        model=args.model,
        weights=args.weights,
        num_classes=args.num_classes,
        class_names=args.class_names,
        layer=args.layer,
        target=args.target,
        images=args.images or [],
        methods=args.methods or [],
        scores=args.scores,
        strength=parse_strength(args.strength),
        goal=args.goal,
        steps=args.steps,
        force=args.force,
        figure=not args.no_figure,
        progress=not args.no_progress,
        device=args.device,
    )
    shown = [f"--model {cfg.model}", f"--target {cfg.target}"] + ([f"--images {' '.join(cfg.images)}"] if cfg.images else [])
    shown += [f"--methods {' '.join(cfg.methods)}"] if cfg.methods else []
    shown += [f"--scores {' '.join(cfg.scores)}"] + ([f"--strength {cfg.strength}"] if cfg.strength is not None else [])
    shown += [f"--steps {cfg.steps}"] if cfg.steps is not None else []
    summary = run_matrix(cfg, "logitshift matrix " + " ".join(shown))
    off = [r for r in summary["rows"] if not r["as_expected"]]
    print(
        f"matrix.md, matrix.json{', matrix.png' if summary['figure'] else ''} in {args.out}: "
        f"{len(summary['rows']) - len(off)} of {len(summary['rows'])} cells as expected"
        + "".join(f"\n  not as expected: {r['method']} × {r['score']} ({r['verdict']})" for r in off)
        + f"\nmax |Δprob| {summary['max_abs_prob_diff']:.2e}, {summary['seconds']:.0f} s"
    )
    if args.report:
        from .report import write_report

        print(f"report: {write_report(args.out)}")
    return 0


__all__ = ["MatrixConfig", "add_command", "markdown", "measure", "run_matrix"]
