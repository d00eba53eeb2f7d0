"""The crash-safe outbox: every send's state in `raw.outbox`, every move in `raw.outbox_transitions`.

A send moves queued -> claimed -> sent | failed | uncertain:

- **queued**: chosen to go; its Message-ID is fixed here, before any transport sees it.
- **claimed**: committed (its own short transaction) *before* the transport is called, with the
  mailbox and the exact message handed over.
- **sent**: committed after the server accepted it, in the same transaction as its `raw.sends` row.
- **failed**: refused for good (a bounce: a `raw.sends` row with status `bounced` and a `bounced`
  event), suppressed before it left, or given up by a person.
- **uncertain**: the outcome is unknown (the run died while the send was claimed, or the
  connection broke after the data went out). Never sent again by itself: a person resolves it
  (`factory outbox resolve`), as sent, failed, or retry (back to queued).

Why a claimed send found later is the crash's: DuckDB admits one writing process, and the sender
keeps the warehouse open from a claim until its outcome is committed. So whoever opens the
warehouse sees only claims whose process is gone (`recover_claims`). For a transport that can
tell whether it already delivered a send (the file transport: the file exists or it does not),
such a claim simply goes back to the queue; for SMTP it becomes uncertain.

This module imports DuckDB, the standard library, its own package and review/sendable.py's SQL only (no
pandas, spec or Dagster): a sending process starts fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import duckdb

from factory_dagster.delivery.eml import message_id_for
from factory_dagster.delivery.mailboxes import MailboxUsage
from factory_dagster.review.sendable import effective_messages, sha256_hex_sql
from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.dialect import is_postgres
from factory_dagster.warehouse.transactions import transaction

STATES = ("queued", "claimed", "sent", "failed", "uncertain")
# Transports whose deliver() is idempotent per send_id (see eml.Transport.idempotent).
REDELIVERABLE_TRANSPORTS = frozenset({"file"})
RESOLUTIONS = {"sent": "sent", "failed": "failed", "retry": "queued"}
BOUNCE_SOURCE = "outbox"


class OutboxError(ValueError):
    """A move the outbox refuses (unknown send, wrong state); the message says which and why."""


class RunLike(Protocol):
    run_id: str
    partition_day: date
    campaign_id: str


@dataclass(frozen=True)
class QueuedSend:
    send_id: str
    lead_id: str
    message_id: str
    to_email: str


@dataclass(frozen=True)
class Change:
    """One send's move: why, and what the move learnt (mailbox and message at a claim, attempts and error after)."""

    send_id: str
    reason: str
    mailbox: str | None = None
    message_id: str | None = None
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Recovery:
    uncertain: list[str]
    requeued: list[str]


# --- moves ------------------------------------------------------------------------------------------


def enqueue(con: duckdb.DuckDBPyConnection, sends: Sequence[QueuedSend], run: RunLike, transport: str, actor: str) -> int:
    """Queue the sends not in the outbox yet (call inside a transaction); the number queued.

    A send already in the outbox keeps its row: its Message-ID was fixed when it was first queued.
    """
    if not sends:
        return 0
    ids = [s.send_id for s in sends]
    known = {
        r[0]
        for r in con.execute(
            "SELECT send_id FROM raw.outbox WHERE send_id IN (SELECT unnest($ids::VARCHAR[]))", {"ids": ids}
        ).fetchall()
    }
    new = [s for s in sends if s.send_id not in known]
    if not new:
        return 0
    now = utcnow()
    con.execute(
        """INSERT INTO raw.outbox (send_id, campaign_id, lead_id, message_id, header_message_id, to_email, transport, state,
                                   mailbox, attempts, last_error, partition_day, run_id, queued_at, claimed_at, finished_at,
                                   updated_at)
           SELECT send_id, $campaign, lead_id, message_id, header_message_id, to_email, $transport, 'queued',
                  NULL, 0, NULL, $day, $run, $now, NULL, NULL, $now
           FROM (SELECT unnest($ids::VARCHAR[]) AS send_id, unnest($leads::VARCHAR[]) AS lead_id,
                        unnest($messages::VARCHAR[]) AS message_id, unnest($headers::VARCHAR[]) AS header_message_id,
                        unnest($emails::VARCHAR[]) AS to_email) AS queued""",
        {
            "campaign": run.campaign_id,
            "transport": transport,
            "day": run.partition_day,
            "run": run.run_id,
            "now": now,
            "ids": [s.send_id for s in new],
            "leads": [s.lead_id for s in new],
            "messages": [s.message_id for s in new],
            "headers": [message_id_for(s.send_id) for s in new],
            "emails": [s.to_email for s in new],
        },
    )
    _log(con, [(s.send_id, run.campaign_id, None, "queued", None, 0, "chosen by the send plan") for s in new], actor, run, now)
    return len(new)


