"""`factory replies classify FILE --out OUT.csv` (see replies/check_file.py): the parser only,
so that every other `factory` command starts without loading the classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from factory_dagster.settings import Paths


def _classify(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.replies.check_file import run_classify

    return run_classify(args, paths)


def register(commands: argparse._SubParsersAction) -> None:
    """`factory replies classify FILE --out OUT.csv [--escalate-below X] [--budget-usd X]`."""
    replies = commands.add_parser("replies", help="classify replies (positive, question, not_now, negative, unsubscribe, …)")
    actions = replies.add_subparsers(dest="replies_action", required=True)
    classify = actions.add_parser(
        "classify", help="classify every row of a CSV with a 'text' column; writes OUT with the classes"
    )
    classify.add_argument("file", type=Path, help="CSV (UTF-8) with a 'text' column; 'subject' optional")
    classify.add_argument("--out", type=Path, required=True, help="where to write the classified rows (CSV)")
    classify.add_argument(
        "--escalate-below",
        type=float,
        default=None,
        help="ask the premium model when the cheap one is less confident than this (default 0.75)",
    )
    classify.add_argument(
        "--budget-usd", type=float, default=None, help="the day's model budget (default: the spec's daily budget)"
    )
    classify.set_defaults(run=_classify)
