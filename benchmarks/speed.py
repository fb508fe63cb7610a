"""Speed of the batch engine against the floor, pytorch-grad-cam and Captum.

Everything is measured in one run, on the same model, layer, images and batch
size, with the same number of CPU threads; each timing is the median of
``--repeats`` repeats, the contenders interleaved within each repeat (so a
burst of load on a shared machine hits them alike). Printed as Markdown and
written to ``benchmarks/results/speed.md``.

1. **Grad-CAM of the predicted class**:
   * floor: one forward (parameters frozen) + a backward only down to the
     Grad-CAM layer, nothing else;
   * ours: :func:`logitshift.attribution.engine.explain` with ``gradcam`` / ``logit``;
   * pytorch-grad-cam ``GradCAM`` (``targets=None``: its predicted class;
     backward through the whole network, then its resize and min-max scaling);
   * Captum ``LayerGradCam`` (``relu_attributions=True``) plus the separate
     no-grad forward that picks the class.
   Goals: ours ≤ 1.05 × floor; pytorch-grad-cam ≥ 5 × ours; Captum ≥ 3 × ours
   (the last two are bounded by the floor's own cost: see the breakdown row).
2. **The paper's four maps** (original/shifted × logit/prob, paper shift at
   the Grad-CAM layer) against one plain Grad-CAM of ours. Goal ≤ 1.5×.
3. **Methods × scores matrix** (gradcam, saliency, gradxinput, ig,
   smoothgrad × logit, prob, logprob, centered, contrast, predicted class):
   ours in one :func:`~logitshift.attribution.engine.explain` call against Captum run
   cell by cell (``LayerGradCam``, ``Saliency(abs=False)``, ``InputXGradient``,
   ``IntegratedGradients``, ``NoiseTunnel(Saliency)``) on a module that
   returns the score of every class, the way a Captum user picks a score.
   IG and SmoothGrad use the same steps / samples on both sides. Ours takes one
   forward per chunk of IG / SmoothGrad points and 3 vector-Jacobian products
   for the five scores (see :mod:`logitshift.attribution.engine`); Captum one forward and
   one backward per score. Goals: whole matrix ≥ 2.5×, IG and SmoothGrad rows
   each ≥ 2×.

Models: EfficientNet-Lite0, -Lite1 and -Lite2 (real weights) and torchvision
``resnet18`` / ``mobilenet_v2`` with random weights (speed does not depend
on the weights). Images: the 8 scikit-image samples and their mirror images
(16, one batch).

Run: ``.venv/bin/python benchmarks/speed.py [--models ...] [--repeats 5] [--threads 2] [--quick] [--note "under load"]``
(``--quick``: 8 images, 3 repeats, 1 matrix repeat, 4 IG steps / SmoothGrad samples.)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from logitshift.attribution import GradCAM, get_method  # noqa: E402
from logitshift.attribution.engine import explain  # noqa: E402
from logitshift.core.images import SAMPLES, load_image  # noqa: E402
from logitshift.core.models import EFFICIENTNET_LITES, get_layer, load_model, torchvision_model  # noqa: E402
from logitshift.core.scores import SCORES  # noqa: E402
from logitshift.shift.steer import shift_model  # noqa: E402

MATRIX_METHODS = ("gradcam", "saliency", "gradxinput", "ig", "smoothgrad")
#: each measured ratio's goal (comparison, bound) and how the finding says the ratio ({} = its range over the models)
GOALS = {
    "ours / floor": ("≤", 1.05, "our Grad-CAM takes {} × the floor"),
    "pytorch-grad-cam / ours": ("≥", 5.0, "pytorch-grad-cam {} × ours"),
    "Captum / ours": ("≥", 3.0, "Captum {} × ours"),
    "four maps / one": ("≤", 1.5, "the paper's four maps {} × one Grad-CAM"),
    "matrix: whole matrix": ("≥", 2.5, "Captum cell by cell {} × our whole methods × scores matrix"),
    "matrix: ig": ("≥", 2.0, "{} × on IG"),
    "matrix: smoothgrad": ("≥", 2.0, "{} × on SmoothGrad"),
}


def load(name: str):
    if name.replace("_", "-") in EFFICIENTNET_LITES:
        return load_model(name)
    torch.manual_seed(0)
    return torchvision_model(name, random_init=True)


def images(loaded, n: int) -> torch.Tensor:
    base = [load_image(s, loaded.preprocess).tensor for s in SAMPLES]
    xs = base + [t.flip(-1) for t in base]
    while len(xs) < n:
        xs = xs + xs
    return torch.stack(xs[:n])


def timeit(fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each function; one warm-up each (unless ``warmup=False``), then the functions interleaved per repeat."""
    for f in fns.values() if warmup else ():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------- contenders