def move(
    con: duckdb.DuckDBPyConnection,
    to_state: str,
    changes: Sequence[Change],
    *,
    from_state: str,
    actor: str,
    run: RunLike | None = None,
    transport: str | None = None,
) -> None:
    """Move every send of `changes` from `from_state` to `to_state`, recording each move (call inside a transaction:
    when any send is unknown or in another state this raises OutboxError, naming them, and the caller rolls back)."""
    if to_state not in STATES or from_state not in STATES:
        raise ValueError(f"unknown outbox state in {from_state!r} -> {to_state!r}")
    if not changes:
        return
    claim = to_state == "claimed"
    if claim and (transport is None or run is None):
        raise ValueError("a claim needs the run and the transport")
    now = utcnow()
    # Only the columns this kind of move changes are written: DuckDB pays per updated column.
    sets = ["state = $to_state", "updated_at = $now"]
    columns = {"send_id": ("VARCHAR", [c.send_id for c in changes])}
    values: dict[str, object] = {"to_state": to_state, "from_state": from_state, "now": now}
    if claim:
        sets += ["mailbox = c.mailbox", "message_id = c.message_id", "transport = $transport", "partition_day = $day"]
        sets += ["run_id = $run", "claimed_at = $now", "last_error = NULL"]
        columns["mailbox"] = ("VARCHAR", [c.mailbox for c in changes])
        columns["message_id"] = ("VARCHAR", [c.message_id for c in changes])
        values.update(transport=transport, day=run.partition_day, run=run.run_id)
    if any(c.attempts for c in changes):
        sets.append("attempts = o.attempts + c.attempts")
        columns["attempts"] = ("INTEGER", [c.attempts for c in changes])
    if any(c.error is not None for c in changes):
        sets.append("last_error = coalesce(c.error, o.last_error)")
        columns["error"] = ("VARCHAR", [c.error for c in changes])
    if to_state in ("sent", "failed", "uncertain"):
        sets.append("finished_at = $now")
    frame = ", ".join(f"unnest($c_{name}::{kind}[]) AS {name}" for name, (kind, _) in columns.items())
    values.update({f"c_{name}": data for name, (_, data) in columns.items()})
    moved = con.execute(
        f"""UPDATE raw.outbox o SET {", ".join(sets)}
            FROM (SELECT {frame}) c
            WHERE o.send_id = c.send_id AND o.state = $from_state
            RETURNING o.send_id, o.campaign_id, o.attempts""",
        values,
    ).fetchall()
    if len(moved) != len(changes):
        _refuse(con, to_state, from_state, [c.send_id for c in changes], {row[0] for row in moved})
    after = {send_id: (campaign, attempts) for send_id, campaign, attempts in moved}
    _log(
        con,
        [(c.send_id, after[c.send_id][0], from_state, to_state, c.mailbox, after[c.send_id][1], c.reason) for c in changes],
        actor,
        run,
        now,
    )


def _refuse(con: duckdb.DuckDBPyConnection, to_state: str, from_state: str, send_ids: list[str], moved: set[str]) -> None:
    states = dict(
        con.execute(
            "SELECT send_id, state FROM raw.outbox WHERE send_id IN (SELECT unnest($ids::VARCHAR[]))", {"ids": send_ids}
        ).fetchall()
    )
    listed = ", ".join(f"{s} ({states.get(s) or 'not in the outbox'})" for s in send_ids if s not in moved)
    raise OutboxError(f"cannot move to {to_state}: {listed}; only sends that are {from_state} can")


