"""`factory review`: a person looks at the messages before they go, and approves, edits, holds or releases them.

Registered by factory_dagster/cli.py (`review.cli.register(commands)`). Every action records its actor
(`--actor`, default the OS user). An edit takes `--subject` and/or `--body-file` (`-` reads stdin); with
neither, `$VISUAL` or `$EDITOR` opens the message as "Subject: ..." + a blank line + the body.
Review is optional by default; FACTORY_REVIEW_REQUIRED=1 makes the send stage wait for approvals.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from factory_dagster.settings import Paths

FIRST_LINE_CHARS = 100


class UsageError(ValueError):
    """Bad command-line input (exit code 2), as opposed to a refused action (exit code 1)."""


def register(commands: argparse._SubParsersAction) -> None:
    review = commands.add_parser(
        "review", help="before messages go: list them, show one, approve, edit, hold or release (factory review -h)"
    )
    actions = review.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the accepted messages not sent yet, oldest first, with what stands in their way")
    listing.add_argument(
        "--day", type=date.fromisoformat, help="only those the send stage of this day would take (accepted that day or before)"
    )
    show = actions.add_parser("show", help="one message's whole text, status, changes from the model's text and history")
    show.add_argument("message", metavar="ID", help="message id (msg_...) or send id (snd_...)")
    approve = actions.add_parser("approve", help="approve the text that would go (needed when FACTORY_REVIEW_REQUIRED is on)")
    approve.add_argument("message", metavar="ID", nargs="?", help="message id or send id")
    approve.add_argument("--all", action="store_true", help="every open message that is not held and not approved yet")
    approve.add_argument("--day", type=date.fromisoformat, help="with --all: only messages accepted on this day or before")
    approve.add_argument("--reason", default="", help="why (recorded with the approval)")
    edit = actions.add_parser("edit", help="change the subject and/or body; the gate's rules must pass on the new text")
    edit.add_argument("message", metavar="ID", help="message id or send id")
    edit.add_argument("--subject", help="the new subject")
    edit.add_argument("--body-file", type=Path, help="file with the new body, UTF-8 ('-': standard input)")
    edit.add_argument("--reason", default="", help="why (recorded with the edit; the loop learns from edits)")
    edit.add_argument("--approve", action="store_true", help="also approve the edited text")
    hold = actions.add_parser("hold", help="keep a message from going until it is released")
    hold.add_argument("message", metavar="ID", help="message id or send id")
    hold.add_argument("--reason", required=True, help="why (required; shown to whoever releases it)")
    release = actions.add_parser("release", help="let a held message go with the next send")
    release.add_argument("message", metavar="ID", help="message id or send id")
    release.add_argument("--reason", required=True, help="why it may go now (required)")
    for command in (approve, edit, hold, release):
        command.add_argument("--actor", default=getpass.getuser(), help="who is acting (default: the OS user)")
    review.set_defaults(run=_review)


def _review(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.campaign.spec import load_spec
    from factory_dagster.review.actions import ReviewError
    from factory_dagster.warehouse.store import open_warehouse

    spec = load_spec(paths.spec)
    handlers = {"list": _list, "show": _show, "approve": _approve, "edit": _edit, "hold": _hold, "release": _release}
    try:
        with open_warehouse(paths) as con:
            return handlers[args.action](con, spec, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _first_line(item, spec) -> str:
    from factory_dagster.review.analysis import split_sections

    hook = split_sections(item.subject, item.body, spec)["hook"] or item.body.strip().split("\n")[0]
    return hook if len(hook) <= FIRST_LINE_CHARS else hook[: FIRST_LINE_CHARS - 1] + "…"


def _list(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import unsent_messages
    from factory_dagster.review.sendable import review_required

    items = unsent_messages(con, spec.campaign_id, args.day)
    for item in items:
        print(
            f"{item.message_id}  {item.partition_day}  {item.to_email}  {item.segment}  {item.prompt_version}  {item.model}"
            f"  [{item.status}]"
        )
        print(f"    Subject: {item.subject}")
        print(f"    {_first_line(item, spec)}")
    held = sum(i.held for i in items)
    approved = sum(i.approved for i in items)
    edited = sum(i.edited for i in items)
    scope = f" accepted by {args.day}" if args.day else ""
    print(f"{len(items)} messages{scope} not sent yet: {held} held, {approved} approved, {edited} edited")
    try:
        required = review_required(os.environ)
    except ValueError as exc:
        required, note = False, f" ({exc})"
    else:
        note = ""
    if required:
        print("review is required (FACTORY_REVIEW_REQUIRED): only approved messages go; factory review approve ID|--all")
    else:
        print(f"review is optional: every message that is not held goes with the next send{note}")
    return 0


def _show(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import find_message, history, when
    from factory_dagster.review.analysis import unified_diff

    item = find_message(con, spec.campaign_id, args.message)
    print(f"message {item.message_id} (send {item.send_id})")
    fields = [
        ("status", item.status),
        ("day", str(item.partition_day)),
        ("recipient", item.to_email),
        ("segment", item.segment),
        ("angle", item.angle),
        ("prompt", f"{item.prompt_version} / {item.model} (draft {item.draft_id})"),
    ]
    for name, value in fields:
        print(f"  {name + ':':<11}{value}")
    print()
    print(f"Subject: {item.subject}")
    print()
    print(item.body)
    if item.edited:
        print()
        print("changes from the model's text:")
        print(unified_diff(item.model_subject, item.model_body, item.subject, item.body))
    actions = history(con, item.message_id)
    print()
    print("history:" if actions else "history: not reviewed yet")
    for a in actions:
        extra = ""
        if a["action"] == "edit":
            extra = f" (distance {a['edit_distance']:.3f}; changed {', '.join(a['sections_changed']) or 'nothing visible'})"
        print(
            f"  #{a['seq']} {when(a['reviewed_at'])}  {a['action']} by {a['actor']}{': ' + a['reason'] if a['reason'] else ''}{extra}"
        )
    return 0


def _approve(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import approve, approve_all

    if args.all == bool(args.message):
        raise UsageError("approve takes a message ID or --all (not both)")
    if args.day and not args.all:
        raise UsageError("--day goes with --all")
    if args.all:
        approved = approve_all(con, spec.campaign_id, args.actor, args.reason, args.day)
        print(f"approved {len(approved)} messages by {args.actor}" + (f": {args.reason}" if args.reason else ""))
        return 0
    record = approve(con, spec.campaign_id, args.message, args.actor, args.reason)
    if record.already:
        print(f"{record.message_id} is already approved as it stands: nothing recorded")
    else:
        print(f"approved {record.message_id} by {record.actor}" + (f": {record.reason}" if record.reason else ""))
    return 0


def _edit(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import edit, find_message

    subject, body = args.subject, None
    if args.body_file is not None:
        body = _read_body(args.body_file)
    if subject is None and body is None:
        item = find_message(con, spec.campaign_id, args.message)
        subject, body = _in_editor(item.subject, item.body)
    record = edit(con, spec, args.message, args.actor, args.reason, subject=subject, body=body, and_approve=args.approve)
    a = record.analysis
    print(
        f"edited {record.review.message_id} ({record.edit_id}) by {args.actor}: word edit distance {a.edit_distance:.3f}, "
        f"body {a.words_before} -> {a.words_after} words, changed {', '.join(a.sections_changed)}"
    )
    print(a.diff)
    then = "approved; it goes" if record.approval else "it goes"
    print(f"the edited text passed the gate's rules; {then} with the next send (unless held)")
    return 0


def _hold(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import hold

    record = hold(con, spec.campaign_id, args.message, args.actor, args.reason)
    print(f"held {record.message_id} by {record.actor}: {record.reason}; it goes only after factory review release")
    return 0


def _release(con, spec, args: argparse.Namespace) -> int:
    from factory_dagster.review.actions import release

    record = release(con, spec.campaign_id, args.message, args.actor, args.reason)
    print(f"released {record.message_id} by {record.actor}: {record.reason}; it goes with the next send")
    return 0


def _read_body(path: Path) -> str:
    """The new body from a file ('-': stdin), UTF-8; UsageError naming the file when it cannot be read."""
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--body-file {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--body-file {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"--body-file {path}: {exc.strerror}") from None


def parse_edited(text: str) -> tuple[str, str]:
    """(subject, body) of "Subject: ...", a blank line, then the body, as the editor left it."""
    first, _, rest = text.replace("\r\n", "\n").partition("\n")
    if not first.lower().startswith("subject:"):
        raise UsageError("the edited text must start with a 'Subject: ...' line, then a blank line and the body")
    return first.split(":", 1)[1].strip(), rest.strip("\n")


def _in_editor(subject: str, body: str) -> tuple[str, str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise UsageError("give --subject and/or --body-file, or set $EDITOR to edit the message interactively")
    with tempfile.TemporaryDirectory(prefix="factory-review-") as folder:
        path = Path(folder) / "message.txt"
        path.write_text(f"Subject: {subject}\n\n{body}\n", encoding="utf-8")
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
        if result.returncode != 0:
            raise UsageError(f"the editor ({editor}) exited with {result.returncode}: nothing stored")
        try:
            return parse_edited(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError("the edited text is not UTF-8: nothing stored") from None
