"""`factory replies classify FILE --out OUT.csv`: check the classifier on a team's own past replies.

FILE is a CSV (UTF-8) with a `text` column and optionally `subject`, `reply_id`, `headers`,
`sender` and `lead_id`. Every row comes back in OUT with its class, confidence, model, decided_by,
rule and reason, or a `quarantine_reason` (an empty row is quarantined, never dropped); the input's
own columns are kept (one whose name the output uses is renamed `input_<name>`). The calls go
through the line's gateway: the spec's routing, the day's budget, the response cache, and the
ledger rows land in the warehouse's `raw.llm_calls` like every stage's.

A file that cannot be used (no `text` column, bad bytes, a row with the wrong number of fields)
stops the command with the file, and the row and column where there is one; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from factory_dagster.campaign.spec import load_spec
from factory_dagster.feedback.events import decode_utf8, parse_csv
from factory_dagster.models.budget import Budget
from factory_dagster.models.cache import CachedAnswer, lookup
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.ledger import spent_today, write_ledger
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.replies.classify import OUTPUT_COLUMNS, ClassifySettings, classify_replies
from factory_dagster.run_context import RunContext
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse, warehouse_name

SOURCE_ROW = "source_row"


class ReplyFileError(ValueError):
    """A replies file that cannot be read; the message names the file (and the row and column)."""


def _check_header(path: Path, header: list[str]) -> None:
    if not any(header):
        raise ReplyFileError(f"{path}: empty file, expected a header row with a 'text' column")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ReplyFileError(f"{path}: duplicate column(s) {', '.join(duplicated)}")
    if "text" not in header:
        raise ReplyFileError(f"{path}: no 'text' column; the columns found are: {', '.join(header)}")


def read_replies_file(path: Path | str) -> pd.DataFrame:
    """Every record of the CSV as strings, plus `source_row` (the line it starts on; the header is line 1)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplyFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    header, rows, lines = parse_csv(path, decode_utf8(path, data, ReplyFileError), _check_header, ReplyFileError)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame[SOURCE_ROW] = pd.Series(lines, dtype="int64")
    return frame


def _with_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a reply_id for every row: the file's own, else `row-<line>`."""
    given = frame["reply_id"].fillna("").astype(str).str.strip() if "reply_id" in frame else pd.Series("", index=frame.index)
    generated = "row-" + frame[SOURCE_ROW].astype(str)
    return frame.assign(reply_id=given.where(given != "", generated))


def classify_file(
    path: Path | str, out: Path | str, paths: Paths, settings: ClassifySettings | None = None, budget_usd: float | None = None
):
    """Classify FILE into OUT through the line's gateway; the ledger goes to the warehouse. Returns (output frame, ledger)."""
    replies = _with_ids(read_replies_file(path))
    spec, registry = load_spec(paths.spec), load_registry()
    settings = settings or ClassifySettings(own_texts=(spec.required.unsubscribe_footer,))
    run = RunContext(f"replies-cli-{uuid.uuid4().hex[:12]}", datetime.now(UTC).date(), spec.campaign_id)

    def cached(keys: list[str]) -> dict[str, CachedAnswer]:
        with open_warehouse(paths) as con:
            return lookup(con, keys)

    gateway = ModelGateway(registry, resolve_routes(spec, registry, os.environ), run, cache_loader=cached)
    with open_warehouse(paths) as con:
        gateway.budget = Budget(spec.limits.daily_budget_usd if budget_usd is None else budget_usd, spent_today(con, run))
    classified = classify_replies(gateway, run, replies, settings)
    with open_warehouse(paths) as con:
        write_ledger(con, gateway)
    result = classified[list(OUTPUT_COLUMNS)].assign(llm_call_ids=classified.llm_call_ids.map(";".join))
    own = replies.rename(columns={c: f"input_{c}" for c in replies.columns if c in OUTPUT_COLUMNS and c != "reply_id"})
    output = pd.concat([own.reset_index(drop=True), result.drop(columns="reply_id").reset_index(drop=True)], axis=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    output.to_csv(partial, index=False, encoding="utf-8")
    partial.replace(out)
    return output, gateway.ledger()


def run_classify(args: argparse.Namespace, paths: Paths) -> int:
    try:
        settings = None
        if args.escalate_below is not None:
            spec = load_spec(paths.spec)
            settings = ClassifySettings(escalate_below=args.escalate_below, own_texts=(spec.required.unsubscribe_footer,))
        output, ledger = classify_file(args.file, args.out, paths, settings, args.budget_usd)
    except (ReplyFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decided = output.decided_by.value_counts()
    quarantined = int(output["class"].isna().sum())
    cost = float(ledger.cost_usd.sum()) if not ledger.empty else 0.0
    print(
        f"classified {len(output) - quarantined} of {len(output)} replies "
        f"(rules {decided.get('rule', 0)}, cheap model {decided.get('cheap', 0)}, premium model {decided.get('premium', 0)}); "
        f"{quarantined} quarantined (see quarantine_reason)"
    )
    print(f"{len(ledger)} model calls, ${cost:.6f}, in raw.llm_calls of {warehouse_name(paths)}")
    print(f"written: {args.out}")
    return 0