def _log(
    con: duckdb.DuckDBPyConnection,
    entries: list[tuple[str, str, str | None, str, str | None, int, str]],
    actor: str,
    run: RunLike | None,
    now: datetime,
) -> None:
    """Append (send_id, campaign_id, from_state, to_state, mailbox, attempts, reason) rows to raw.outbox_transitions."""
    if not entries:
        return
    columns = [list(c) for c in zip(*entries, strict=True)]
    con.execute(
        """INSERT INTO raw.outbox_transitions
           SELECT send_id, campaign_id, from_state, to_state, mailbox, attempts, $actor, reason, $run, $day, $now
           FROM (SELECT unnest($ids::VARCHAR[]) AS send_id, unnest($campaigns::VARCHAR[]) AS campaign_id,
                        unnest($from::VARCHAR[]) AS from_state, unnest($to::VARCHAR[]) AS to_state,
                        unnest($mailboxes::VARCHAR[]) AS mailbox, unnest($attempts::INTEGER[]) AS attempts,
                        unnest($reasons::VARCHAR[]) AS reason) AS moves""",
        {
            "actor": actor,
            "run": run.run_id if run else None,
            "day": run.partition_day if run else None,
            "now": now,
            **dict(zip(("ids", "campaigns", "from", "to", "mailboxes", "attempts", "reasons"), columns, strict=True)),
        },
    )


# --- what a finished send leaves in the warehouse -------------------------------------------------------


def record_sends(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[tuple[str, str, str]],
    *,
    day: date,
    run_id: str,
    transport: str,
    sent_at: datetime,
) -> None:
    """`raw.sends` rows for (send_id, transport_ref, status) from each send's message and assignment (in a transaction).

    The subject and body are those that went: a reviewer's latest edit, if any (review/sendable.py). The body hash
    is the warehouse's sha256 of that body, the same hex digest as hashlib's of its UTF-8 bytes.
    """
    if not rows:
        return
    ids, refs, statuses = (list(c) for c in zip(*rows, strict=True))
    postgres = is_postgres(con)
    written = con.execute(
        f"""INSERT INTO raw.sends (send_id, message_id, partition_day, message_day, run_id, campaign_id, spec_version, lead_id,
                                 to_email, segment, arm_id, angle, prompt_version, model, subject, body_sha256, transport,
                                 transport_ref, sent_at, status)
           SELECT m.send_id, m.message_id, $day AS partition_day, m.partition_day AS message_day, $run AS run_id,
                  m.campaign_id, m.spec_version, m.lead_id, m.to_email, a.segment, m.arm_id, m.angle, m.prompt_version,
                  m.model, m.subject, {sha256_hex_sql("m.body", postgres)} AS body_sha256, $transport AS transport, c.ref AS transport_ref,
                  $sent_at AS sent_at, c.status AS status
           FROM (SELECT unnest($ids::VARCHAR[]) AS send_id, unnest($refs::VARCHAR[]) AS ref,
                        unnest($statuses::VARCHAR[]) AS status) c
           JOIN {effective_messages(postgres)} m USING (send_id)
           JOIN raw.assignments a ON a.campaign_id = m.campaign_id AND a.lead_id = m.lead_id""",
        {"day": day, "run": run_id, "transport": transport, "sent_at": sent_at, "ids": ids, "refs": refs, "statuses": statuses},
    ).fetchall()[0][0]
    if written != len(rows):
        raise OutboxError(f"{len(rows) - written} of {len(rows)} sends have no message or assignment left: {ids}")


def bounce_event_id(send_id: str) -> str:
    return "evt_" + hashlib.sha256(f"{BOUNCE_SOURCE}|{send_id}|bounced".encode()).hexdigest()[:20]


def record_bounces(con: duckdb.DuckDBPyConnection, send_ids: Sequence[str], run: RunLike, transport: str) -> None:
    """A `bounced` event per send the server refused, so the observe stage suppresses the address (in a transaction)."""
    if not send_ids:
        return
    now = utcnow()
    con.execute(
        """INSERT INTO raw.events (event_id, send_id, event_type, occurred_at, partition_day, run_id, campaign_id,
                                   source_file, source_row, imported_at)
           SELECT event_id, send_id, 'bounced', $now, $day, $run, $campaign, $source, 0, $now
           FROM (SELECT unnest($events::VARCHAR[]) AS event_id, unnest($ids::VARCHAR[]) AS send_id) AS bounced
           ON CONFLICT DO NOTHING""",
        {
            "now": now,
            "day": run.partition_day,
            "run": run.run_id,
            "campaign": run.campaign_id,
            "source": f"{BOUNCE_SOURCE}:{transport}",
            "events": [bounce_event_id(s) for s in send_ids],
            "ids": list(send_ids),
        },
    )


# --- restart and operators ------------------------------------------------------------------------------


