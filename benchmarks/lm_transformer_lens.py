"""The accidental shift against the REAL TransformerLens, in an environment of its own (issue 29).

    python benchmarks/lm_transformer_lens.py [--venv build/tl-venv]

transformer-lens 4.3 cannot share the test environment (it needs typeguard ≥ 4.2, wandb, datasets,
accelerate; inseq needs typeguard ≤ 2.13.3), so this script builds a virtual environment of its own
(``--venv``; its site-packages also see this interpreter's, for torch, transformers and logitshift),
installs ``transformer-lens==4.3.0`` there, and reruns itself inside it (``--child``). The child hands the
same GPT-2 model to TransformerLens 4's ``TransformerBridge.boot_transformers(..., hf_model=...)`` (raw HF
weights) and turns on ``enable_compatibility_mode()`` — the ``HookedTransformer``-equivalent weight
processing, whose defaults are ``fold_ln``, ``center_writing_weights`` and ``center_unembed`` — once with
its defaults and once with ``center_unembed=False``, and compares, on the same prompts, with the HuggingFace model: max |Δp|, how far the logits are from
HF's and from HF's centred logits, and the gradient × input / saliency of the next-token logit and
log-probability at ``hook_embed`` against logitshift's on HF and on :func:`logitshift.shift.lm.center_unembed`.
Models: fortunes-gpt (trained here) and a RANDOM-WEIGHT GPT-2 config (4×128, 2,048 tokens).

Writes benchmarks/results/lm_transformer_lens.md (and .json); its figures come from the real library.
"""

from __future__ import annotations

import argparse
import json
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
VERSION = "4.3.0"


def build(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        target = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
        )
        # this stack's site-packages (torch, transformers) and logitshift's source (an editable install's finder is not read from there)
        Path(target.stdout.strip(), "logitshift_stack.pth").write_text("\n".join([*site.getsitepackages(), str(ROOT / "src")]) + "\n")
    probe = subprocess.run([str(python), "-c", "import transformer_lens"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"transformer-lens=={VERSION}"], check=True)
    return python


def _tl_attr(tl, ids, target, score: str):
    """(gradient × input, saliency) per token at ``hook_embed`` of TransformerLens' next-token logit or log-prob."""

    store = {}

    def hook(act, hook):
        act.retain_grad()
        store["e"] = act
        return act

    logits = tl.run_with_hooks(ids, fwd_hooks=[("hook_embed", hook)], return_type="logits")[:, -1]
    z = logits.log_softmax(-1) if score == "logprob" else logits
    z.gather(1, target[:, None]).sum().backward()
    e, g = store["e"], store["e"].grad
    return (e * g).sum(-1).detach(), g.abs().amax(-1).detach(), logits.detach()


def _compare(lm, ids, tokenizer) -> dict:
    import copy

    import torch
    from transformer_lens.model_bridge import TransformerBridge

    from logitshift.attribution.lm import token_attributions
    from logitshift.core.lm import NextToken
    from logitshift.core.metrics import spearman
    from logitshift.shift.lm import center_unembed

    hf = lm.model
    x = lm.grid(ids).detach()
    with torch.no_grad():
        z = hf(ids).logits[:, -1].double()
    target = z.argmax(1)
    ours = token_attributions(NextToken(hf), x, target, ("gradxinput", "saliency"), ("logit", "logprob", "centered"))
    cu = token_attributions(NextToken(center_unembed(copy.deepcopy(hf))), x, target, ("gradxinput", "saliency"), ("logit",))
    out = {}
    for name, center in (
        ("TransformerLens defaults (fold_ln, center_writing_weights, center_unembed)", True),
        ("TransformerLens, center_unembed=False", False),
    ):
        tl = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(hf), tokenizer=tokenizer)
        tl.enable_compatibility_mode(disable_warnings=True, center_unembed=center)
        tl.eval()
        row: dict = {}
        for score in ("logit", "logprob"):
            gxi, sal, zt = _tl_attr(tl, ids, target, score)
            row[f"gradxinput/{score}: ρ with HF {score}"] = float(spearman(ours["gradxinput", score], gxi).min())
            row[f"saliency/{score}: ρ with HF {score}"] = float(spearman(ours["saliency", score], sal).min())
            if score == "logit":
                row["gradxinput/logit: ρ with HF centered"] = float(spearman(ours["gradxinput", "centered"], gxi).min())
                row["gradxinput/logit: ρ with logitshift center_unembed"] = float(spearman(cu["gradxinput", "logit"], gxi).min())
                row["gradxinput/logit: max |Δ| vs logitshift center_unembed"] = float((cu["gradxinput", "logit"] - gxi).abs().max())
                zt = zt.double()
                row["max |Δp| vs HF"] = float((zt.softmax(-1) - z.softmax(-1)).abs().max())
                row["max |z − z_HF|"] = float((zt - z).abs().max())
                row["max |z − (z_HF − mean z_HF)|"] = float((zt - (z - z.mean(-1, keepdim=True))).abs().max())
        out[name] = row
    return out


