"""Messages that pass the gate's rules, in a real warehouse, for the review tests.

helpers_db's message body leaves out the postal address (the send tests never check rules); a
review edit is checked against every rule, so these bodies are shaped like the offline drafts.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from helpers_db import DAY, SPEC, Lead, add_message

from factory_dagster.review import cli as review_cli
from factory_dagster.settings import Paths

HOOK = "likely still takes over the first week of every month."


def valid_body(lead: Lead, angle: str = "close_speed", hook: str = HOOK) -> str:
    claims = " ".join(SPEC.angle(angle).claims)
    return (
        f"Hi {lead.first_name},\n\nClosing the books at {lead.company} {hook} {claims}\n\n"
        f"{SPEC.required.call_to_action}\n\nBest,\n{SPEC.sender.name}\n{SPEC.sender.company}\n\n"
        f"{SPEC.required.unsubscribe_footer}\n{SPEC.sender.postal_address}"
    )


def valid_subject(lead: Lead) -> str:
    return f"{lead.company}: a shorter month-end close"


def add_valid_message(
    con: duckdb.DuckDBPyConnection,
    lead: Lead,
    day: date = DAY,
    angle: str = "close_speed",
    prompt_version: str = "draft-v1",
    hook: str = HOOK,
) -> dict[str, Any]:
    """An accepted message (and the lead's assignment) whose text passes check_draft for the lead."""
    message = add_message(con, lead, day, angle=angle, prompt_version=prompt_version)
    subject, body = valid_subject(lead), valid_body(lead, angle, hook)
    con.execute("UPDATE raw.messages SET subject = ?, body = ? WHERE message_id = ?", [subject, body, message["message_id"]])
    return {**message, "subject": subject, "body": body}


def review(paths: Paths, *argv: str) -> int:
    """Run `factory review ...` through the parser register() builds, as the factory command would."""
    root = argparse.ArgumentParser(prog="factory")
    review_cli.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["review", *argv])
    return args.run(args, paths)


def paths_for(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path / "data")