def recover_claims(
    con: duckdb.DuckDBPyConnection, actor: str, run: RunLike | None = None, campaign_id: str | None = None
) -> Recovery:
    """Settle the claims a dead process left: back to the queue for an idempotent transport, else uncertain.

    With `campaign_id`, that campaign's claims only. A campaign's send stage settles its own: its days run one at a
    time, so a claim of its own at the start of the stage was left by a dead run, while on the PostgreSQL warehouse
    another campaign's claims may belong to a run sending at this moment.
    """
    rows = con.execute(
        """SELECT send_id, transport, run_id, claimed_at FROM raw.outbox
           WHERE state = 'claimed' AND ($campaign::VARCHAR IS NULL OR campaign_id = $campaign) ORDER BY send_id""",
        {"campaign": campaign_id},
    ).fetchall()
    requeue = [
        Change(
            s,
            f"run {r} claimed it at {at:%Y-%m-%d %H:%M:%S} and ended before its outcome was recorded; "
            f"the {t} transport hands a send over at most once",
        )
        for s, t, r, at in rows
        if t in REDELIVERABLE_TRANSPORTS
    ]
    uncertain = [
        Change(
            s,
            f"run {r} claimed it at {at:%Y-%m-%d %H:%M:%S} and ended before the {t} server's answer was recorded: "
            "it may have been delivered",
            error="outcome unknown: the sending process ended while the send was claimed",
        )
        for s, t, r, at in rows
        if t not in REDELIVERABLE_TRANSPORTS
    ]
    with transaction(con):
        move(con, "queued", requeue, from_state="claimed", actor=actor, run=run)
        move(con, "uncertain", uncertain, from_state="claimed", actor=actor, run=run)
    return Recovery(uncertain=[c.send_id for c in uncertain], requeued=[c.send_id for c in requeue])


def uncertain_sends(con: duckdb.DuckDBPyConnection, campaign_id: str | None = None) -> list[dict]:
    """The sends waiting for a person, oldest claim first."""
    cursor = con.execute(
        """SELECT send_id, campaign_id, to_email, mailbox, transport, header_message_id, partition_day, claimed_at,
                  attempts, last_error
           FROM raw.outbox WHERE state = 'uncertain' AND ($campaign::VARCHAR IS NULL OR campaign_id = $campaign)
           ORDER BY claimed_at, send_id""",
        {"campaign": campaign_id},
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def resolve(con: duckdb.DuckDBPyConnection, send_id: str, outcome: str, actor: str, reason: str) -> str:
    """A person's verdict on an uncertain send: sent (it arrived; a `raw.sends` row is written), failed (it never
    goes), or retry (back to the queue: the next run sends it). Returns the new state."""
    if outcome not in RESOLUTIONS:
        raise OutboxError(f"resolve a send as one of {', '.join(RESOLUTIONS)}, not {outcome!r}")
    if not reason.strip():
        raise OutboxError("a resolution needs a reason (it is recorded with the actor)")
    to_state = RESOLUTIONS[outcome]
    row = con.execute(
        "SELECT partition_day, run_id, transport, claimed_at, mailbox FROM raw.outbox WHERE send_id = ?", [send_id]
    ).fetchall()
    with transaction(con):
        move(con, to_state, [Change(send_id, f"resolved as {outcome}: {reason}")], from_state="uncertain", actor=actor)
        if outcome == "sent":
            day, run_id, transport, claimed_at, mailbox = row[0]
            record_sends(
                con,
                [(send_id, f"resolved as sent by {actor}: {reason}", "sent")],
                day=day,
                run_id=run_id,
                transport=transport,
                sent_at=claimed_at or utcnow(),
            )
    return to_state


def state_of(con: duckdb.DuckDBPyConnection, send_id: str) -> str | None:
    row = con.execute("SELECT state FROM raw.outbox WHERE send_id = ?", [send_id]).fetchall()
    return row[0][0] if row else None


def mailbox_usage(con: duckdb.DuckDBPyConnection, day: date) -> dict[str, MailboxUsage]:
    """Per mailbox, the sends it took on `day` (claimed and not given back) and when it last took one, any day
    (epoch seconds: the pace holds across a restart and across midnight)."""
    rows = con.execute(
        """SELECT mailbox,
                  count(*) FILTER (WHERE partition_day = ? AND state IN ('claimed', 'sent', 'failed', 'uncertain')),
                  max(extract(epoch FROM claimed_at))
           FROM raw.outbox WHERE mailbox IS NOT NULL GROUP BY mailbox""",
        [day],
    ).fetchall()
    return {mailbox: MailboxUsage(int(taken), last) for mailbox, taken, last in rows}
