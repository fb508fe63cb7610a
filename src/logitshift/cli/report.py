"""``logitshift report``: flags → :class:`~logitshift.report.ReportConfig` → :func:`~logitshift.report.run_report`."""

from __future__ import annotations

import argparse

from ..core.names import DEFAULT_MAX_MB
from .flags import force_flag, out_flag, positive_float


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML page from a run folder",
        description="Write a self-contained HTML report (figures embedded, no network access) of a run folder "
        "written by logitshift demo, matrix, audit or evaluate. An incomplete folder gives a page with a note of what is missing.",
        epilog="example:\n  logitshift demo --out runs/demo && logitshift report runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a logitshift command")
    out_flag(p, "an HTML file; default RUN_DIR/report.html")
    p.add_argument(
        "--max-mb",
        type=positive_float,
        default=DEFAULT_MAX_MB,
        help=f"size budget of the embedded figures in MB (default {DEFAULT_MAX_MB:g})",
    )
    force_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import ReportConfig, run_report

    print(run_report(ReportConfig(args.run_dir, args.out, args.max_mb, args.force)).line())
    return 0
