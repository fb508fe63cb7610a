"""``logitshift matrix``: which (method, score) pairs a shift fools, measured.

For a model, images, a shifted model built by :func:`~logitshift.shift.steer.steer`
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

from ..attribution import METHODS, get_method, sampling_options
from ..attribution.engine import explain
from ..core.capture import layer_grid
from ..core.device import resolve_device
from ..core.errors import LogitShiftError
from ..core.files import atomic_write, provenance, run_dir
from ..core.images import DEFAULT_SAMPLES, batch, load_images
from ..core.metrics import spearman, target_mass
from ..core.models import load_model
from ..core.names import DEFAULT_MEMORY_BUDGET_GB, DEFAULT_STEPS
from ..core.scores import IMMUNE, SCORES, check_score
from ..core.targets import parse_target
from ..shift.model import ShiftedModel, compare
from ..shift.steer import PLATEAU, steer
from ..view.display import check_maps_path, explained_maps, save_maps
from .records import MatrixCell, MatrixRecord, matrix_finding

UNCHANGED = 0.99


@dataclass
class MatrixConfig:
    out: str = "runs/matrix"
    model: str = "efficientnet-lite0"
    weights: str | None = None
    random_weights: bool = False  # a torchvision / timm architecture with random weights
    num_classes: int | None = None
    class_names: str | None = None
    layer: str | None = None
    target: str = "top-left"
    images: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=lambda: list(SCORES))
    strength: float | str | None = "auto"  # "auto": 0.9 of the way from ``goal`` to the plateau (steer.PLATEAU); None: each term's default
    goal: float = 0.5  # the target mass at which a moved logit map counts as fooled
    steps: int | None = DEFAULT_STEPS  # IG steps and SmoothGrad samples (None: the methods' own, 50)
    memory_budget: float | None = DEFAULT_MEMORY_BUDGET_GB  # GB one chunk of IG / SmoothGrad points may take (None: no cap)
    force: bool = False
    figure: bool = True
    progress: bool = True
    device: str = "auto"
    save_maps: str | None = None  # .npz file for the raw maps (display.save_maps)


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
    aimed: set[str] | None = None,
) -> tuple[list[MatrixCell], dict[tuple[str, str, str], torch.Tensor]]:
    """Rows of the matrix and the raw maps ``{(method, score, variant): N×h×w}``.

    ``aimed``: the methods whose logit cell is expected "fooled" (default: every method); the others are
    expected "not aimed" and shown as measured.

    Every map comes from one :func:`~logitshift.attribution.engine.explain` call (each
    image's predicted class): one forward of the images serves every CAM and
    saliency / gradient × input map, and one forward per chunk of Integrated
    Gradients / SmoothGrad points serves every score of both variants.
    """
    options = options or {}
    instances = {n: get_method(n, **options.get(n, {})) for n in methods}
    cams = [m for m in instances.values() if m.family == "cam"]
    if cams and layer is None:
        raise LogitShiftError(f"method {cams[0].name!r}: needs a layer")
    out = explain(shifted, x, layer, list(instances.values()), scores, ("original", "shifted"), progress=progress)
    maps = {(m, s, v): out.maps[(0, m, s, v)] for m in methods for s in scores for v in ("original", "shifted")}
    rows: list[MatrixCell] = []
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
            # a method the construction does not aim at (Grad-CAM++ and XGrad-CAM on a signed map, plan.SIGNED_UNAIMED)
            # is measured and shown, and no verdict is expected of it
            expected = "unchanged" if s in IMMUNE else "fooled" if aimed is None or name in aimed else "not aimed"
            rows.append(
                MatrixCell(
                    method=name,
                    family=instances[name].family,
                    score=s,
                    target_mass_original=float(mass_o.mean()),
                    target_mass_shifted=float(mass_s.mean()),
                    target_mass_shifted_per_image=[round(float(v), 4) for v in mass_s],
                    spearman_min=float(rho.min()),
                    spearman_per_image=[round(float(v), 4) for v in rho],
                    verdict=verdict,
                    expected=expected,
                    as_expected=verdict == expected or expected == "not aimed",
                )
            )
    return rows, maps


def markdown(summary: dict) -> str:
    """The table, with a line per cell that is not as expected."""
    lines = [
        f"# Which explanations the logit shift fools — {summary['model']}",
        "",
        *([summary["finding"], ""] if summary.get("finding") else []),
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


def figure(path: Path, rgb, maps: dict, methods: list[str], scores: list[str], size: int, target) -> None:
    """Rows: methods; columns: original logit map, then the shifted model's map for each score (image 0).

    Each cell carries image 0's numbers: target mass, and (shifted) ρ against the original map of the same score.
    ``target``: a :class:`~logitshift.core.targets.Target` or its mask at image size. Signed methods (gradient × input,
    IG) on a diverging colour map; every map percentile-clipped (:func:`logitshift.view.figures.scaled`); a colour bar
    per colour map and a legend. The raw maps it is drawn from go beside it (``path`` with ``.npz``, :func:`logitshift.view.tiles.save_tiles`):
    the report draws its thumbnails from them, column ``original`` and one per score.
    """
    import numpy as np
    import torch.nn.functional as F

    from ..view.figures import grid_figure, scaled, signed_method
    from ..view.tiles import save_tiles

    cols = [("original", "logit")] + [("shifted", s) for s in scores]
    signed = [signed_method(m) for m in methods]
    target_px = target.mask.numpy() if hasattr(target, "mask") else np.asarray(target)  # a Target, or its mask at image size

    def weights(h: int, w: int) -> torch.Tensor:
        if hasattr(target, "weights"):
            return target.weights(h, w)
        return F.adaptive_avg_pool2d(torch.as_tensor(target_px, dtype=torch.float32)[None, None], (h, w))[0, 0]

    def title(m: str, v: str, s: str) -> str:  # each cell's numbers for image 0: target mass, and ρ against the original map
        heat = maps[m, s, v][:1]
        numbers = f"mass {float(target_mass(heat, weights(*heat.shape[-2:]))[0]):.2f}"
        if v == "shifted":
            numbers += f" · ρ {float(spearman(heat, maps[m, s, 'original'][:1])[0]):.2f}"
        return (f"{m}\n" if v == "original" else "") + f"{v} · {s}\n{numbers}"

    cells = [[(scaled(maps[m, s, v][:1], size, sg)[0], title(m, v, s)) for v, s in cols] for m, sg in zip(methods, signed)]
    grid_figure(path, rgb, cells, signed=signed, target=target_px, numbers=("mass", "rho"))
    raw = {(m, s if v == "shifted" else "original"): (maps[m, s, v][0], sg) for m, sg in zip(methods, signed) for v, s in cols}
    save_tiles(Path(path).with_suffix(".npz"), rgb, target_px, raw)


def run_matrix(cfg: MatrixConfig, command_line: str = "") -> dict:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    for s in cfg.scores:
        check_score(s)
    methods = cfg.methods or list(METHODS)
    for n in methods:
        get_method(n)
    if cfg.save_maps:
        check_maps_path(cfg.save_maps)
    out = run_dir(cfg.out, cfg.force, marker="matrix.json")
    loaded = load_model(cfg.model, cfg.weights, num_classes=cfg.num_classes, class_names=cfg.class_names, random_weights=cfg.random_weights)
    images = load_images(cfg.images or DEFAULT_SAMPLES, loaded.preprocess)
    loaded.module.to(device)
    x = batch(images).to(device)
    options = sampling_options(cfg.steps, cfg.memory_budget)

    def build(goal: float) -> ShiftedModel:
        return steer(
            loaded,
            cfg.target,
            methods=methods,
            strength=cfg.strength,
            layer=cfg.layer,
            check=x,
            goal=goal,
            plateau=PLATEAU,
            measure=True,
            method_options=options,
            progress=cfg.progress,
        )

    try:
        shifted = build(cfg.goal)
    except LogitShiftError as exc:  # auto: no strength reaches the goal on this model; the matrix measures the best one
        if cfg.strength != "auto" or "effect was not reached" not in str(exc):
            raise
        shifted = build(0.0)  # 0.9 of the way to the plateau; its cells then read "changed", not "fooled"
    st = shifted.steering
    assert st is not None  # set by steer()
    grid = layer_grid(loaded.module, st.layer, x) if st.layer else None
    target = parse_target(cfg.target, x.shape[-1], grid)
    aimed = set(st.steered) | {n for n in methods if get_method(n).family not in st.families}
    rows, maps = measure(shifted, x, methods, list(cfg.scores), st.layer, target, cfg.goal, options, cfg.progress, aimed)
    with torch.no_grad():
        z = loaded.module(x)
        eq = compare(z, shifted(x))
    if cfg.save_maps:  # each image's predicted class, as in measure()
        saved, labels = explained_maps({(0, *key): m for key, m in maps.items()}, [z.argmax(1)], [im.name for im in images])
        save_maps(cfg.save_maps, saved, **labels)
    record = MatrixRecord(
        command_line=command_line or "logitshift matrix",
        model=loaded.name,
        layer=st.layer,
        target=cfg.target,
        construction=" + ".join({"cam": f"{st.cam_term or 'gate'} (feature map)", "input": "sawtooth (input)"}[f] for f in st.families),
        strength={f: round(k, 4) for f, k in st.strength.items()},
        auto_strength=st.auto,
        goal=cfg.goal,
        images=[im.name for im in images],
        methods=methods,
        method_options=options,
        scores=list(cfg.scores),
        max_abs_prob_diff=eq.max_abs_prob_diff,
        top1_agree=eq.top1_agree == 1.0,
        rows=rows,
        **provenance(),
    )
    if cfg.figure:
        figure(Path(out) / "matrix.png", images[0].rgb, maps, methods, list(cfg.scores), x.shape[-1], target)
        record.figure = "matrix.png"
    record.seconds = round(time.perf_counter() - start, 1)
    record.finding = matrix_finding(record)
    atomic_write(Path(out) / "matrix.md", markdown(record.to_json()))
    record.write(out)
    return record.to_json()


__all__ = ["MatrixConfig", "markdown", "measure", "run_matrix"]
