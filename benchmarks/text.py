"""Text classifiers (issue 28): the BERT trained here, token shifts on it and on RANDOM-WEIGHT BERT/DistilBERT configs.

    python benchmarks/text.py [--no-retrain] [--texts 16] [--steps 32] [--sections train steer weights speed] [--out benchmarks/results]

* ``train``: builds ``fortunes-bert`` from scratch in a temporary folder (Debian's fortunes, five topics; the
  tokenizer and the model trained here), times it, reports the held-out accuracy and whether the weights are
  bit-identical to the cached build (determinism).
* ``steer``: for each model × target, :func:`~logitshift.shift.steer.steer_tokens` (automatic strength, goal 0.5)
  on held-out texts, then :func:`~logitshift.shift.steer.token_effect` from real passes: each method's logit-map
  target mass before → after (mean and least over the texts holding a target token), the least Spearman of the
  prob and centered maps with the original's, max |Δp| on the texts and on the stress inputs.
* ``weights``: the weights-only attack (``W + 1uᵀ`` on the classifier head, :mod:`logitshift.shift.textweights`)
  against the code-carrying token shift, per method.
* ``speed``: our IG on embeddings for all five scores in one pass vs Captum's ``LayerIntegratedGradients``
  score by score, same steps, on a BERT-base-sized RANDOM-WEIGHT model.

Writes ``text.json`` and ``text.md``; ``--markdown-only`` re-renders the page from the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# keep this folder's scripts from shadowing libraries of the same name
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
METHODS = ["saliency", "gradxinput", "ig"]
SCORES = ("logit", "prob", "logprob", "centered", "contrast")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_texts(n: int) -> list[str]:
    from logitshift.core.text import load_corpus, split

    _, test = split(load_corpus())
    # every n-th held-out text, so each topic is represented
    step = max(1, len(test.texts) // n)
    return test.texts[::step][:n]


def section_train_cached() -> dict:
    """The held-out accuracy and time the cached build recorded in its training.json when it was trained (no rebuild)."""
    from logitshift.core.text import trained_folder

    info = json.loads((trained_folder() / "training.json").read_text())
    return {**info, "wall_seconds": info["seconds"], "identical_to_cached": None, "cached": True}


def section_train() -> dict:
    from logitshift.core.text import TRAINED, cache_dir, train_classifier, trained_folder

    cached = trained_folder()  # the cached build (trained on first use)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_classifier(Path(tmp) / TRAINED)
        seconds = time.perf_counter() - start
        same = sha(Path(tmp) / TRAINED / "model.safetensors") == sha(cached / "model.safetensors")
    return {**result.to_json(), "wall_seconds": seconds, "identical_to_cached": same, "cache": str(cache_dir())}


FAMILIES = ["bert", "distilbert"]
#: which models and targets run (--models, --targets): every model and its own targets by default
CHOICE: dict[str, list[str]] = {"models": ["trained", *FAMILIES], "targets": []}


def models():
    from logitshift.core.text import load_text_model, random_model

    trained = load_text_model()
    pick = CHOICE["targets"]
    if "trained" in CHOICE["models"]:
        yield "fortunes-bert (trained here)", trained, pick or ["pos:3-5", "the", "re:^comput"]
    for family in FAMILIES:
        if family in CHOICE["models"]:
            rnd = random_model(family, hidden=128, layers=2, heads=2, tokenizer=trained.tokenizer)
            yield f"{family}, RANDOM weights (hidden 128, 2 layers)", rnd, pick or ["pos:3-5", "the"]


def section_steer(texts: list[str], steps: int) -> list[dict]:
    from logitshift.shift.tokens import steer_tokens, token_effect

    rows = []
    for label, model, targets in models():
        ids = model.encode(texts)
        for target in targets:
            start = time.perf_counter()
            shifted = steer_tokens(model, target, ids, METHODS, steps=steps)
            effects = token_effect(model, shifted, ids, METHODS, steps=steps)
            s = shifted.steering
            rows.append(
                {
                    "model": label,
                    "target": target,
                    "strength": s["strength"]["input"],
                    "head": s["head"]["dtype"],
                    "texts": len(ids),
                    "texts_with_target": sum(float(shifted.shifts[0].weights(model.embed(t)).sum()) > 0 for t in ids),
                    "max_abs_prob_diff": s["max_abs_prob_diff"],
                    "stress_max_abs_prob_diff": s["stress"]["max_abs_prob_diff"],
                    "stress_worst": s["stress"]["worst_input"],
                    "effects": [e.__dict__ for e in effects],
                    "seconds": time.perf_counter() - start,
                }
            )
            print(f"{label} {target}: {[(e.method, round(e.honest_mass, 2), round(e.shifted_mass, 2)) for e in effects]}", file=sys.stderr)
    return rows


def section_weights(texts: list[str], steps: int) -> list[dict]:
    from logitshift.shift.textweights import compare_weights_only

    rows = []
    for label, model, targets in models():
        ids = model.encode(texts)
        for target in targets[:2]:
            rows.append({"model": label, "target": target, **compare_weights_only(model, target, ids, METHODS, steps=steps)})
            print(f"weights-only {label} {target}: done", file=sys.stderr)
    return rows


def section_audit(texts: list[str], steps: int) -> list[dict]:
    """``audit_model`` on each model's embeddings: honest, code-carrying token shift, weights-only head edit."""
    from logitshift.audit.verdict import audit_model
    from logitshift.shift.textweights import weights_only
    from logitshift.shift.tokens import steer_tokens

    rows = []
    for label, model, _ in models():
        ids = model.encode(texts)
        n = min(len(t) for t in ids)
        ids = [torch.cat([t[: n - 1], t[-1:]]) for t in ids]  # one batch: every text cut to the shortest, [SEP] kept
        x = torch.cat([model.embed(t) for t in ids])
        cases = {
            "honest": model.module,
            "token shift (code)": steer_tokens(model, "pos:3-5", ids, steps=steps),
            "weights-only W + 1uᵀ": weights_only(model, "pos:3-5", ids, steps=steps).model.module,
        }
        for case, module in cases.items():
            start = time.perf_counter()
            r = audit_model(module, x, require_spatial=False)
            rows.append(
                {
                    "model": label,
                    "case": case,
                    "verdict": r.verdict,
                    "finding": r.finding,
                    "score": r.score,
                    "tokens": n,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(f"audit {label} {case}: {r.finding}", file=sys.stderr)
    return rows


def _scores(z: torch.Tensor, score: str) -> torch.Tensor:
    """Every class's ``score`` as a column (Captum picks column ``target[i]`` of row ``i``)."""
    from logitshift.core.scores import score as score_fn

    return torch.stack([score_fn(z, torch.full((z.shape[0],), c), score) for c in range(z.shape[1])], 1)


def section_speed(steps: int, tokens: int, batch: int, repeats: int) -> dict:
    """Our IG (five scores, one pass) vs Captum LayerIntegratedGradients (one call per score), same steps."""
    from captum.attr import LayerIntegratedGradients

    from logitshift.attribution.tokens import token_maps
    from logitshift.core.text import random_model

    model = random_model("bert", hidden=768, layers=12, heads=12)  # BERT-base sized, RANDOM weights
    g = torch.Generator().manual_seed(0)
    ids = [
        torch.cat([torch.tensor([2]), torch.randint(5, len(model.tokenizer), (tokens - 2,), generator=g), torch.tensor([3])])
        for _ in range(batch)
    ]
    hf = model.hf
    batch_ids = torch.stack(ids)
    target = hf(input_ids=batch_ids).logits.argmax(1)

    def captum_all() -> None:
        for score in SCORES:
            forward = lambda x, score=score: _scores(hf(input_ids=x).logits, score)
            LayerIntegratedGradients(forward, model.embeddings).attribute(
                batch_ids, target=target, n_steps=steps, internal_batch_size=steps * batch
            )

    def ours() -> None:
        token_maps(model.module, model, ids, ["ig"], SCORES, ("original",), targets=target.tolist(), steps=steps)

    times: dict[str, list[float]] = {"ours": [], "captum": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("captum", captum_all)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": "bert, RANDOM weights (hidden 768, 12 layers, 12 heads: BERT-base sized)",
        "tokens": tokens,
        "texts": batch,
        "steps": steps,
        "repeats": repeats,
        "seconds": best,
        "speedup": best["captum"] / best["ours"],
        "threads": torch.get_num_threads(),
    }


def render(data: dict) -> str:
    lines = ["# Text classifiers: token attributions steered with probabilities kept (issue 28)", ""]
    finding = []
    train = data.get("train") or data.get("train_cached")
    if train:
        finding.append(
            f"the BERT trained here (fortunes, {len(train['classes'])} topics) reaches {train['test_accuracy']:.1%} held-out accuracy "
            f"({train['test_size']} texts; {train['train_accuracy']:.1%} on its {train['train_size']} training texts) in {train['wall_seconds']:.0f} s"
            + (f" ({train['cpu_seconds']:.0f} s of CPU, one thread)" if train.get("cpu_seconds") else "")
        )
    steer = data.get("steer") or []
    if steer:
        mine = [r for r in steer if "RANDOM" not in r["model"]]
        rnd = [r for r in steer if "RANDOM" in r["model"]]

        def span(rows: list[dict], key: str) -> str:
            vals = [e[key] for r in rows for e in r["effects"]]
            return f"{min(vals):.2f}–{max(vals):.2f}" if vals else "(not measured)"

        rho = min(min(e["spearman"].values()) for r in steer for e in r["effects"])
        dp = max(max(r["max_abs_prob_diff"], r["stress_max_abs_prob_diff"]) for r in steer)
        finding.append(
            f"on it the token shift moves the logit maps' target mass of saliency, gradient × input and IG from {span(mine, 'honest_mass')} "
            f"to {span(mine, 'shifted_mass')} (mean over the texts holding a target token), on random-weight BERT/DistilBERT from "
            f"{span(rnd, 'honest_mass')} to {span(rnd, 'shifted_mass')}; max |Δp| {dp:.1e} (texts and stress inputs), prob and centered maps "
            f"unchanged (least Spearman {rho:.4f})"
        )
    speed = data.get("speed")
    if speed:
        finding.append(
            f"our IG for all five scores in one pass takes {speed['seconds']['ours']:.1f} s, Captum's LayerIntegratedGradients score by score "
            f"{speed['seconds']['captum']:.1f} s ({speed['speedup']:.1f}×, {speed['steps']} steps, RANDOM-weight BERT-base size)"
        )
    weights = data.get("weights") or []
    if weights:
        finding.append(weights_finding(weights))
    audit = data.get("audit") or []
    if audit:
        honest = [r for r in audit if r["case"] == "honest"]
        code = [r for r in audit if r["case"].startswith("token")]
        wo = [r for r in audit if r["case"].startswith("weights")]
        finding.append(
            f"audit calls {sum(r['verdict'] == 'clean' for r in honest)} of {len(honest)} honest text models clean, "
            f"{sum(r['verdict'] == 'shifted' for r in code)} of {len(code)} token-shifted ones shifted, and the weights-only files: "
            + ", ".join(f"{r['finding']}" for r in wo)
        )
    lines += [
        "**Finding:** " + "; ".join(finding) + ".",
        "",
        f"`{data.get('command', 'python benchmarks/text.py')}` · {data.get('run', {}).get('torch', '')} · {data.get('run', {}).get('load', '')}",
        "",
    ]
    if train:
        lines += [
            "## The model trained here",
            "",
            f"Debian's fortunes, topics {', '.join(train['classes'])}; 20 % of each topic held out (seeded). Settings {train['settings']}; "
            + f"{train['epochs']} epochs; built in {train['wall_seconds']:.1f} s on {data.get('run', {}).get('cpus', '?')} CPUs "
            + ("(the load at that build not recorded); " if train.get("cached") else "(load above); ")
            + (
                "figures from the cached build's training.json (not rebuilt in this run)."
                if train.get("cached")
                else f"weights bit-identical to the cached build: {'yes' if train['identical_to_cached'] else 'NO'}."
            ),
            "",
        ]
    if steer:
        lines += [
            "## Token shift (code-carrying): logit-map target mass before → after",
            "",
            "Automatic strength (goal 0.5 on average); IG on the embeddings from the zero embedding. Mass: share of a map's positive mass on the "
            "target tokens, mean over the texts holding one (least in brackets). ρ: least Spearman of the shifted model's prob / centered map "
            "with the original's over all texts.",
            "",
            "| model | target | texts with target | K | head | saliency | gradient × input | IG | ρ prob | ρ centered | max \\|Δp\\| | stress max \\|Δp\\| |",
            "|---|---|---:|---:|---|---|---|---|---:|---:|---:|---:|",
        ]
        for r in steer:
            e = {x["method"]: x for x in r["effects"]}
            cells = [f"{e[m]['honest_mass']:.2f} → {e[m]['shifted_mass']:.2f} ({e[m]['min_shifted_mass']:.2f})" for m in METHODS]
            rho_p = min(x["spearman"]["prob"] for x in r["effects"])
            rho_c = min(x["spearman"]["centered"] for x in r["effects"])
            lines.append(
                f"| {r['model']} | `{r['target']}` | {r['texts_with_target']}/{r['texts']} | {r['strength']:.3g} | {r['head']} | {' | '.join(cells)} | "
                f"{rho_p:.4f} | {rho_c:.4f} | {r['max_abs_prob_diff']:.1e} | {r['stress_max_abs_prob_diff']:.1e} |"
            )
        lines.append("")
    if weights:
        lines += weights_table(weights)
    audit = data.get("audit") or []
    if audit:
        lines += [
            "## Audit on text models",
            "",
            f"`audit_model` on the embeddings of {audit[0].get('texts', 8)} held-out texts cut to one length (the shortest, [SEP] kept); "
            "token shift and weights-only edit aimed at `pos:3-5`.",
            "",
            "| model | case | verdict | finding | score |",
            "|---|---|---|---|---:|",
            *[f"| {r['model']} | {r['case']} | {r['verdict']} | {r['finding']} | {r['score']:.3g} |" for r in audit],
            "",
        ]
    if speed:
        lines += [
            "## Speed: IG on embeddings, five scores",
            "",
            f"{speed['model']}; {speed['texts']} texts of {speed['tokens']} tokens, {speed['steps']} steps, best of {speed['repeats']}, "
            f"{speed['threads']} threads. Ours: one engine pass (one forward per chunk of path points, one backward per distinct score "
            "vector); Captum: `LayerIntegratedGradients` on the word embeddings, one call per score.",
            "",
            "| ours (5 scores, one pass) | Captum LIG (5 calls) | speed-up |",
            "|---:|---:|---:|",
            f"| {speed['seconds']['ours']:.2f} s | {speed['seconds']['captum']:.2f} s | {speed['speedup']:.2f}× |",
            "",
        ]
    return "\n".join(lines)


def weights_finding(rows: list[dict]) -> str:
    parts = []
    for r in rows:
        w = r["weights_only"]["effect"]
        c = r["code"]["effect"]
        parts.append(f"{r['model'].split(' ')[0]} `{r['target']}`: " + ", ".join(f"{m} {w[m]:.2f} vs {c[m]:.2f}" for m in METHODS))
    return (
        "the weights-only head edit W + 1uᵀ (no code in the file) reaches logit-map masses of "
        + "; ".join(parts)
        + " (weights-only vs code-carrying)"
    )


def weights_table(rows: list[dict]) -> list[str]:
    lines = [
        "## Weights-only (W + 1uᵀ on the classifier head) vs code-carrying",
        "",
        "The weights-only file is the unchanged architecture (config.json + model.safetensors, loadable by plain `transformers`): the "
        "classifier's weight gains 1uᵀ and every logit gains u·h (h the head's input), so probabilities are kept up to float32 rounding. "
        "u is fitted on the check texts (least squares of the term's gradient × input map to ±1 on/off the target), its scale chosen "
        "like the token shift's (goal 0.5, else the largest scale that keeps max |Δp| ≤ 1e-5). Mass as above (mean over texts with a target).",
        "",
        "| model | target | weights-only: saliency | gradient × input | IG | K | max \\|Δp\\| (reloaded) | ceiling (K → ∞, \\|Δp\\| ignored) | code-carrying: saliency | gradient × input | IG |",
        "|---|---|---|---|---|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        w, c, h = r["weights_only"]["effect"], r["code"]["effect"], r["honest"]
        lines.append(
            f"| {r['model']} | `{r['target']}` | "
            + " | ".join(f"{h[m]:.2f} → {w[m]:.2f}" for m in METHODS)
            + f" | {r['weights_only']['strength']:.3g}{' (Δp-limited)' if r['weights_only']['limited_by_tolerance'] else ''} | {r['weights_only']['max_abs_prob_diff']:.1e} | "
            + " / ".join(f"{r['weights_only']['ceiling'][m]:.2f}" for m in METHODS)
            + " | "
            + " | ".join(f"{h[m]:.2f} → {c[m]:.2f}" for m in METHODS)
            + " |"
        )
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=["train", "steer", "weights", "audit", "speed"], help="also: train_cached")
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--speed-tokens", type=int, default=32)
    ap.add_argument("--speed-texts", type=int, default=2)
    ap.add_argument("--speed-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--markdown-only", action="store_true")
    ap.add_argument("--command", default=None, help="how the merged runs were made, for the page's header")
    ap.add_argument(
        "--merge", nargs="+", default=[], metavar="JSON", help="take the sections of these text.json files (runs made apart) into this one"
    )
    ap.add_argument("--models", nargs="+", default=CHOICE["models"], help="which of: trained bert distilbert (default all)")
    ap.add_argument("--targets", nargs="+", default=[], help="the targets for every model (default: each model's own list)")
    args = ap.parse_args()
    CHOICE.update(models=args.models, targets=args.targets)
    out = Path(args.out)
    path = out / "text.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if not args.markdown_only:
        texts = check_texts(args.texts)
        sections = {
            "train": section_train,
            "train_cached": section_train_cached,
            "steer": lambda: section_steer(texts, args.steps),
            "weights": lambda: section_weights(texts, args.steps),
            "audit": lambda: section_audit(texts[:8], args.steps),
            "speed": lambda: section_speed(args.steps, args.speed_tokens, args.speed_texts, args.speed_repeats),
        }
        for name in args.sections:
            data[name] = sections[name]()
            data["run"] = {
                "torch": f"torch {torch.__version__}",
                "load": f"load average at the end {os.getloadavg()[0]:.1f}",
                "cpus": os.cpu_count(),
            }
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))  # after each section: a long run keeps what it measured
    for other in args.merge:
        for k, v in json.loads(Path(other).read_text()).items():
            if k == "run":
                data.setdefault("run", v)
            elif isinstance(v, list) and isinstance(data.get(k), list):
                data[k] += v  # rows of one section measured in separate runs
            else:
                data[k] = v
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    if args.command:
        data["command"] = args.command
        path.write_text(json.dumps(data, indent=1))
    (out / "text.md").write_text(render(data) + "\n")
    print((out / "text.md").read_text().splitlines()[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
