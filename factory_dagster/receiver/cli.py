"""`factory serve-feedback`: run the feedback receiver on the data folder's inboxes."""

from __future__ import annotations

import argparse
import logging
import sys

from factory_dagster.settings import Paths


def _serve_feedback(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.receiver.app import build_app
    from factory_dagster.receiver.config import ReceiverConfig, ReceiverConfigError
    from factory_dagster.receiver.server import serve

    try:
        config = ReceiverConfig.from_env()
    except ReceiverConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    on = [name for name, ok in config.configured().items() if ok]
    off = [name for name, ok in config.configured().items() if not ok]
    print(f"feedback receiver on http://{args.host}:{args.port}, storing in {paths.home / 'inbox'}")
    print(f"accepting: {', '.join(on) or 'nothing yet'}; not configured (503): {', '.join(off) or 'none'}")
    serve(build_app(paths, config), args.host, args.port)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `serve-feedback` to the `factory` command."""
    command = commands.add_parser(
        "serve-feedback",
        help="receive one-click unsubscribes, ESP event webhooks and inbound replies into the inbox folders",
    )
    command.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; put TLS in front)")
    command.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    command.set_defaults(run=_serve_feedback)
