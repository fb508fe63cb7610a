"""``logitshift check``: does an explainer survive a logit shift? (thin adapter over :mod:`logitshift.conformance`).

Exit codes: 0 every cell measured is immune, 1 any is fooled or moved, 2 an error.
"""

from __future__ import annotations

import sys

from .errors import LogitShiftError

MAP_KINDS = ("gradient", "cam", "perturbation", "propagation")


def add_command(subparsers) -> None:
    """Register ``logitshift check``."""
    import argparse

    from .cli import int_at_least, positive_float

    p = subparsers.add_parser(
        "check",
        help="does an explainer, a target or a metric survive z + t(x)·1? (exit 0 immune, 1 fooled/moved, 2 error)",
        description=(
            "Run explainers on a model and on shifted twins built to steer their kind (gradient, cam, perturbation, "
            "propagation, metric), and give a verdict per cell: immune, fooled (steered into the target) or moved. "
            "EXPLAINER: a logitshift method (gradcam, gradcam@centered), LIBRARY/METHOD[@TARGET] of an adapter "
            "(pytorch-grad-cam/GradCAM@ClassifierOutputReST, captum/Occlusion, zennit/EpsilonPlus, quantus/PixelFlipping, "
            "deletion-insertion/deletion AUC@prob), or package.module:function with function(model, x, classes) -> maps. "
            "Exit codes: 0 all immune, 1 any fooled or moved, 2 error."
        ),
        epilog="examples:\n  logitshift check pytorch-grad-cam/GradCAM\n  logitshift check --library captum --images chelsea\n  logitshift check mypkg.explain:my_cam --kinds cam gradient",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("explainers", nargs="*", metavar="EXPLAINER")
    p.add_argument("--library", nargs="+", default=[], help="check every explainer of these adapters ('all' for every one)")
    p.add_argument(
        "--model", default="efficientnet-lite0", help="efficientnet-lite0 (default), a torchvision name, or package.module:factory"
    )
    p.add_argument("--weights", default=None, help="local weights file for --model")
    p.add_argument("--random-weights", action="store_true", help="a torchvision --model with random weights (say so when you report it)")
    p.add_argument("--layer", default=None, help="CAM layer (default: the model's last feature map)")
    p.add_argument("--images", nargs="+", default=["chelsea"], help="image files or sample names (default: chelsea)")
    p.add_argument("--target", default="top-left", help="where the twins steer: x0,y0,x1,y1, a corner name or a mask PNG")
    p.add_argument(
        "--kinds",
        nargs="+",
        default=None,
        choices=("gradient", "cam", "perturbation", "propagation", "metric"),
        help="twins to use (default: the explainer's kind; all map kinds for a user function)",
    )
    p.add_argument("--samples", type=int_at_least(1), default=8, help="samples / steps of sampling methods (default 8)")
    p.add_argument("--strength", type=positive_float, default=None, help="one strength for every twin term (default: calibrated per kind)")
    p.add_argument("--tolerance", type=positive_float, default=1e-5, help="largest max |Δp| a twin may have (default 1e-5)")
    p.add_argument("--out", default=None, help="also write check.json and check.md into this folder")
    p.add_argument("--force", action="store_true", help="overwrite a previous check in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    from .conformance import adapter_explainers, check, context, exit_code, finding
    from .conformance.adapters.builtin import builtin_explainer
    from .conformance.explainer import ADAPTERS, user_explainer
    from .conformance.table import rows
    from .files import provenance, run_dir, write_json
    from .images import batch, load_image
    from .models import load_model, torchvision_model

    if not args.explainers and not args.library:
        raise LogitShiftError("name at least one EXPLAINER or --library (see logitshift check --help)")
    out = run_dir(args.out, args.force, marker="check.json") if args.out else None
    loaded = torchvision_model(args.model, args.weights, random_init=True) if args.random_weights else load_model(args.model, args.weights)
    if args.layer:
        loaded.layer = args.layer
    x = batch([load_image(s, loaded.preprocess) for s in args.images])
    ctx, memo = context(loaded, x, args.target, samples=args.samples)

    from .conformance import adapters  # noqa: F401  (fills ADAPTERS)

    libraries = list(ADAPTERS) if "all" in args.library else list(args.library)
    explainers, missing = adapter_explainers(libraries, ctx) if libraries else ([], [])
    user = []
    for spec in args.explainers:
        if ":" in spec and "/" not in spec:
            user.append(user_explainer(spec))
        elif "/" in spec:
            lib, _, rest = spec.partition("/")
            method, _, target = rest.partition("@")
            found, _ = adapter_explainers([lib], ctx)
            chosen = [e for e in found if e.method == method and (not target or e.target == target)]
            if not chosen:
                known = sorted({e.method for e in found})
                raise LogitShiftError(f"explainer {spec!r}: no such method/target in {lib}; methods: {', '.join(known)}")
            explainers += chosen
        else:
            explainers.append(builtin_explainer(spec, ctx))
    cells = (
        check(
            loaded,
            x,
            explainers,
            ctx.target,
            memo=memo,
            kinds=args.kinds,
            tolerance=args.tolerance,
            strength=args.strength,
            progress=not args.no_progress,
        )
        if explainers
        else []
    )
    for e in user:
        cells += check(
            loaded,
            x,
            [e],
            ctx.target,
            memo=memo,
            kinds=args.kinds or list(MAP_KINDS),
            tolerance=args.tolerance,
            strength=args.strength,
            progress=not args.no_progress,
        )
    cells += missing
    code = exit_code(cells)
    print(finding(cells))
    print("\n".join(rows(cells)))
    if out is not None:
        record = {
            "command_line": "logitshift check " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "logitshift check",
            "model": loaded.name,
            "random_weights": bool(args.random_weights),
            "images": list(args.images),
            "target": args.target,
            "finding": finding(cells),
            "cells": [c.as_dict() for c in cells],
            **provenance(),
        }
        write_json(out / "check.json", record)
        from .conformance.table import markdown
        from .files import atomic_write

        atomic_write(out / "check.md", markdown(f"logitshift check — {loaded.name}", cells))
        print(f"check.json, check.md in {out}")
    sys.stdout.flush()
    return code


__all__ = ["add_command", "cmd_check"]
