"""The review actions on the warehouse: list, find, approve, edit, hold and release a message before it goes.

Every action is a row of `raw.message_reviews` (append-only, numbered per message by `seq`, with the
actor, the reason and the hash of the text it was about); an edit is also a row of `raw.message_edits`
with both texts, the diff and what review/analysis.py found in it. State is never updated in place:
whether a message is held, approved or edited is read from those rows (review/sendable.py), so the
history is the state.

A message can be reviewed until the outbox claims it: once a send is claimed it may already have gone,
so an edit, hold or approval of it is refused. An edited text must pass the same blocking rules a draft
passes at the gate: `gates.rules.check_draft` (length, subject, CTA, unsubscribe footer, postal address,
banned phrases, placeholders, invented numbers, offers and links, greeting, company, planted text,
language) and the consistency rules against what the lead's company was told (`gates.consistency`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import Angle, CampaignSpec
from factory_dagster.drafting.work import UNSENT
from factory_dagster.gates.consistency import load_earlier
from factory_dagster.gates.rules import Violation, check_draft
from factory_dagster.review.analysis import EditAnalysis, analyse_edit
from factory_dagster.review.sendable import HELD_MESSAGE_IDS, approved_message_ids, effective_messages, text_sha256
from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.dialect import is_postgres
from factory_dagster.warehouse.store import insert_rows, transaction
from factory_dagster.warehouse.suppressed import suppressed_sql

ACTIONS = ("approve", "edit", "hold", "release")
LEAD_FIELDS = ("first_name", "last_name", "company", "role", "industry", "note")


class ReviewError(ValueError):
    """An action the review refuses (unknown message, too late, a broken rule); the message says which and why."""


@dataclass(frozen=True)
class ReviewItem:
    """One message as a reviewer sees it: the text that would go now and what stands in its way."""

    message_id: str
    send_id: str
    campaign_id: str
    partition_day: date
    lead_id: str
    to_email: str
    segment: str
    angle: str
    arm_id: str
    prompt_version: str
    model: str
    draft_id: str
    subject: str  # the effective text (the latest edit of the model's text, if any)
    body: str
    model_subject: str  # the model's text as the gate accepted it
    model_body: str
    outbox_state: str | None
    sent: bool
    held: bool
    hold_reason: str | None
    approved: bool
    edits: int
    day_hold: str | None
    suppressed: bool

    @property
    def open(self) -> bool:
        """Not sent and not claimed: a person may still change what happens to it."""
        return not self.sent and self.outbox_state in (None, "queued")

    @property
    def edited(self) -> bool:
        return (self.subject, self.body) != (self.model_subject, self.model_body)

    @property
    def status(self) -> str:
        """What the next send stage does with it, in a few words."""
        if self.sent or not self.open:
            return f"sent ({self.outbox_state or 'sent'})" if self.sent else f"outbox {self.outbox_state}"
        parts = []
        if self.held:
            parts.append(f"HELD: {self.hold_reason}")
        if self.day_hold:
            parts.append(f"DAY HELD: {self.day_hold}")
        if self.suppressed:
            parts.append("SUPPRESSED")
        parts.append("approved" if self.approved else "not approved")
        if self.edited:
            parts.append(f"edited ({self.edits}x)")
        return ", ".join(parts)


@dataclass(frozen=True)
class ReviewRecord:
    """What an action stored (or found already done: `already`)."""

    review_id: str
    message_id: str
    action: str
    actor: str
    reason: str
    already: bool = False


@dataclass(frozen=True)
class EditRecord:
    edit_id: str
    review: ReviewRecord
    analysis: EditAnalysis
    approval: ReviewRecord | None


def _items_sql(postgres: bool) -> str:
    """Review items of a campaign (the caller adds `AND <where>`)."""
    return f"""
    SELECT m.message_id, m.send_id, m.campaign_id, m.partition_day::DATE AS partition_day, m.lead_id, m.to_email,
           a.segment, m.angle, m.arm_id, m.prompt_version, m.model, m.draft_id, m.subject, m.body,
           r.subject AS model_subject, r.body AS model_body, o.state AS outbox_state,
           m.send_id IN (SELECT send_id FROM raw.sends) AS sent,
           m.message_id IN {HELD_MESSAGE_IDS} AS held,
           (SELECT reason FROM raw.message_reviews v
            WHERE v.message_id = m.message_id AND v.action = 'hold' ORDER BY seq DESC LIMIT 1) AS hold_reason,
           m.message_id IN {approved_message_ids(postgres)} AS approved,
           (SELECT count(*) FROM raw.message_edits e WHERE e.message_id = m.message_id)::INTEGER AS edits,
           (SELECT h.reason FROM raw.send_holds h WHERE h.partition_day = m.partition_day
              AND h.campaign_id = m.campaign_id AND h.released_at IS NULL LIMIT 1) AS day_hold,
           {suppressed_sql("m.to_email")} AS suppressed
    FROM {effective_messages(postgres)} m
    JOIN raw.messages r USING (message_id)
    JOIN raw.assignments a ON a.campaign_id = m.campaign_id AND a.lead_id = m.lead_id
    LEFT JOIN raw.outbox o ON o.send_id = m.send_id
    WHERE m.campaign_id = $campaign"""


def _items(con: duckdb.DuckDBPyConnection, where: str, params: dict) -> list[ReviewItem]:
    cursor = con.execute(f"{_items_sql(is_postgres(con))} AND {where} ORDER BY m.partition_day, m.message_id", params)
    names = [d[0] for d in cursor.description]
    return [ReviewItem(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def unsent_messages(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date | None = None) -> list[ReviewItem]:
    """The accepted messages not sent nor claimed yet, oldest first: with `day`, those the send stage of that day
    would consider (accepted that day or before). Held, day-held and suppressed ones are listed with their status."""
    return _items(
        con,
        "($day::DATE IS NULL OR m.partition_day <= $day) AND m.send_id NOT IN (SELECT send_id FROM raw.sends)"
        " AND coalesce(o.state, 'queued') = 'queued'",
        {"campaign": campaign_id, "day": day},
    )


def find_message(con: duckdb.DuckDBPyConnection, campaign_id: str, ident: str) -> ReviewItem:
    """The campaign's message with this message id or send id, sent or not; ReviewError when there is none."""
    found = _items(con, "(m.message_id = $id OR m.send_id = $id)", {"campaign": campaign_id, "id": ident.strip()})
    if not found:
        raise ReviewError(f"no message of campaign {campaign_id} has the id {ident!r} (a msg_... or snd_... id)")
    return found[0]


