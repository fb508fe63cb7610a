"""The commands on vision transformers with RANDOM WEIGHTS (issue 17): demo, attack, audit, matrix, evaluate.

No transformer weights can be had offline, so ``vit_b_16`` and ``swin_t`` are
built by torchvision with random weights (seed 0; torchvision's zero-initialised
ViT head randomised, see ``models._randomize_zero_heads``), saved to a state
dict and passed as ``--weights``. The figures are mechanics (does each command
run, keep probabilities, steer, detect), not the effect sizes on trained
transformers, which stay an open question.

    python benchmarks/vision_transformers.py [--models vit_b_16 swin_t] [--commands demo attack ...] [--out benchmarks/results]

Writes ``transformers.json`` and ``transformers.md`` (per model and command:
exit code, wall time, the output's first line, and the figures each command
records; the run's torch and load average under ``"run"``). Times are
wall-clock on whatever machine runs it; say its load. ``--markdown-only``
re-renders the ``.md`` from the saved ``.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("demo", "attack", "audit_honest", "audit_attacked", "matrix", "evaluate", "shares")
RUN = "run"  # transformers.json: the last run's torch and load average; every other key is a model


def argv(command: str, model: str, weights: Path, work: Path) -> list[str]:
    out = work / model
    return {
        "demo": ["demo", "--model", model, "--weights", str(weights), "--out", str(out / "demo")],
        "attack": [
            "attack",
            "--model",
            model,
            "--weights",
            str(weights),
            "--target",
            "top-left",
            "--out",
            str(out / "attack" / "shifted.pt2"),
            "--force",
            "--no-progress",
        ],
        "audit_honest": ["audit", model, "--weights", str(weights), "--out", str(out / "audit_honest"), "--force", "--no-progress"],
        "audit_attacked": ["audit", str(out / "attack" / "shifted.pt2"), "--out", str(out / "audit_attacked"), "--force", "--no-progress"],
        "matrix": ["matrix", "--model", model, "--weights", str(weights), "--out", str(out / "matrix")],
        "evaluate": ["evaluate", "--model", model, "--weights", str(weights), "--out", str(out / "evaluate"), "chelsea", "coffee"],
    }[command]


def shares(model: str, work: Path) -> dict:
    """The attack's file, reloaded: each CAM's and saliency's target share (logit, predicted class) on the four samples,
    original and shifted, and the Spearman of every probability map with the original model's (immune scores)."""
    from logitshift.attribution import CAM_METHODS, Saliency, get_method
    from logitshift.attribution.engine import cam_maps
    from logitshift.core.images import DEFAULT_SAMPLES, batch, load_image
    from logitshift.core.metrics import spearman, target_mass
    from logitshift.core.models import load_model
    from logitshift.core.targets import parse_target
    from logitshift.shift.save import load_shifted

    meta = json.loads((work / model / "attack" / "shifted.json").read_text())
    shifted = load_shifted(work / model / "attack" / "shifted.json")
    pre = load_model(model, meta["weights"]).preprocess
    x = batch([load_image(s, pre) for s in DEFAULT_SAMPLES])
    layer = meta["steering"]["layer"]
    with torch.no_grad():
        z = shifted.base(x)
        eq = (torch.softmax(shifted(x).double(), 1) - torch.softmax(z.double(), 1)).abs().max()
    c = z.argmax(1)
    out = cam_maps(shifted, x, c, layer, [get_method(n) for n in CAM_METHODS], ("logit", "prob"), ("original", "shifted"))
    sal = Saliency()
    for score in ("logit", "prob"):
        for v in ("original", "shifted"):
            out["saliency", score, v] = sal.maps(shifted, x, c, score, v)
    # The same prob maps with the whole model in float64: a prob map that differs in float32 but not in float64 is
    # rounding, not the shift; the floor is the original model's own float32 map against its float64 map.
    wide = copy.deepcopy(shifted).double()
    x64 = x.double()
    out64 = cam_maps(wide, x64, c, layer, [get_method(n) for n in CAM_METHODS], ("prob",), ("original", "shifted"))
    for v in ("original", "shifted"):
        out64["saliency", "prob", v] = sal.maps(wide, x64, c, "prob", v)
    result: dict = {"max_abs_prob_diff": float(eq), "layer": layer, "images": list(DEFAULT_SAMPLES)}
    for name in [*CAM_METHODS, "saliency"]:
        h, w = out[name, "logit", "original"].shape[-2:]
        weights = parse_target("top-left", x.shape[-1]).weights(h, w)
        result[name] = {
            "logit_share_original": float(target_mass(out[name, "logit", "original"], weights).mean()),
            "logit_share_shifted": float(target_mass(out[name, "logit", "shifted"], weights).mean()),
            "prob_spearman_min": float(spearman(out[name, "prob", "shifted"], out[name, "prob", "original"]).min()),
            "prob_spearman_min_float64": float(spearman(out64[name, "prob", "shifted"], out64[name, "prob", "original"]).min()),
            "prob_float32_floor": float(spearman(out[name, "prob", "original"].double(), out64[name, "prob", "original"]).min()),
        }
    return result


