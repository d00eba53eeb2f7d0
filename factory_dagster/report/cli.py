"""`factory report [--campaign C] [--days N] [--out DIR]`: write the loop's report and print the page's path.

Registered by factory_dagster/cli.py (`report.cli.register(commands)`). Plotting libraries load
only when the command runs, so the rest of the CLI starts as fast as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory_dagster.settings import Paths

REPORTS_DIR = "reports"


def default_out_dir(paths: Paths) -> Path:
    """Where the report goes without --out: `reports/` in the data folder (beside the warehouse's default place)."""
    return paths.home / REPORTS_DIR


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {value}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write the loop in pictures: a static HTML page with PNG plots from the warehouse, and print its path"
    )
    report.add_argument("--campaign", help="only this campaign (default: every campaign in the warehouse)")
    report.add_argument(
        "--days", type=_positive_int, help="only the last N days up to the latest in the warehouse (default: all)"
    )
    report.add_argument("--out", type=Path, help="folder to write index.html and the PNGs into (default: <data folder>/reports)")
    report.set_defaults(run=run_report)


def run_report(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.report.data import ReportInputError
    from factory_dagster.report.write import write_report

    out_dir = args.out if args.out is not None else default_out_dir(paths)
    if not paths.warehouse_url and not paths.warehouse.exists():
        print(f"note: {paths.warehouse} does not exist yet; every plot says 'no data yet'", file=sys.stderr)
    try:
        result = write_report(paths.warehouse, out_dir, campaign=args.campaign, days=args.days, url=paths.warehouse_url)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.index)
    return 0