def floor_fn(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One forward with frozen parameters, a backward only down to ``layer``."""

    def run() -> torch.Tensor:
        box: dict[str, torch.Tensor] = {}

        def hook(_m, _i, out):
            out.requires_grad_(True)
            box["a"] = out

        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        handle = layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                z = model(x)
                s = z.gather(1, z.argmax(1, keepdim=True)).sum()
                (g,) = torch.autograd.grad(s, box["a"])
        finally:
            handle.remove()
            for p in params:
                p.requires_grad_(True)
        return g

    return run


class AllScores(nn.Module):
    """The score of every class, N×C, for Captum's ``target=`` to pick one (how a Captum user chooses a score)."""

    def __init__(self, model: nn.Module, score: str) -> None:
        super().__init__()
        self.model, self.score = model, score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.score == "logit":
            return z
        if self.score == "prob":
            return torch.softmax(z, dim=1)
        if self.score == "logprob":
            return torch.log_softmax(z, dim=1)
        if self.score == "centered":
            return z - z.mean(dim=1, keepdim=True)
        # contrast: z_c - logsumexp_{j≠c} z_j = log p_c - log(1 - p_c)
        logp = torch.log_softmax(z, dim=1)
        return logp - torch.log1p(-logp.exp().clamp(max=1 - 1e-7))


def captum_cell(model: nn.Module, layer: nn.Module, method: str, score: str, x: torch.Tensor, steps: int, samples: int):
    import captum.attr as ca

    f = AllScores(model, score)

    def run() -> torch.Tensor:
        with torch.no_grad():
            target = model(x).argmax(1)
        if method == "gradcam":
            return ca.LayerGradCam(f, layer).attribute(x, target=target, relu_attributions=True)
        if method == "saliency":
            return ca.Saliency(f).attribute(x, target=target, abs=False)
        if method == "gradxinput":
            return ca.InputXGradient(f).attribute(x, target=target)
        if method == "ig":
            return ca.IntegratedGradients(f).attribute(x, target=target, n_steps=steps, internal_batch_size=32)
        if method == "smoothgrad":
            nt = ca.NoiseTunnel(ca.Saliency(f))
            return nt.attribute(
                x, target=target, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=32, stdevs=0.15, abs=False
            )
        raise ValueError(method)

    return run


# ----------------------------------------------------------------------------- the benchmark


def bench_model(name: str, n: int, repeats: int, steps: int, samples: int, matrix: bool, matrix_repeats: int) -> tuple[list[str], dict]:
    """The model's section of the page, and its ratios (as :data:`GOALS` names them) for :func:`finding`."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PGCGradCAM

    loaded = load(name)
    model, layer_name = loaded.module, loaded.layer
    layer = get_layer(model, layer_name)
    x = images(loaded, n)
    cam = GradCAM()
    pgc = PGCGradCAM(model=model, target_layers=[layer])

    def forward_only():
        with torch.no_grad():
            return model(x)

    lgc = LayerGradCam(model, layer)

    def captum_gradcam():
        with torch.no_grad():
            target = model(x).argmax(1)
        return lgc.attribute(x, target=target, relu_attributions=True)

    t = timeit(
        {
            "floor": floor_fn(model, layer, x),
            "forward": forward_only,
            "ours": lambda: explain(model, x, layer_name, [cam], ["logit"]),
            "pytorch-grad-cam": lambda: pgc(input_tensor=x, targets=None),
            "captum": captum_gradcam,
        },
        repeats,
    )
    pgc.activations_and_grads.release()
    # sanity: the same maps (Captum and ours both un-normalised, ReLU-ed)
    ours_map = explain(model, x, layer_name, [cam], ["logit"]).maps[(0, "gradcam", "logit", "original")]
    ref = captum_gradcam()[:, 0].detach()
    agree = float((ours_map - ref).abs().max() / ref.abs().max().clamp_min(1e-12))

    shifted = shift_model(model, layer_name, "paper", 1.0)
    t4 = timeit(
        {
            "one": lambda: explain(model, x, layer_name, [cam], ["logit"]),
            "four": lambda: explain(shifted, x, layer_name, [cam], ["logit", "prob"], ("original", "shifted")),
        },
        repeats,
    )
    ratios = {
        "ours / floor": t["ours"] / t["floor"],
        "pytorch-grad-cam / ours": t["pytorch-grad-cam"] / t["ours"],
        "Captum / ours": t["captum"] / t["ours"],
        "four maps / one": t4["four"] / t4["one"],
    }
    lines = [
        f"### {name} (layer `{layer_name}`, {n} images of {x.shape[-1]}×{x.shape[-1]}, batch {n})",
        "",
        "| Grad-CAM of the predicted class | seconds | ratio | goal |",
        "|---|---:|---:|---|",
        f"| forward only, no grad (part of every contender) | {t['forward']:.3f} | {t['forward'] / t['floor']:.2f} × floor | |",
        f"| floor: forward + backward to the layer | {t['floor']:.3f} | 1.00 × floor | |",
        f"| ours (`explain`) | {t['ours']:.3f} | {ratios['ours / floor']:.2f} × floor | {goal('ours / floor')} × floor {mark(met('ours / floor', ratios))} |",
        f"| pytorch-grad-cam `GradCAM` | {t['pytorch-grad-cam']:.3f} | {ratios['pytorch-grad-cam / ours']:.2f} × ours | {goal('pytorch-grad-cam / ours')} × ours {mark(met('pytorch-grad-cam / ours', ratios))} |",
        f"| Captum `LayerGradCam` + forward for the class | {t['captum']:.3f} | {ratios['Captum / ours']:.2f} × ours | {goal('Captum / ours')} × ours {mark(met('Captum / ours', ratios))} |",
        "",
        f"Max relative difference of our map from Captum's: {agree:.1e}. Breakdown: the forward alone is "
        f"{t['forward'] / t['floor']:.0%} of the floor, so Captum (a no-grad forward for the class, then forward + "
        f"backward to the layer) can be at most about {1 + t['forward'] / t['floor']:.2f} × the floor, and "
        f"pytorch-grad-cam (forward + a backward through the whole network with parameter gradients) "
        f"{t['pytorch-grad-cam'] / t['floor']:.2f} × here.",
        "",
        "| paper's four maps | seconds | ratio | goal |",
        "|---|---:|---:|---|",
        f"| one plain Grad-CAM (ours) | {t4['one']:.3f} | 1.00 | |",
        f"| original/shifted × logit/prob (ours, one pass) | {t4['four']:.3f} | {ratios['four maps / one']:.2f} × one | {goal('four maps / one')} × {mark(met('four maps / one', ratios))} |",
        "",
    ]
    if matrix:
        part, found = bench_matrix(model, layer, layer_name, x, matrix_repeats, steps, samples)
        lines += part
        ratios.update(found)
    return lines, ratios


def bench_matrix(model, layer, layer_name, x, repeats, steps, samples) -> tuple[list[str], dict]:
    """The methods × scores table, and its Captum / ours ratios (as :data:`GOALS` names them)."""
    options = {"ig": {"steps": steps}, "smoothgrad": {"samples": samples, "stdev": 0.15}}
    cells = {m: [captum_cell(model, layer, m, s, x, steps, samples) for s in SCORES] for m in MATRIX_METHODS}
    fns: dict[str, Callable[[], object]] = {}
    # ours, all at once, and split into the part served by the one shared pass and the parts with passes of their own
    methods = {m: get_method(m, **options.get(m, {})) for m in MATRIX_METHODS}
    shared = [m for m in MATRIX_METHODS if m not in ("ig", "smoothgrad")]
    fns["ours: " + ", ".join(shared)] = lambda: explain(model, x, layer_name, [methods[m] for m in shared], SCORES)
    fns["captum: " + ", ".join(shared)] = lambda: [f() for m in shared for f in cells[m]]
    for m in ("ig", "smoothgrad"):
        fns[f"ours: {m}"] = lambda m=m: explain(model, x, layer_name, [methods[m]], SCORES)
        fns[f"captum: {m}"] = lambda m=m: [f() for f in cells[m]]
    # the model is warm from the Grad-CAM timings; one repeat of the matrix (--quick) skips the warm-up call
    t = timeit(fns, repeats, warmup=repeats > 1)
    # explain() with all five methods runs exactly these three parts one after the other
    for side in ("ours", "captum"):
        t[f"{side}: whole matrix"] = sum(t[f"{side}: {part}"] for part in (", ".join(shared), "ig", "smoothgrad"))
    lines = [
        f"| methods × scores ({len(MATRIX_METHODS)} × {len(SCORES)}, predicted class; ig steps {steps}, smoothgrad samples {samples}) | ours s | Captum cell by cell s | Captum / ours |",
        "|---|---:|---:|---:|",
    ]
    ratios = {}
    for part in ["whole matrix", ", ".join(shared), "ig", "smoothgrad"]:
        a, b = t[f"ours: {part}"], t[f"captum: {part}"]
        key = f"matrix: {part}"
        ratios[key] = b / a
        lines.append(
            f"| {part} | {a:.3f} | {b:.3f} | {b / a:.2f} {f'(goal {goal(key)} {mark(met(key, ratios))})' if key in GOALS else ''} |"
        )
    return lines + [""], ratios


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def goal(key: str) -> str:
    """The goal of ratio ``key`` as the page writes it, e.g. ``≥ 5``."""
    op, bound, _ = GOALS[key]
    return f"{op} {bound:g}"


def met(key: str, ratios: dict) -> bool:
    """Whether ``ratios[key]`` meets its goal."""
    op, bound, _ = GOALS[key]
    return ratios[key] <= bound if op == "≤" else ratios[key] >= bound


def finding(results: dict[str, dict]) -> str:
    """The benchmark's result in one paragraph, first in the page: per goal, on how many models it is met and the range."""
    parts = []
    for key in GOALS:
        values = [r[key] for r in results.values() if key in r]
        if values:
            hits = sum(met(key, r) for r in results.values() if key in r)
            low, high = f"{min(values):.2f}", f"{max(values):.2f}"
            said = GOALS[key][2].format(low if low == high else f"{low}–{high}")
            parts.append(f"{said} (goal {goal(key)}: met on {hits} of {len(values)})")
    return f"**Finding:** over {len(results)} model{'s' * (len(results) != 1)}, " + "; ".join(parts) + "."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[*EFFICIENTNET_LITES, "resnet18", "mobilenet_v2"])
    ap.add_argument("--images", type=int, default=16, help="images in the batch (default 16)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--matrix-repeats", type=int, default=3, help="repeats of the (slow) matrix timings (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--smoothgrad-samples", type=int, default=8)
    ap.add_argument("--no-matrix", action="store_true", help="skip the methods × scores matrix (the slow part)")
    ap.add_argument("--quick", action="store_true", help="8 images, 3 repeats, 1 matrix repeat, 4 IG steps / SmoothGrad samples")
    ap.add_argument("--note", default="", help="a note for the header, e.g. 'under load'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.md"))
    args = ap.parse_args()
    if args.quick:
        args.images, args.repeats, args.matrix_repeats, args.ig_steps, args.smoothgrad_samples = 8, 3, 1, 4, 4
    models = list(args.models)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    import captum
    import pytorch_grad_cam  # noqa: F401

    head = [
        "# Speed: logitshift's batch engine against the floor and the peer libraries",
        "",
        f"`python benchmarks/speed.py {' '.join(sys.argv[1:])}`: torch {torch.__version__}, captum {captum.__version__}, "
        f"grad-cam 1.5.7, {args.threads} threads, median of {args.repeats} interleaved repeats "
        f"({args.matrix_repeats} for the matrix; its whole-matrix row is the sum of its three parts, which is what one "
        f"`explain` call with all five methods runs), CPU "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}." + (f" **{args.note}**." if args.note else ""),
        "",
    ]
    print("\n".join(head), flush=True)
    lines = list(head)
    ratios = {}
    for name in models:
        part, ratios[name] = bench_model(
            name, args.images, args.repeats, args.ig_steps, args.smoothgrad_samples, not args.no_matrix, args.matrix_repeats
        )
        print("\n".join(part), flush=True)
        lines += part
    lines[2:2] = [finding(ratios), ""]
    print(lines[2], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