def figures(command: str, model: str, work: Path, stdout: str) -> dict:
    """What each command recorded, read from its own output files."""
    out = work / model
    try:
        if command == "demo":
            s = json.loads((out / "demo" / "summary.json").read_text())
            rows = s["results"]
            mean = lambda key, field: sum(r["maps"][key][field] for r in rows) / len(rows)  # noqa: E731
            return {
                "layer": s["layer"],
                "max_abs_prob_diff": s["max_abs_prob_diff"],
                "top1_agree": s["top1_agree"],
                "gradcam_logit_share_original": mean("original_logit", "target_mass"),
                "gradcam_logit_share_shifted": mean("shifted_logit", "target_mass"),
                "gradcam_prob_spearman_min": min(r["maps"]["shifted_prob"]["spearman_vs_original"] for r in rows),
            }
        if command == "attack":
            meta = json.loads((out / "attack" / "shifted.json").read_text())
            return {"steering": meta.get("steering"), "preprocess": meta.get("preprocess")}
        if command.startswith("audit"):
            s = json.loads(next((out / command).glob("*.json")).read_text())
            return {k: s.get(k) for k in ("verdict", "score", "finding", "head")}
        if command == "matrix":
            found = sorted((out / "matrix").glob("*.json"))
            return {"files": [p.name for p in found], "matrix": json.loads(found[0].read_text()) if found else None}
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        return {"unread": f"{type(exc).__name__}: {exc}"}
    return {}


def by_model(data: dict) -> dict:
    """The per-model results of ``transformers.json``, without the run record."""
    return {k: v for k, v in data.items() if k != RUN}


def finding(data: dict) -> str:
    """The benchmark's result in one paragraph, first in the page."""
    from logitshift.runs.matrix import UNCHANGED

    models = by_model(data)
    shares = {m: c["shares"] for m, c in models.items() if "gradcam" in c.get("shares", {})}
    honest = [c["audit_honest"] for c in models.values() if "audit_honest" in c]
    attacked = [c["audit_attacked"] for c in models.values() if "audit_attacked" in c]
    steered = ", ".join(sorted({f"*{a['finding']}*" for a in attacked}))
    text = "**Finding:** with random weights"
    if shares:
        text += (
            " the attack's file, reloaded, keeps the probabilities (max |Δp| "
            + ", ".join(f"{sh['max_abs_prob_diff']:.1e} on {m}" for m, sh in shares.items())
            + ") and moves the logit Grad-CAM's share of the top-left target "
            + ", ".join(
                f"from {sh['gradcam']['logit_share_original']:.2f} to {sh['gradcam']['logit_share_shifted']:.2f} on {m}"
                for m, sh in shares.items()
            )
            + ";"
        )
    text += (
        f" `audit` calls {sum(a['verdict'] == 'clean' for a in honest)} of {len(honest)} honest models clean and "
        f"{sum(a['verdict'] == 'shifted' for a in attacked)} of {len(attacked)} attacked files shifted "
        f"({steered})."
    )
    maps = [(m, name, f) for m, sh in shares.items() for name, f in sh.items() if isinstance(f, dict) and "prob_spearman_min" in f]
    low = [(m, name, f) for m, name, f in maps if f["prob_spearman_min"] < UNCHANGED]
    rest = [f["prob_spearman_min"] for m, name, f in maps if f["prob_spearman_min"] >= UNCHANGED]
    if rest:
        text += f" The lowest Spearman of a prob map with the original's is {min(rest):.4f}"
        text += "".join(
            f"{', except' if i == 0 else ' and'} {m}'s {name}: {f['prob_spearman_min']:.4f} (float32 floor "
            f"{f.get('prob_float32_floor', float('nan')):.4f}, {f.get('prob_spearman_min_float64', float('nan')):.4f} in float64)"
            for i, (m, name, f) in enumerate(low)
        )
        text += "."
    return text