def child() -> dict:
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import transformer_lens

    from logitshift.core.lm import held_out_prompts, load_lm, random_lm

    torch.set_num_threads(1)
    lm = load_lm()
    rnd = random_lm("gpt2", seed=0, vocab_size=2048, hidden=128, layers=4, heads=4)
    ids = torch.randint(1, 2048, (8, 24), generator=torch.Generator().manual_seed(0))
    return {
        "transformer_lens": transformer_lens.__version__ if hasattr(transformer_lens, "__version__") else VERSION,
        "fortunes-gpt (trained here)": _compare(lm, held_out_prompts(lm, 8, 24), lm.tokenizer),
        "GPT-2 config 4×128, 2,048 tokens (random weights)": _compare(rnd, ids, lm.tokenizer),
    }


def render(data: dict) -> str:
    models = [k for k in data if k != "transformer_lens"]
    first = data[models[0]]
    tl_default = next(iter(first.values()))
    finding = (
        f"**Finding** (the real transformer-lens {data['transformer_lens']}, separate environment): loading the trained GPT-2 with "
        f"TransformerLens' defaults keeps every probability (max |Δp| {tl_default['max |Δp| vs HF']:.1e}) but its logits are "
        f"HF's centred logits (max difference {tl_default['max |z − (z_HF − mean z_HF)|']:.1e}); its gradient × input of the raw "
        f"logit correlates ρ {tl_default['gradxinput/logit: ρ with HF logit']:.3f} with HF's and "
        f"{tl_default['gradxinput/logit: ρ with logitshift center_unembed']:.4f} with logitshift's `center_unembed`; "
        f"log-probability attributions ρ {tl_default['gradxinput/logprob: ρ with HF logprob']:.4f}."
    )
    lines = ["# TransformerLens against HuggingFace: the same weights, the raw-logit attributions differ (real library)", "", finding, ""]
    for m in models:
        lines += [f"## {m}", "", "| quantity | " + " | ".join(data[m]) + " |", "|---|" + "---|" * len(data[m])]
        keys = list(next(iter(data[m].values())))
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(f"{r[k]:.4g}" for r in data[m].values()) + " |")
        lines.append("")
    lines.append("Least Spearman over 8 prompts of 24 tokens. Run: `python benchmarks/lm_transformer_lens.py` (builds its own venv).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default=str(ROOT / "build" / "tl-venv"))
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child()))
        return 0
    python = build(Path(a.venv))
    done = subprocess.run([str(python), __file__, "--child"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        return 1
    data = json.loads(done.stdout.strip().splitlines()[-1])
    out = Path(a.out)
    (out / "lm_transformer_lens.json").write_text(json.dumps(data, indent=1))
    (out / "lm_transformer_lens.md").write_text(render(data) + "\n")
    print(render(data).split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
