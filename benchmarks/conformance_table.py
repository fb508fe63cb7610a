"""Generate docs/conformance.md and docs/conformance.json: every adapter's cells on two models, measured.

    python benchmarks/conformance_table.py            # both models, in parallel, then the document

Models: EfficientNet-Lite0 (real ImageNet weights, the default) and resnet18
with RANDOM weights (no torchvision weights are available offline). One
process per model (``--one NAME`` runs one and writes its JSON part);
progress lines go to stderr as cells finish.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODELS = {
    "efficientnet-lite0": {"random": False, "images": ["chelsea"], "label": "EfficientNet-Lite0, real ImageNet weights"},
    "resnet18": {
        "random": True,
        "images": ["chelsea"],
        "label": "resnet18, RANDOM weights (torchvision architecture, no trained weights offline)",
    },
}
LIBRARIES = ["logitshift", "pytorch-grad-cam", "captum", "zennit", "pytorch-grad-cam-metrics", "quantus", "deletion-insertion"]
TARGET = "top-left"
SAMPLES = 16
#: the libraries most people run (issue 27), each over many inputs: the verdict from the median and worst input
EIGHT = ["chelsea", "coffee", "rocket", "astronaut", "hubble", "immunohistochemistry", "motorcycle", "grace_hopper"]
PEERS = {
    "efficientnet-lite0": {
        "libraries": ["shap", "lime", "torchcam"],
        "images": EIGHT,
        # torchcam's ScoreCAM family forwards every one of the layer's 1,280 channels per image (SSCAM, ISCAM: ×4): not in this run
        "skip": ["ScoreCAM", "SSCAM", "ISCAM"],
        "label": "EfficientNet-Lite0, real ImageNet weights, 8 images",
    },
    "breast-cancer-mlp": {
        "libraries": ["shap", "lime"],
        "rows": "test:64",
        "skip": [],
        "label": "breast-cancer-mlp (trained here on scikit-learn's breast cancer data), 64 held-out rows",
    },
    "wine-mlp": {
        "libraries": ["shap", "lime"],
        "rows": "test",
        "skip": [],
        "label": "wine-mlp (trained here on scikit-learn's wine data), all 45 held-out rows",
    },
}
PEER_SAMPLES = 8


def one(name: str, redo: list[str] | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    from logitshift.conformance import adapter_explainers, check, context, finding
    from logitshift.core.images import batch, load_image
    from logitshift.core.models import load_model, torchvision_model

    spec = MODELS[name]
    loaded = torchvision_model(name, random_init=True) if spec["random"] else load_model(name)
    x = batch([load_image(s, loaded.preprocess) for s in spec["images"]])
    ctx, memo = context(loaded, x, TARGET, samples=SAMPLES)
    explainers, missing = adapter_explainers(LIBRARIES, ctx)
    part = DOCS / f".conformance-{name}.json"
    if redo:  # measure these methods again and put their cells in place of the old ones
        explainers, missing = [e for e in explainers if e.method in redo], []
        old = json.loads(part.read_text())
    start = time.perf_counter()
    done = []

    def log(cell):
        done.append(cell)
        print(
            f"[{name} {len(done)}/{len(explainers)} {time.perf_counter() - start:.0f}s] {cell.library} {cell.method} @ {cell.target}: {cell.verdict}",
            file=sys.stderr,
            flush=True,
        )
        if len(done) % 10 == 0 and not redo:  # (a re-measurement writes once, merged, at the end)
            _write(part, name, spec, loaded, done, start)

    cells = check(loaded, x, explainers, ctx.target, memo=memo, log=log) + missing
    if redo:
        from logitshift.conformance.cells import Cell

        new = {(c.library, c.method, c.target): c for c in cells}
        kept = [Cell(**c) for c in old["cells"]]
        cells = [new.pop((c.library, c.method, c.target), c) for c in kept] + list(new.values())
        start -= old["seconds"]
    _write(part, name, spec, loaded, cells, start, final=True)
    print(finding(cells), file=sys.stderr)


def peers(name: str) -> None:
    """One model of :data:`PEERS`: every cell over its inputs, written to docs/.conformance-peers-NAME.json."""
    import torch

    torch.set_num_threads(1)
    from logitshift.conformance import adapter_explainers, check, context, finding
    from logitshift.core.files import provenance, write_json
    from logitshift.core.images import batch, load_image
    from logitshift.core.models import load_model
    from logitshift.core.tabular import TabularModel, load_rows

    spec = PEERS[name]
    loaded = load_model(name)
    if isinstance(loaded, TabularModel) and loaded.data is not None:
        x, inputs = load_rows(spec["rows"], loaded.data)
    else:
        x, inputs = batch([load_image(_image(s), loaded.preprocess) for s in spec["images"]]), list(spec["images"])
    ctx, memo = context(loaded, x, TARGET, samples=PEER_SAMPLES)
    explainers, missing = adapter_explainers(spec["libraries"], ctx)
    explainers = [e for e in explainers if e.method not in spec["skip"]]
    start = time.perf_counter()
    done: list = []

    def write(final: bool) -> None:
        write_json(
            DOCS / f".conformance-peers-{name}.json",
            {
                "model": name,
                "label": spec["label"],
                "inputs": inputs,
                "target": ctx.target.spec,
                "samples": PEER_SAMPLES,
                "skipped": spec["skip"],
                "accuracy": getattr(loaded, "accuracy", None),
                "seconds": time.perf_counter() - start,
                "final": final,
                "cells": [c.as_dict() for c in done],
                **provenance(),
            },
        )

    def log(cell):
        done.append(cell)
        print(
            f"[{name} {len(done)}/{len(explainers)} {time.perf_counter() - start:.0f}s] {cell.library} {cell.method} @ {cell.target}: {cell.verdict}",
            file=sys.stderr,
            flush=True,
        )
        write(False)

    check(loaded, x, explainers, ctx.target, memo=memo, log=log)
    done.extend(missing)
    write(True)
    print(finding(done), file=sys.stderr)


def _image(name: str) -> str:
    """A sample name, or matplotlib's grace_hopper.jpg (shipped with matplotlib) as a file."""
    if name == "grace_hopper":
        from matplotlib import cbook

        return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return name