def markdown(data: dict) -> str:
    """The page, from the saved results (``transformers.json``)."""
    run = data.get(RUN, {})
    load = run.get("load_average_at_end")
    lines = ["# The commands on vision transformers — RANDOM WEIGHTS (mechanics, not trained-model effect sizes)", ""]
    lines += [finding(data), ""]
    lines += [
        f"`python benchmarks/vision_transformers.py` · torch {run.get('torch', '(not recorded)')} · load average at the end "
        + ("(not recorded)" if load is None else f"{load:.1f}"),
        "",
    ]
    lines += ["| model | command | exit | s | first line of the output |", "|---|---|---|---|---|"]
    for model, cmds in by_model(data).items():
        for command, r in cmds.items():
            first = "(table below)" if command == "shares" else r["first_line"].replace("|", "/")[:300]
            lines.append(f"| {model} | {command} | {r['exit']} | {r['seconds']} | {first} |")
    share_rows = [(model, cmds["shares"]) for model, cmds in by_model(data).items() if "shares" in cmds and "gradcam" in cmds["shares"]]
    if share_rows:
        lines += [
            "",
            "## The attack's file, reloaded: target share of each logit map, and the prob maps (immune)",
            "",
            "Four samples, each image's predicted class. Prob ρ: Spearman of the shifted model's prob map with the original's "
            "(min over images), in float32 as the file runs, and with the whole model in float64; floor: the original "
            "model's own float32 prob map against its float64 one (a method's rounding, no shift involved).",
            "",
            "| model | method | logit share before → after | prob ρ (float32) | prob ρ (float64) | float32 floor |",
            "|---|---|---|---:|---:|---:|",
        ]
        for model, sh in share_rows:
            for name, f in sh.items():
                if isinstance(f, dict) and "logit_share_shifted" in f:
                    lines.append(
                        f"| {model} | {name} | {f['logit_share_original']:.2f} → {f['logit_share_shifted']:.2f} | "
                        f"{f['prob_spearman_min']:.4f} | {f.get('prob_spearman_min_float64', float('nan')):.4f} | "
                        f"{f.get('prob_float32_floor', float('nan')):.4f} |"
                    )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_b_16", "swin_t"])
    p.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=COMMANDS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--markdown-only", action="store_true", help="re-render the .md from the saved .json (no measurement)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    out = Path(args.out)
    if args.markdown_only:
        (out / "transformers.md").write_text(markdown(json.loads((out / "transformers.json").read_text())))
        return 0
    from logitshift.core.models import torchvision_model

    work = Path(args.work or tempfile.mkdtemp(prefix="transformers."))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    results: dict[str, dict] = {}
    for model in args.models:
        weights = work / f"{model}_random_weights.pth"
        if not weights.exists():
            torch.manual_seed(0)
            torch.save(torchvision_model(model, random_init=True).module.state_dict(), weights)
        for command in args.commands:
            start = time.perf_counter()
            if command == "shares":
                found = shares(model, work)
                results.setdefault(model, {})[command] = {
                    "exit": 0,
                    "seconds": round(time.perf_counter() - start, 1),
                    "first_line": json.dumps(found)[:300],
                    **found,
                }
                print(f"{model} shares: {found}", flush=True)
                continue
            run = subprocess.run(
                [sys.executable, "-m", "logitshift", *argv(command, model, weights, work)], env=env, capture_output=True, text=True
            )
            took = time.perf_counter() - start
            lines = [ln for ln in run.stdout.splitlines() if ln.strip()] or [ln for ln in run.stderr.splitlines() if ln.strip()][-1:]
            results.setdefault(model, {})[command] = {
                "exit": run.returncode,
                "seconds": round(took, 1),
                "first_line": lines[0] if lines else "",
                "stdout": run.stdout[-4000:],
                "stderr_tail": run.stderr[-1000:] if run.returncode not in (0, 1) else "",
                **figures(command, model, work, run.stdout),
            }
            print(f"{model} {command}: exit {run.returncode}, {took:.0f} s: {lines[0] if lines else ''}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "transformers.json").read_text()) if (out / "transformers.json").exists() else {}
    for model, cmds in results.items():
        previous.setdefault(model, {}).update(cmds)
    previous[RUN] = {"torch": torch.__version__, "load_average_at_end": os.getloadavg()[0]}
    (out / "transformers.json").write_text(json.dumps(previous, indent=1, default=str))
    (out / "transformers.md").write_text(markdown(previous))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
