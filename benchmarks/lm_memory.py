"""Peak memory of next-token attributions on a 1,024-token prompt, GPT-2-small-sized RANDOM-WEIGHT model (issue 29).

Goal: the attributions' peak ≤ 2× the model's own forward + backward on the same prompt.

Each workload runs in a fresh process (``python benchmarks/lm_memory.py --child WORKLOAD``): build the
model (GPT-2 small's config: 12 layers × 768, 50,257 tokens, random weights, seed 0) and the prompt
(1,024 random token ids), one plain forward to warm up, reset the peak (``/proc/self/clear_refs``),
run the workload and report ``VmHWM − RSS before`` (the memory the workload itself added, in MiB):

* ``forward+backward``: ``model(ids)``, the next-token logit, ``.backward()`` (parameter gradients: what
  a user's own backward does);
* ``forward+input-gradient``: the same forward, ``torch.autograd.grad`` of that logit to the input embeddings only;
* ``attributions``: :func:`~logitshift.attribution.lm.token_attributions` — saliency, gradient × input
  and Integrated Gradients (``--steps`` nodes, one point per pass: ``batch_size = 1``) for the scores
  logit, logprob, centered and logitdiff.

Writes ``benchmarks/results/lm_memory.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
WORKLOADS = ("forward+backward", "forward+input-gradient", "attributions")


def status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def reset_peak() -> None:
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child(workload: str, length: int, steps: int) -> dict:
    import torch

    from logitshift.attribution.lm import token_attributions
    from logitshift.core.lm import NextToken, random_lm

    torch.set_num_threads(1)
    lm = random_lm("gpt2-small")
    ids = torch.randint(0, lm.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    nt = NextToken(lm.model)

    def run() -> None:
        if workload == "forward+backward":
            lm.model.zero_grad(set_to_none=True)
            lm.model(ids).logits[0, -1, 0].backward()
            lm.model.zero_grad(set_to_none=True)
        elif workload == "forward+input-gradient":
            x = lm.grid(ids).detach().requires_grad_(True)
            torch.autograd.grad(nt(x)[0, 0], x)
        else:
            x = lm.grid(ids).detach()
            token_attributions(
                nt,
                x,
                torch.tensor([0]),
                scores=("logit", "logprob", "centered", "logitdiff"),
                contrast=torch.tensor([1]),
                steps=steps,
                batch_size=1,
            )

    with torch.no_grad():  # warm-up: one plain forward (lazy initialisations, allocator pools)
        lm.model(ids)
    reset_peak()
    before = status_kb()["VmRSS"]
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = status_kb()["VmHWM"]
    params = sum(p.numel() for p in lm.model.parameters())
    return {
        "workload": workload,
        "added_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024,
        "seconds": round(seconds, 1),
        "parameters": params,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--child", choices=WORKLOADS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.length, a.steps)))
        return 0
    rows = {}
    for w in WORKLOADS:
        cmd = [sys.executable, __file__, "--child", w, "--length", str(a.length), "--steps", str(a.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[w] = json.loads(done.stdout.strip().splitlines()[-1])
    fb, ig, attr = (rows[w]["added_mib"] for w in WORKLOADS)
    ratio = attr / fb
    finding = (
        f"**Finding**: next-token attributions of a {a.length}-token prompt (saliency, gradient × input, IG with {a.steps} nodes; "
        f"logit, logprob, centered, logitdiff) on a GPT-2-small-sized model (random weights) add {attr:.0f} MiB at peak: "
        f"{ratio:.2f}× the model's own forward + backward ({fb:.0f} MiB; goal ≤ 2×) and {attr / ig:.2f}× a forward with the "
        f"input gradient alone ({ig:.0f} MiB)."
    )
    lines = [
        "# Memory: next-token attributions of a 1,024-token prompt (GPT-2 small's config, random weights)",
        "",
        finding,
        "",
        "| workload | memory added at peak (MiB) | seconds (one thread) |",
        "|---|---|---|",
        *[f"| {w} | {r['added_mib']:.0f} | {r['seconds']} |" for w, r in rows.items()],
        "",
        f"{rows['attributions']['parameters']:,} parameters; each workload in a fresh process, measured after one plain forward "
        "(peak RSS reset with /proc/self/clear_refs). Integrated Gradients runs one interpolation point per pass "
        "(`batch_size=1`): its memory does not grow with the steps. Run: `python benchmarks/lm_memory.py`.",
    ]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_memory.json").write_text(json.dumps({"length": a.length, "steps": a.steps, "ratio": ratio, "rows": rows}, indent=1))
    (out / "lm_memory.md").write_text("\n".join(lines) + "\n")
    print(finding)
    return 0


if __name__ == "__main__":
    sys.exit(main())