def _open(item: ReviewItem, action: str) -> None:
    if item.sent:
        raise ReviewError(f"{item.message_id} was already sent: too late to {action} it")
    if not item.open:
        raise ReviewError(
            f"{item.message_id} is {item.outbox_state} in the outbox (send {item.send_id}): it may already have gone, "
            f"so it can no longer be {action}{'d' if action.endswith('e') else 'ed'}"
        )


def _review(
    con: duckdb.DuckDBPyConnection,
    item: ReviewItem,
    action: str,
    actor: str,
    reason: str,
    sha: str,
    edit_id: str | None = None,
) -> ReviewRecord:
    """Append one row to raw.message_reviews (call inside a transaction)."""
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM raw.message_reviews WHERE message_id = ?", [item.message_id])
    seq = seq.fetchall()[0][0]
    review_id = "rev_" + hashlib.sha256(f"{item.message_id}|{seq}".encode()).hexdigest()[:20]
    con.execute(
        """INSERT INTO raw.message_reviews (review_id, message_id, seq, send_id, partition_day, campaign_id, prompt_version,
                                            model, action, text_sha256, edit_id, actor, reason, reviewed_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            review_id,
            item.message_id,
            seq,
            item.send_id,
            item.partition_day,
            item.campaign_id,
            item.prompt_version,
            item.model,
            action,
            sha,
            edit_id,
            actor,
            reason,
            utcnow(),
        ],
    )
    return ReviewRecord(review_id, item.message_id, action, actor, reason)


def _actor(actor: str) -> str:
    if not actor.strip():
        raise ReviewError("every review action records who did it: give --actor (default: the OS user)")
    return actor.strip()


def approve(con: duckdb.DuckDBPyConnection, campaign_id: str, ident: str, actor: str, reason: str = "") -> ReviewRecord:
    """Approve the text that would go now. Approving it again changes nothing (`already`); a held message is refused."""
    actor = _actor(actor)
    item = find_message(con, campaign_id, ident)
    _open(item, "approve")
    if item.held:
        raise ReviewError(f"{item.message_id} is held ({item.hold_reason}): release it first (factory review release)")
    if item.approved:
        return ReviewRecord("", item.message_id, "approve", actor, reason, already=True)
    with transaction(con):
        return _review(con, item, "approve", actor, reason, text_sha256(item.subject, item.body))


def approve_all(con: duckdb.DuckDBPyConnection, campaign_id: str, actor: str, reason: str, day: date | None = None) -> list[str]:
    """Approve every open message (of `day` and before) that is not held and not approved yet; the ids approved."""
    actor = _actor(actor)
    waiting = [i for i in unsent_messages(con, campaign_id, day) if not i.held and not i.approved]
    with transaction(con):
        for item in waiting:
            _review(con, item, "approve", actor, reason, text_sha256(item.subject, item.body))
    return [i.message_id for i in waiting]


def hold(con: duckdb.DuckDBPyConnection, campaign_id: str, ident: str, actor: str, reason: str) -> ReviewRecord:
    """Keep a message out of every send until it is released."""
    actor = _actor(actor)
    if not reason.strip():
        raise ReviewError("a hold needs a reason (it is shown to whoever releases it)")
    item = find_message(con, campaign_id, ident)
    _open(item, "hold")
    if item.held:
        raise ReviewError(f"{item.message_id} is already held: {item.hold_reason}")
    with transaction(con):
        return _review(con, item, "hold", actor, reason.strip(), text_sha256(item.subject, item.body))


def release(con: duckdb.DuckDBPyConnection, campaign_id: str, ident: str, actor: str, reason: str) -> ReviewRecord:
    """Let a held message go with the next send (subject to the other guards)."""
    actor = _actor(actor)
    if not reason.strip():
        raise ReviewError("releasing a hold needs a reason")
    item = find_message(con, campaign_id, ident)
    _open(item, "release")
    if not item.held:
        raise ReviewError(f"{item.message_id} is not held")
    with transaction(con):
        return _review(con, item, "release", actor, reason.strip(), text_sha256(item.subject, item.body))


def _lead(con: duckdb.DuckDBPyConnection, item: ReviewItem) -> pd.Series:
    lead = con.execute(
        "SELECT lead_id, email, first_name, coalesce(last_name, '') AS last_name, company, role, industry, note "
        "FROM raw.leads WHERE campaign_id = ? AND lead_id = ?",
        [item.campaign_id, item.lead_id],
    ).df()
    if lead.empty:
        raise ReviewError(f"the lead {item.lead_id} of {item.message_id} is not in raw.leads: its rules cannot be checked")
    return lead.iloc[0]


def _angle(spec: CampaignSpec, item: ReviewItem) -> Angle:
    try:
        return spec.angle(item.angle)
    except StopIteration:
        raise ReviewError(f"the angle {item.angle!r} of {item.message_id} is not in the spec any more") from None


def edit_violations(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, item: ReviewItem, lead: pd.Series, subject: str, body: str
) -> list[Violation]:
    """The gate's blocking rules for this lead, run on an edited text: the draft rules, then consistency with what
    the lead's company was told before and with today's other messages to it (as they would go, edits included)."""
    fields = {f: lead[f] for f in LEAD_FIELDS}
    found = check_draft(subject, body, fields, spec, _angle(spec, item))
    lead_row = next(lead.to_frame().T.itertuples(index=False))
    gate = load_earlier(con, spec, item.partition_day, lead.to_frame().T)
    # load_earlier leaves out today's unsent messages of the campaign (the gate rewrites them); a review sees them.
    today = con.execute(
        f"""SELECT a.lead_id, a.to_email AS email, l.company, l.first_name, coalesce(l.last_name, '') AS last_name,
                   a.subject, a.body
            FROM {effective_messages(is_postgres(con))} a JOIN raw.leads l USING (campaign_id, lead_id)
            WHERE a.partition_day = $day AND a.campaign_id = $campaign AND a.lead_id <> $lead AND {UNSENT}
            ORDER BY a.lead_id""",
        {"day": item.partition_day, "campaign": item.campaign_id, "lead": item.lead_id},
    ).df()
    for other in today.itertuples(index=False):
        gate.accept(other, other.subject, other.body)
    return found + gate.violations(lead_row, subject, body)


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def edit(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    ident: str,
    actor: str,
    reason: str,
    subject: str | None = None,
    body: str | None = None,
    and_approve: bool = False,
) -> EditRecord:
    """Replace the subject and/or body that would go, after the gate's rules for the lead passed on the new text.

    Refused (ReviewError naming each broken rule, nothing stored) when the text breaks a rule, changes nothing, or
    the message is no longer open. The diff and distance are against the text that would have gone before this edit.
    """
    actor = _actor(actor)
    if subject is None and body is None:
        raise ReviewError("an edit needs a new subject and/or a new body")
    item = find_message(con, spec.campaign_id, ident)
    _open(item, "edit")
    new_subject = item.subject if subject is None else _clean(subject)
    new_body = item.body if body is None else _clean(body)
    if (new_subject, new_body) == (item.subject, item.body):
        raise ReviewError(f"the edit changes nothing in {item.message_id}")
    lead = _lead(con, item)
    broken = edit_violations(con, spec, item, lead, new_subject, new_body)
    if broken:
        rules = "; ".join(f"{v.code}: {v.detail}" for v in broken)
        raise ReviewError(f"the edited text of {item.message_id} breaks the gate's rules, so it was not stored: {rules}")
    analysis = analyse_edit(item.subject, item.body, new_subject, new_body, spec, _angle(spec, item), lead.to_dict())
    with transaction(con):
        seq = con.execute("SELECT coalesce(max(edit_seq), 0) + 1 FROM raw.message_edits WHERE message_id = ?", [item.message_id])
        seq = seq.fetchall()[0][0]
        edit_id = "edt_" + hashlib.sha256(f"{item.message_id}|{seq}".encode()).hexdigest()[:20]
        _insert_edit(con, item, edit_id, seq, new_subject, new_body, analysis, actor, reason)
        new_sha = text_sha256(new_subject, new_body)
        review = _review(con, item, "edit", actor, reason, new_sha, edit_id)
        approval = _review(con, item, "approve", actor, reason or "approved with the edit", new_sha) if and_approve else None
    return EditRecord(edit_id, review, analysis, approval)


def _insert_edit(
    con: duckdb.DuckDBPyConnection,
    item: ReviewItem,
    edit_id: str,
    seq: int,
    subject: str,
    body: str,
    analysis: EditAnalysis,
    actor: str,
    reason: str,
) -> None:
    row = {
        "edit_id": edit_id,
        "message_id": item.message_id,
        "edit_seq": seq,
        "send_id": item.send_id,
        "partition_day": item.partition_day,
        "campaign_id": item.campaign_id,
        "lead_id": item.lead_id,
        "segment": item.segment,
        "angle": item.angle,
        "arm_id": item.arm_id,
        "prompt_version": item.prompt_version,
        "model": item.model,
        "draft_id": item.draft_id,
        "base_sha256": text_sha256(item.model_subject, item.model_body),
        "old_subject": item.subject,
        "old_body": item.body,
        "new_subject": subject,
        "new_body": body,
        "diff": analysis.diff,
        "edit_distance": analysis.edit_distance,
        "words_before": analysis.words_before,
        "words_after": analysis.words_after,
        "sections_changed": analysis.sections_changed,
        "changes": [c.as_record() for c in analysis.changes],
        "actor": actor,
        "reason": reason,
        "edited_at": utcnow(),
    }
    insert_rows(con, "message_edits", pd.DataFrame([row]))  # the store types the nested `changes` for either engine


def history(con: duckdb.DuckDBPyConnection, message_id: str) -> list[dict]:
    """Every review action on a message, oldest first, with the edit's distance and sections where it was an edit."""
    cursor = con.execute(
        """SELECT r.seq, r.action, r.actor, r.reason, r.reviewed_at, e.edit_distance, e.sections_changed
           FROM raw.message_reviews r LEFT JOIN raw.message_edits e USING (edit_id)
           WHERE r.message_id = ? ORDER BY r.seq""",
        [message_id],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"