def spread(c) -> str:
    """Per-input target share: median [worst – best], and how many inputs a per-input verdict would call fooled."""
    import numpy as np

    share = c.per_image.get("share") if c.per_image else None
    if not share:
        return "–"
    s = np.asarray(share)
    rho = np.asarray(c.per_image.get("spearman", [1.0] * len(s)))
    fooled = int(((s >= 0.5) & (rho < 0.999)).sum())
    mixed = " **differs by input**" if 0 < fooled < len(s) else ""
    return f"{np.median(s):.2f} [{s.min():.2f} – {s.max():.2f}], fooled on {fooled}/{len(s)}{mixed}"


def peer_rows(cells) -> list[str]:
    lines = [
        "| library | method | target / usage | twin | max \\|Δp\\| | share: median [min – max] per input | honest share | worst ρ | verdict | explainer s / cell s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        rho = "–" if c.spearman is None else f"{c.spearman:.3f}"
        dp = "–" if c.max_dp is None else f"{c.max_dp:.1e}"
        honest = "–" if c.share_honest is None else f"{c.share_honest:.2f}"
        why = "" if c.verdict != "n/a" else " (" + c.reason[:100].replace("|", "/") + ")"
        lines.append(
            f"| {c.library} | {c.method} | {c.target} | {c.construction or c.kind} | {dp} | {spread(c)} | {honest} | {rho} | **{c.verdict}**{why} | "
            f"{c.explain_seconds:.0f} / {c.seconds:.0f} |"
        )
    return lines


def peer_section() -> str:
    from logitshift.conformance.cells import Cell, finding

    out = [PEER_HEAD]
    for name in PEERS:
        path = DOCS / f".conformance-peers-{name}.json"
        saved = DOCS / "conformance-peers.json"
        if path.exists():
            part = json.loads(path.read_text())
        elif saved.exists():
            part = next((m for m in json.loads(saved.read_text())["models"] if m["model"] == name), None)
            if part is None:
                continue
        else:
            continue
        fields = set(Cell.__dataclass_fields__)
        cells = [Cell(**{k: v for k, v in c.items() if k in fields}) for c in part["cells"]]
        explain = sum(c.explain_seconds for c in cells)
        acc = f" Test accuracy {part['accuracy']:.3f}." if part.get("accuracy") is not None else ""
        libs = sorted({c.library for c in cells if c.verdict != "n/a"})
        costs = [
            f"{lib}: {sum(c.seconds for c in cells if c.library == lib):.0f} s over its cells, of which its own calls "
            f"{sum(c.explain_seconds for c in cells if c.library == lib):.0f} s "
            f"(×{sum(c.seconds for c in cells if c.library == lib) / max(sum(c.explain_seconds for c in cells if c.library == lib), 1e-9):.2f})"
            for lib in libs
        ]
        out += [
            f"## {part['label']}",
            "",
            finding(cells),
            "",
            "Time, measured in this run (the rest of a cell's time is building its twin and comparing maps): " + "; ".join(costs) + ".",
            "",
            f"Inputs: {', '.join(part['inputs'][:8])}{' …' if len(part['inputs']) > 8 else ''} ({len(part['inputs'])}); target `{part['target']}`; "
            f"sampling budget {part['samples']}.{acc} Not run: {', '.join(part['skipped']) or 'nothing'}. "
            f"{part['seconds'] / 60:.0f} min on 2 shared CPU cores under load, of which the explainers' own calls (model and twin) "
            f"{explain / 60:.0f} min." + ("" if part.get("final") else " **Run cut short: the cells below are those measured.**"),
            "",
            *peer_rows(cells),
            "",
        ]
    return "\n".join(out)


PEER_HEAD = """# SHAP, LIME and torchcam, over many inputs (issue 27)

Each library's own way of choosing what it explains is a separate row: a model that
returns logits, a function returning probabilities, SHAP's `link="logit"`, torchcam's
`class_idx` (the logit) or a `targets=` probability. Every cell is measured over all the
inputs at once; its verdict comes from the **median** input's target share (fooled when
≥ 0.5) and the **worst** input's ρ (immune when ≥ 0.999); the spread column gives the
per-input shares and on how many inputs a per-input verdict would say fooled
(**differs by input** where the inputs disagree). Tabular twins: `FeatureShift`
(the sawtooth on the target features: gradient `K·w·sign(x)`) for gradient and
propagation methods, `FeaturePresence` (`t` grows with `|x|` of the target
features, standardised, so hiding them by the training mean lowers every logit) for
perturbation methods. The target on the tabular model is the two features its first
layer weighs least.

ScoreCAM and AblationCAM (pytorch-grad-cam) and torchcam's ScoreCAM, SSCAM and ISCAM
meet two twins: the input-reading `PresenceShift` and the CAM twin, whose `t` is read from
the explained layer in the forward pass (`GateShift`); a cell keeps the one that steers
it most and names both with their shares ("twins tried"). AblationCAM swaps the layer for
its own module, whose `__call__` fires no hook, so the layer twin cannot read it (n/a in
that list); a twin that reads the layer's output downstream was not built. torchcam's
ScoreCAM family is not in the Lite0 run below (1,280 masked forwards per image); it is
measured on the small test model (tests/test_conformance.py).

Float32: a probability is a function of logit differences, so `t` cancels in exact
arithmetic; a float32 model adds `z + t` in float32, which rounds the logits by about
`|t|·6e-8`. Where a class's probability saturates (most breast-cancer rows: p ≈ 1), the
probability's own attributions are that small too, and the rounding shows: such a cell
can be **moved** (ρ below 0.999) while its target share stays the honest model's —
changed by rounding noise, not steered. The centred logit (`ScoreWrapper(centered)`)
does not saturate and stays immune. A probability with `link="logit"` is `±inf` at
p = 1 exactly in float64: SHAP then stops with a ZeroDivisionError (**n/a**).

"""


def _write(part: Path, name, spec, loaded, cells, start, final=False) -> None:
    from logitshift.core.files import provenance, write_json

    write_json(
        part,
        {
            "model": name,
            "label": spec["label"],
            "images": spec["images"],
            "layer": loaded.layer,
            "target": TARGET,
            "samples": SAMPLES,
            "seconds": time.perf_counter() - start,
            "final": final,
            "cells": [c.as_dict() for c in cells],
            **provenance(),
        },
    )


def document() -> None:
    from logitshift.conformance.cells import Cell
    from logitshift.conformance.table import markdown
    from logitshift.core.files import atomic_write, write_json

    # the workers' parts (hidden, not committed); without them, the committed record
    saved = (
        {m["model"]: m for m in json.loads((DOCS / "conformance.json").read_text())["models"]}
        if (DOCS / "conformance.json").exists()
        else {}
    )
    parts = [
        json.loads((DOCS / f".conformance-{n}.json").read_text()) if (DOCS / f".conformance-{n}.json").exists() else saved[n]
        for n in MODELS
    ]
    write_json(DOCS / "conformance.json", {"command_line": "python benchmarks/conformance_table.py", "models": parts})
    body = [HEAD]
    for p in parts:
        cells = [Cell(**c) for c in p["cells"]]
        body.append(summary(p["label"], cells))
    for p in parts:
        cells = [Cell(**c) for c in p["cells"]]
        notes = [
            f"Images: {', '.join(p['images'])} (224×224); CAM layer `{p['layer']}`; target `{p['target']}`; sampling budget {p['samples']} "
            f"(IG steps, NoiseTunnel/GradientShap samples; LIME/KernelShap {4 * p['samples']} samples); {p['seconds'] / 60:.0f} min on 2 shared CPU cores (under load from other work)."
            + ("" if p.get("final") else " **Run cut short: the cells below are those measured.**"),
        ]
        body.append(markdown(p["label"], cells, notes))
    body.append(
        "Generated by `python benchmarks/conformance_table.py` (JSON: docs/conformance.json). In this run the cells from "
        "FullGrad on were measured a second time with `--one MODEL --redo METHOD…` after a fix (a failed AblationCAM call had "
        "left its layer swapped in, breaking every later cell); the times add both passes.\n"
    )
    body.append(peer_section())
    # the language-model section (benchmarks/lm_conformance.py) is kept as it is
    previous = (DOCS / "conformance.md").read_text() if (DOCS / "conformance.md").exists() else ""
    if "<!-- lm-conformance -->" in previous and "<!-- /lm-conformance -->" in previous:
        body.append(
            "<!-- lm-conformance -->"
            + previous.split("<!-- lm-conformance -->", 1)[1].split("<!-- /lm-conformance -->", 1)[0]
            + "<!-- /lm-conformance -->\n"
        )
    atomic_write(DOCS / "conformance.md", "\n".join(body))
    saved_peers = DOCS / "conformance-peers.json"
    old_peers = {m["model"]: m for m in json.loads(saved_peers.read_text())["models"]} if saved_peers.exists() else {}
    for n in PEERS:
        if (DOCS / f".conformance-peers-{n}.json").exists():
            old_peers[n] = json.loads((DOCS / f".conformance-peers-{n}.json").read_text())
    if old_peers:
        write_json(saved_peers, {"command_line": "python benchmarks/conformance_table.py --peers", "models": list(old_peers.values())})


HEAD = """# Conformance: which explainers, targets and metrics survive a logit shift

A model can be changed to `z' = z + t(x)·1` without changing a single probability
(max |Δp| ≤ 1e-5 on the images checked). For every (library, method, target/score)
cell below, `logitshift check` computed the explanation on the model and on a
*shifted twin* built to steer that kind of method toward the top-left corner
(2/7 of each side), and compared them:

* **share**: mean share of the twin's map's positive mass inside the target
  (the honest model's in brackets); for a metric, the fraction of images on which
  the twin's metric rates the attacker's map (the target box) better than the honest
  Grad-CAM (the honest model's in brackets);
* **ρ**: smallest Spearman correlation per image between the twin's and the model's
  map; for a metric, **Δ**: its largest change relative to its largest value;
* verdict: **immune** (ρ ≥ 0.999, or Δ ≤ 1e-3), **fooled** (changed, and share ≥ 0.5),
  **moved** (changed, not steered), **n/a** (does not run here; the error is given).

Twins (`logitshift.shift.twins`), strengths calibrated on the images
checked: *gradient* — the sawtooth `InputShift` on the target's pixels (4× the
smallest strength that steers logitshift's saliency, gradient × input and IG);
*cam* — `GateShift` on the CAM layer (4× the smallest that steers logitshift's five
CAMs); FullGrad and Captum's GuidedGradCam get both terms; *perturbation* and
*metric* — `PresenceShift`: `t` grows with the detail (Laplacian magnitude, capped)
inside the target, so occluding, ablating, masking, blurring or imputing the target
lowers every logit (removing all of it: 4× the model's top-to-median logit gap); for
perturbation methods (and AblationCAM) `t` also falls with the detail kept outside the
target (`outside 1`);
*propagation* — `RampShift` (gradient `K·w ≥ 0` on the target) plus the sawtooth,
relevance that reaches the input through the `t` branch, which no LRP rule sees.
Methods that read no score (EigenCAM, KPCA-CAM, FEM) cannot be steered by any `t`.
With a single image, a twin whose `t` has a centring offset (GateShift, PresenceShift) has `t(x) = 0`
exactly on that image, so its max |Δp| is 0 while its gradients and its values on perturbed inputs still
steer; the sawtooth terms have no offset (Δp of order 1e-7).

"""


def summary(label: str, cells) -> str:
    """The findings of one model, every number counted from the cells."""
    measured = [c for c in cells if c.verdict != "n/a"]
    immune_t = [c for c in measured if c.reason.startswith("the score is a function") or _immune_label(c)]
    imm_ok = [c for c in immune_t if c.verdict == "immune"]
    logit = [c for c in measured if _logit_label(c) and c.kind != "metric" and not c.reason.startswith("reads no score")]
    fooled = [c for c in logit if c.verdict == "fooled"]
    metric_logit = [c for c in measured if _logit_label(c) and c.kind == "metric"]
    lines = [f"## Summary — {label}", ""]
    lines.append(
        f"- {len(measured)} cells measured ({sum(c.verdict == 'fooled' for c in measured)} fooled, {sum(c.verdict == 'moved' for c in measured)} moved, "
        f"{sum(c.verdict == 'immune' for c in measured)} immune), {len(cells) - len(measured)} n/a; largest max |Δp| of a twin "
        f"{max((c.max_dp or 0) for c in measured):.1e}."
    )
    worst = min((c.spearman for c in imm_ok if c.spearman is not None), default=float("nan"))
    lines.append(
        f"- Immune targets and wrappers (functions of logit differences: softmax/prob, log-prob, centred, contrast, FinerWeightedTarget alpha=1, "
        f"Quantus softmax=True): {len(imm_ok)} of {len(immune_t)} immune (smallest ρ among them {worst:.4f})."
        + "".join(
            f" Not immune: {c.library} {c.method} @ {c.target} ({c.verdict}, ρ {c.spearman if c.spearman is not None else float('nan'):.4f})."
            for c in immune_t
            if c.verdict != "immune"
        )
    )
    lines.append(
        f"- The logit (the libraries' default target) for methods that read a score: {len(fooled)} of {len(logit)} fooled."
        + "".join(
            f" {c.library} {c.method}: {c.verdict} (share {c.share:.2f}, ρ {c.spearman:.3f})." for c in logit if c.verdict != "fooled"
        )
    )
    lines.append(
        f"- Faithfulness metrics on logits: {sum(c.verdict == 'fooled' for c in metric_logit)} of {len(metric_logit)} rate the attacker's map above the honest one under the twin"
        + "".join(f"; {c.library} {c.method}: {c.verdict}" for c in metric_logit if c.verdict != "fooled")
        + "."
    )
    for what, pick in (
        ("ClassifierOutputReST", lambda c: c.target == "ClassifierOutputReST"),
        ("FinerWeightedTarget / FinerCAM", lambda c: "alpha" in c.target),
    ):
        sel = [c for c in measured if pick(c)]
        if sel:
            lines.append(
                f"- {what}: "
                + "; ".join(
                    f"{c.method} @ {c.target} **{c.verdict}** (share {c.share:.2f}, ρ {c.spearman:.3f})"
                    if c.spearman is not None
                    else f"{c.method} @ {c.target} **{c.verdict}**"
                    for c in sel
                )
                + "."
            )
    for method, why in WHY.items():
        if any(c.method == method and c.verdict in ("moved", "immune") and _logit_label(c) for c in measured):
            lines.append(f"- Why {method} is not fooled here: {why}")
    na = [c for c in cells if c.verdict == "n/a"]
    if na:
        first: dict[tuple[str, str], str] = {}
        for c in na:
            first.setdefault((c.library, c.method), c.reason[:110])
        lines.append("- Could not run (every target): " + "; ".join(f"{lib} {m} (first error: {r})" for (lib, m), r in first.items()) + ".")
        for method, why in NA_WHY.items():
            if any(c.method == method for c in na):
                lines.append(f"- Why {method} could not run: {why}")
    return "\n".join(lines) + "\n"


#: the reason a logit cell is not fooled, where the numbers above show it is not
WHY = {
    "ScoreCAM": "its weights are a softmax over the scores of the input masked by each channel's upsampled activation, so "
    "the map is a non-negative mix of the layer's channels; the twin raises the scores of masks that keep the target's detail "
    "and little else, which moves the map (ρ in the table) and triples its share, but the channels it favours are also "
    "active outside the target. (Not shown here: whether a stronger or different t gets past 0.5.)",
    "AblationCAM": "it ablates channels at the layer, which leaves the input — hence the perturbation twin's t — unchanged in "
    "every ablated pass; t then only rescales the weights (z_c − z_c^k)/(z_c + t) by one constant, which the min-max scaling removes. "
    "A t read from the layer is not seen either: pytorch-grad-cam's AblationLayer overrides __call__, so no forward hook fires "
    "(an attacker who computes t inside the layer's own module would not have this limit; not built here).",
    "FullGrad": "it sums separately min-max-scaled maps — |input gradient × input| and |bias gradient × bias| of every layer "
    "with a bias — so the twin (CAM and input terms) moves it (ρ in the table) without any one term taking over the sum.",
    "KernelShap": "a linear fit of 4·samples random coalitions of the 7×7 patches; with these few samples the target's "
    "patches get most but not all of the positive weight (share in the table, just under 0.5 here).",
    "EigenGradCAM": "it projects activations × gradients on their first principal component, whose sign and scale are arbitrary; "
    "the twin changes the component (ρ in the table) but the projection does not follow the target.",
    "FaithfulnessCorrelation": "it correlates the attribution summed over random pixel subsets with the score drop when those "
    "pixels are replaced; the twin changes every value (Δ in the table) but on random subsets both maps' sums track the "
    "target's share of the subset about equally, so neither map is favoured.",
}


NA_WHY = {
    "LRP": "Captum's LRP needs a rule for every leaf module: EfficientNet-Lite0's ZeroPad2d has none (the honest model fails too); "
    "on resnet18 the honest model runs but the twin's t terms are modules without a rule (the twin fails; an attacker would "
    "compute t with functional operations or give its modules a rule — not done here), and after that failure Captum's "
    "hooks are left in a state where the next calls fail too.",
    "DeepLift": "torchvision's resnet18 reuses one ReLU module several times in a block, which Captum's DeepLift refuses "
    "(honest model included).",
    "DeepLiftShap": "as DeepLift.",
}


def _immune_label(c) -> bool:
    return (
        c.target in ("ClassifierOutputSoftmaxTarget", "FinerWeightedTarget(alpha=1)", "alpha=1", "softmax=True")
        or c.target.startswith("ScoreWrapper")
        or c.target in ("prob", "logprob", "centered", "contrast", "CenteredLogitTarget", "ContrastTarget")
    )


def _logit_label(c) -> bool:
    return c.target in ("logit", "ClassifierOutputTarget", "softmax=False")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", choices=list(MODELS), help="run one model (a worker)")
    ap.add_argument("--document", action="store_true", help="only (re)write docs/conformance.md from the parts")
    ap.add_argument("--redo", nargs="+", default=None, help="with --one: measure these methods again, in place")
    ap.add_argument(
        "--peers",
        nargs="*",
        default=None,
        choices=list(PEERS),
        help="the shap/lime/torchcam models (all when none named), then the document",
    )
    args = ap.parse_args()
    if args.peers is not None:
        for n in args.peers or list(PEERS):
            peers(n)
        document()
        return
    if args.one:
        one(args.one, args.redo)
        return
    if not args.document:
        procs = [subprocess.Popen([sys.executable, __file__, "--one", n]) for n in MODELS]
        codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"a worker failed: {codes}")
    document()


if __name__ == "__main__":
    main()
