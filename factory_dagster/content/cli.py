"""`factory content`: a person works the content line's approval queue (list, show, approve, edit, reject).

Registered by factory_dagster/cli.py (`content.cli.register(commands)`). Every decision records its actor
(`--actor`, default the OS user, like `factory review`). The content spec comes from `--spec`, else
`FACTORY_CONTENT_SPEC`, else the example in campaigns/; published days are looked up under
`<data folder>/content/published` (`published_folder`), so a decision on a published variant is refused.
`--seen SHA` (the hash prefix `show` prints) refuses a decision when the text changed since you looked.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from pathlib import Path

from factory_dagster.settings import PROJECT_ROOT, Paths

CONTENT_SPEC_ENV = "FACTORY_CONTENT_SPEC"
DEFAULT_CONTENT_SPEC = PROJECT_ROOT / "campaigns" / "content_brightwave.yaml"
SHA_SHOWN = 12


def published_folder(paths: Paths) -> Path:
    """Where the content line publishes its days (`<folder>/<day>/pieces.json`)."""
    return paths.home / "content" / "published"


def content_spec_path(value: str | None) -> Path:
    return Path(value or os.environ.get(CONTENT_SPEC_ENV) or DEFAULT_CONTENT_SPEC)


def register(commands: argparse._SubParsersAction) -> None:
    content = commands.add_parser(
        "content", help="the content line's approval queue: list, show, approve, edit or reject variants (factory content -h)"
    )
    content.add_argument("--spec", help=f"content spec (default: ${CONTENT_SPEC_ENV}, else {DEFAULT_CONTENT_SPEC.name})")
    actions = content.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="variants waiting for a person: flagged by the gate or failed by the audit")
    listing.add_argument("--day", type=date.fromisoformat, help="only this day's variants")
    listing.add_argument("--all", action="store_true", help="every variant with its state, not only the queue")
    show = actions.add_parser("show", help="one variant's text, verdicts, changes from the model's text and history")
    show.add_argument("variant", metavar="VARIANT")
    approve = actions.add_parser("approve", help="approve the text as it stands (a flagged one is re-checked)")
    edit = actions.add_parser("edit", help="replace the text (the content gate must pass on it); this approves it")
    edit.add_argument("--text", required=True, help="the new text ('-': standard input)")
    reject = actions.add_parser("reject", help="keep a variant from being published, for good")
    for command in (approve, edit, reject):
        command.add_argument("variant", metavar="VARIANT")
        command.add_argument("--actor", default=getpass.getuser(), help="who decides (default: the OS user)")
        command.add_argument("--seen", help="the text hash `show` printed: refuse if the text changed since")
    approve.add_argument("--reason", default="", help="why (required to approve over a judgement code of the gate)")
    edit.add_argument("--reason", default="", help="why (recorded with the edit; the loop learns from edits)")
    reject.add_argument("--reason", required=True, help="why (required)")
    content.set_defaults(run=_content)


def _content(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.campaign.spec import SpecError
    from factory_dagster.content.review import ContentReviewError
    from factory_dagster.content.spec import load_content_spec
    from factory_dagster.warehouse.store import open_warehouse

    try:
        spec = load_content_spec(content_spec_path(args.spec))
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    handlers = {"list": _list, "show": _show, "approve": _approve, "edit": _edit, "reject": _reject}
    try:
        with open_warehouse(paths) as con:
            return handlers[args.action](con, spec, args, paths)
    except ContentReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _one_line(text: str, width: int = 100) -> str:
    line = " / ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= width else line[: width - 1] + "…"


def _list(con, spec, args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.content.review import queue, variants

    items = variants(con, spec.content_id, args.day) if args.all else queue(con, spec.content_id, args.day)
    for item in items:
        print(f"{item.variant_id}  {item.day}  {item.channel}  {item.segment}  {item.topic}  [{item.status}]")
        if why := item.why_flagged():
            print(f"    {why}")
        print(f"    {_one_line(item.text)}")
    scope = f" of {args.day}" if args.day else ""
    what = "variants" if args.all else "variants waiting for a person"
    print(f"{len(items)} {what}{scope}")
    return 0


def _show(con, spec, args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.content.review import find_variant, history, is_published, when
    from factory_dagster.review.analysis import text_diff

    item = find_variant(con, spec.content_id, args.variant)
    published = " (published)" if is_published(item, published_folder(paths)) else ""
    print(f"variant {item.variant_id} of piece {item.piece_id}: {item.status}{published}")
    for name, value in [
        ("day", str(item.day)),
        ("channel", item.channel),
        ("segment", item.segment),
        ("topic", item.topic),
        ("claims", ", ".join(item.claim_ids) or "-"),
        ("gate", item.gate_verdict + (f" ({', '.join(item.violation_codes)})" if item.violation_codes else "")),
        ("audit", (item.audit_verdict or "not audited") + (f": {item.audit_reasons}" if item.audit_reasons else "")),
        ("model", item.model),
        ("text sha", item.sha256[:SHA_SHOWN]),
    ]:
        print(f"  {name + ':':<10}{value}")
    print()
    print(item.text)
    if item.text != item.model_text:
        print()
        print("changes from the model's text:")
        print(text_diff(item.model_text, item.text))
    actions = history(con, item.variant_id)
    print()
    print("history:" if actions else "history: no decision yet")
    for a in actions:
        extra = f" (distance {a['edit_distance']:.3f})" if a["action"] == "edit" else ""
        reason = f": {a['reason']}" if a["reason"] else ""
        print(f"  #{a['seq']} {when(a['reviewed_at'])}  {a['action']} by {a['actor']}{reason}{extra}")
    return 0


def _approve(con, spec, args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.content.review import approve

    decision = approve(
        con, spec, args.variant, args.actor, args.reason, seen_sha256=args.seen, published_dir=published_folder(paths)
    )
    if decision.already:
        print(f"{decision.variant_id} is already approved as it stands: nothing recorded")
    else:
        print(f"approved {decision.variant_id} by {decision.actor}" + (f": {decision.reason}" if decision.reason else ""))
    return 0


def _edit(con, spec, args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.content.review import edit

    text = sys.stdin.read() if args.text == "-" else args.text
    decision = edit(
        con, spec, args.variant, text, args.actor, args.reason, seen_sha256=args.seen, published_dir=published_folder(paths)
    )
    print(f"edited and approved {decision.variant_id} by {decision.actor}: word edit distance {decision.edit_distance:.3f}")
    print(decision.diff)
    return 0


def _reject(con, spec, args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.content.review import reject

    decision = reject(
        con, spec, args.variant, args.actor, args.reason, seen_sha256=args.seen, published_dir=published_folder(paths)
    )
    print(f"rejected {decision.variant_id} by {decision.actor}: {decision.reason}")
    return 0
