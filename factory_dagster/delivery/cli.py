"""`factory outbox uncertain` and `factory outbox resolve`: a person settles the sends whose outcome is unknown.

Registered by factory_dagster/cli.py (`delivery.cli.register(commands)`). On the DuckDB file, opening the warehouse
means no send stage is running (DuckDB admits one writer, and the sender holds it while it sends), so a claim found
here is a dead run's: `uncertain` first settles such claims, then lists. On PostgreSQL other campaigns' runs may be
sending at this moment, and a claim may be theirs: the command leaves claims alone and says how many there are; a
dead run's claims are settled by its campaign's next send stage (`delivery/stage.py`).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from factory_dagster.delivery.states import RESOLUTIONS, OutboxError, recover_claims, resolve, uncertain_sends
from factory_dagster.settings import Paths


def register(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser("outbox", help="the sends whose outcome is unknown: list them, resolve one")
    actions = outbox.add_subparsers(dest="action", required=True)
    actions.add_parser("uncertain", help="sends that may or may not have been delivered (never re-sent by themselves)")
    settle = actions.add_parser("resolve", help="settle an uncertain send: sent, failed, or retry (queue it again)")
    settle.add_argument("send_id")
    settle.add_argument("--as", dest="outcome", required=True, choices=sorted(RESOLUTIONS), help="what became of it")
    settle.add_argument("--reason", required=True, help="why (recorded with the actor), e.g. what the server log shows")
    settle.add_argument("--actor", default=getpass.getuser(), help="who is acting (default: the OS user)")
    outbox.set_defaults(run=_outbox)


def _outbox(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.warehouse.store import open_warehouse

    actor = getattr(args, "actor", None) or getpass.getuser()
    with open_warehouse(paths) as con:
        if paths.warehouse_url is None:
            recovery = recover_claims(con, f"factory outbox ({actor})")
            if recovery.uncertain:
                print(f"{len(recovery.uncertain)} sends claimed by a run that ended mid-send are now uncertain")
        else:
            (claimed,) = con.execute("SELECT count(*) FROM raw.outbox WHERE state = 'claimed'").fetchall()[0]
            if claimed:
                print(
                    f"{claimed} sends are claimed by a send stage: a running one's, or a dead run's, which its campaign's "
                    "next send stage settles (left alone here: on PostgreSQL other campaigns' runs may be sending now)"
                )
        if args.action == "uncertain":
            return _list(uncertain_sends(con))
        try:
            state = resolve(con, args.send_id, args.outcome, actor, args.reason)
        except OutboxError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    follow = {"sent": "recorded as sent", "failed": "it will not be sent", "queued": "queued again: the next run sends it"}
    print(f"{args.send_id}: {state} ({follow[state]}) by {actor}: {args.reason}")
    return 0


def _list(rows: list[dict]) -> int:
    if not rows:
        print("no uncertain sends")
        return 0
    for r in rows:
        claimed = f"{r['claimed_at']:%Y-%m-%d %H:%M:%S}" if r["claimed_at"] else "-"
        print(
            f"{r['send_id']}  {r['to_email']}  from {r['mailbox'] or '-'} via {r['transport']}  claimed {claimed}"
            f"  {r['header_message_id']}  attempts {r['attempts']}  {r['last_error'] or ''}".rstrip()
        )
    print(f"{len(rows)} uncertain; settle each with: factory outbox resolve SEND_ID --as sent|failed|retry --reason ...")
    return 0
