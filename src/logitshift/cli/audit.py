"""``logitshift audit``: flags → :class:`~logitshift.runs.audit.AuditConfig` → :func:`~logitshift.runs.audit.run_audit`.

A model file or a weights file is someone else's data: the command re-runs
itself on it in a child process with memory, CPU and file-size limits
(:mod:`logitshift.audit.sandbox`) before anything reads it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..audit import sandbox
from ..core.errors import LogitShiftError
from ..core.names import (
    AUDITED_NAMES,
    DEFAULT_CPU_SECONDS,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_LAYERS,
    DEFAULT_MEMORY_GB,
    DEFAULT_PROBES,
    DEFAULT_TOP_K,
    THRESHOLD,
)

if TYPE_CHECKING:
    from ..audit.verdict import AuditResult
from .flags import (
    alias,
    class_flags,
    device_flag,
    force_flag,
    images_flag,
    int_at_least,
    layer_flag,
    methods_flag,
    model_flags,
    out_flag,
    positive_float,
    progress_flag,
    report_flag,
)

MODEL_DETAIL = "required; or a model file: .pt2, or the .json/.safetensors pair of logitshift attack"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "audit",
        help="decide whether a model carries an input-dependent logit shift (exit 0 clean, 1 shifted, 2 error)",
        description=(
            "Audit a classifier for a common-mode logit shift z + t(x)·1 from its gradients alone, with three tests: "
            "kappa (the common-mode gradient's size against the class gradients), bypass (common-mode gradient that goes "
            "around the classifier's input: zero for an honest model) and head (the classifier's common-mode row varying "
            "from image to image). "
            "--model is a model name (efficientnet-lite0, a torchvision name with --weights, package.module:factory) "
            "or a file: a torch.export program (.pt2), or the .json/.safetensors pair of logitshift attack "
            "(TorchScript is refused: loading it runs code from the file). "
            "Exit codes: 0 clean, 1 shifted, 2 error."
        ),
        epilog="examples:\n  logitshift audit --model shifted.pt2 --images chelsea coffee --out runs/audit --report\n"
        "  logitshift audit --model resnet50 --weights r50.pth --images photos/ --max-images 8\n"
        "MODEL_OR_FILE given first without --model is an old spelling of --model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_arg", nargs="?", default=None, metavar="MODEL_OR_FILE", help=argparse.SUPPRESS)
    model_flags(p, MODEL_DETAIL, layer=False, device=False, default=None)
    images_flag(p)
    p.add_argument(
        "--max-images",
        type=int_at_least(1),
        default=DEFAULT_MAX_IMAGES,
        help=f"use at most this many of them, evenly spread (default {DEFAULT_MAX_IMAGES})",
    )
    layer_flag(
        p,
        "repeatable, or several after one --layer: the layers audited; default: up to --max-layers spatial layers",
        nargs="+",
        action="extend",
        dest="layers",
    )
    alias(p, "--layers", "layers", "--layer", nargs="+", action="extend")
    p.add_argument(
        "--max-layers",
        type=int_at_least(0),
        default=DEFAULT_MAX_LAYERS,
        help=f"spatial layers audited, evenly spaced (default {DEFAULT_MAX_LAYERS})",
    )
    p.add_argument(
        "--probes",
        type=int_at_least(1),
        default=DEFAULT_PROBES,
        help=f"random probes for the class-gradient spread (default {DEFAULT_PROBES})",
    )
    p.add_argument(
        "--threshold",
        type=positive_float,
        default=THRESHOLD,
        help=f"κ above which the kappa test fires (default {THRESHOLD:g}); also scales κ_bypass and κ_head",
    )
    class_flags(p, DEFAULT_TOP_K, f"default {DEFAULT_TOP_K}: users explain more than the prediction; the top-1 is always measured")
    methods_flag(
        p,
        None,
        f"all of {' '.join(AUDITED_NAMES)}; only these methods' maps count for the effect: the ones you explain with",
    )
    p.add_argument("--size", type=int_at_least(8), default=None, help="input size for a model file (default 224)")
    out_flag(p, "a folder for audit.json and audit.png; default: nothing written")
    force_flag(p)
    report_flag(p)
    progress_flag(p)
    p.add_argument(
        "--memory-limit",
        type=positive_float,
        default=DEFAULT_MEMORY_GB,
        help=f"a model or weights file is audited in a child process with this many GB of memory beyond the interpreter's own (default {DEFAULT_MEMORY_GB:g})",
    )
    p.add_argument(
        "--cpu-limit",
        type=int_at_least(1),
        default=DEFAULT_CPU_SECONDS,
        help=f"... and this many seconds of CPU time (default {DEFAULT_CPU_SECONDS})",
    )
    device_flag(p)
    p.set_defaults(func=run)
    return p


def model_of(args: argparse.Namespace) -> str:
    """``--model``, or the old positional MODEL_OR_FILE (one of them, not two different ones)."""
    if args.model and args.model_arg and args.model != args.model_arg:
        raise LogitShiftError(f"--model {args.model!r} and MODEL_OR_FILE {args.model_arg!r}: give the model once")
    model = args.model or args.model_arg
    if not model:
        raise LogitShiftError("--model: required (a model name or a model file to audit)")
    return model


def run(args: argparse.Namespace) -> int:
    from ..audit.load import is_model_file
    from ..audit.verdict import check_methods
    from ..report import write_report
    from ..runs.audit import AuditConfig, run_audit

    model = model_of(args)
    if args.report and not args.out:
        raise LogitShiftError("--report: needs --out, the folder the page is written into")
    check_methods(args.methods)  # before any model is loaded
    if (is_model_file(model) or args.weights) and not sandbox.inside():
        # someone else's file: everything from here on runs in a child with memory, CPU and file-size limits
        what = f"model file {model!r}" if is_model_file(model) else f"weights file {args.weights!r}"
        return sandbox.run(args.argv, what, int(args.memory_limit * 2**30), args.cpu_limit)
    sandbox.enter()
    cfg = AuditConfig(
        model=model,
        weights=args.weights,
        random_weights=args.random_weights,
        num_classes=args.num_classes,
        class_names=args.class_names,
        images=list(args.images or []),
        max_images=args.max_images,
        layers=args.layers,
        max_layers=args.max_layers,
        probes=args.probes,
        threshold=args.threshold,
        size=args.size,
        out=args.out,
        force=args.force,
        progress=not args.no_progress,
        device=args.device,
        methods=args.methods,
        classes=list(args.classes),
        top_k=args.top_k,
        labels=args.labels,
    )
    audited = run_audit(cfg)
    print_result(audited.result)
    if audited.out is not None:
        print(f"audit.json and audit.png in {audited.out}")
        if args.report:
            print(f"report: {write_report(audited.out)}")
    return 1 if audited.result.shifted else 0


def print_result(result: AuditResult) -> None:
    """The finding first (one sentence with the numbers), what it covers, the maps users explain first, the next
    step; then, under "details", what was left out and why, and the evidence."""
    import numpy as np

    from ..audit.effect import NEVER

    print(result.sentence())
    print(f"this audit {result.coverage()}")
    print(f"first evidence: {result.first_evidence()}")
    print(result.next_step())
    if result.groups:
        print("outputs: " + "; ".join(f"{g['output']}: {g['finding']} (score {g['score']:.3g})" for g in result.groups))
    print("details:")
    context = result.context
    if context is not None and context.never:
        print(
            f"{len(context.never)} of {context.outputs} outputs never reach probability {NEVER:g} on these images and are left out "
            "of the statistics (an output never predicted can carry any gradient without changing a probability)"
        )
    if result.head is not None:
        print(
            f"classifier input: the input of {result.head.layer} ({result.head.width} values), the last 2-D tensor that carries "
            "every centered gradient"
            + (
                f"; {', '.join(context.passed_over)} passed over: an N×C tensor is the logits or a function of them, never the cut"
                if context and context.passed_over
                else ""
            )
        )
    elif context is not None and context.passed_over:
        print(
            f"no classifier input found before the logits ({', '.join(context.passed_over)} take N×C tensors, never the cut): κ and the effect only"
        )
    bypass_col = result.head is not None
    print(
        f"{'layer':<28} {'shape':<16} {'κ max':>9} {'κ weighted':>10} {'‖∇mean z‖':>11} {'‖∇(z_c−mean z)‖':>16} {'effect':>7}"
        + (f" {'bypass':>9}" if bypass_col else "")
    )
    for e in result.evidence:
        effect = max((m.effect for m in e.methods), default=0.0)
        print(
            f"{e.layer[:28]:<28} {'×'.join(map(str, e.shape)):<16} {e.kappa_max:>9.3g} {max(e.kappa_weighted, default=0.0):>10.3g} "
            f"{float(np.mean(e.common_norm)):>11.3g} {float(np.mean(e.class_norm)):>16.3g} {effect:>7.3f}"
            + (f" {max(e.bypass):>9.2g}" if bypass_col else "")
        )
    for key, t in result.tests().items():
        extra = f" at {t['layer']}" if t.get("layer") else ""
        value = "n/a (one image)" if t["value"] is None else f"{t['value']:.3g}"
        role = "" if t.get("decides", True) else " (evidence only)"
        print(f"test {key:<7} {value:>16}  ratio {t['ratio']:.3g}{extra}  {'FIRED' if t['fired'] else 'ok'}{role}")
    if not bypass_col:
        print("tests bypass/head: not run (no classifier layer with one output per class was found; κ and the effect only)")
    print(
        f"verdict: {result.verdict} — {result.finding} (score {result.score:.3g}, κ max {result.kappa:.3g} against {result.threshold:g}, deciding evidence at {result.where})"
    )
    bypass = result.tests().get("bypass", {})
    if bypass.get("fired"):
        names = [e.layer for e in result.evidence]
        later = names[names.index(bypass["layer"]) + 1 :]
        print(
            f"the common mode goes around the classifier's input up to {bypass['layer']}: "
            f"a shift reads {bypass['layer']}, or a layer between it and {later[0] if later else 'the classifier'}"
        )
