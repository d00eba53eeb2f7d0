"""`factory fetch-replies`: copy new replies from the configured IMAP mailbox into the replies inbox.

Run it from cron (or before `factory demo`/a daily run); the observe stage imports what it stored.
Exit codes: 0 fetched (possibly nothing new), 1 the mailbox could not be read, 2 the settings are wrong.
"""

from __future__ import annotations

import argparse
import sys

from factory_dagster.cli_types import positive_int
from factory_dagster.settings import Paths


def _fetch_replies(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.delivery.config import ConfigError
    from factory_dagster.feedback.imap_fetch import ImapFetchError, ImapSettings, fetch_replies

    try:
        settings = ImapSettings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = fetch_replies(settings, paths.replies_inbox, batch_size=args.batch_size)
    except ImapFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    if report.written:
        print(f"stored in {paths.replies_inbox}; the next run's observe stage imports and threads them")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `fetch-replies` to the `factory` command."""
    command = commands.add_parser(
        "fetch-replies",
        help="copy new replies from the IMAP mailbox in FACTORY_IMAP_* into the replies inbox (read-only, once each)",
    )
    command.add_argument(
        "--batch-size", type=positive_int, default=100, help="messages fetched per round trip; progress is saved after each"
    )
    command.set_defaults(run=_fetch_replies)
