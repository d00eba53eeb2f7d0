"""What "lost nothing" means, checked on a data folder after a crash and a re-run.

Each check reads the warehouse (read-only), the lead inbox and the outbox directly, so it
does not trust the line's own bookkeeping: lead rows are counted from the CSV files with
the standard library, and every `.eml` file is compared byte for byte with the message its
send row says went out. A stage table's partition must be complete or absent; the
`half_written` counts name the invariant each violation breaks.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from email.parser import BytesHeaderParser
from email.policy import SMTP
from pathlib import Path

import duckdb

from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.delivery.eml import OutgoingMessage, build_email
from factory_dagster.settings import DEFAULT_SPEC_PATH

# Invariant name -> SQL counting its violations for day $day of campaign $campaign. Each says
# what a stage leaves behind when its partition was written completely.
PARTITION_INVARIANTS: dict[str, str] = {
    # assign: every accepted, unsuppressed lead of the day has its (sticky) assignment...
    "leads_without_assignment": """
        SELECT count(*) FROM raw.leads l
        WHERE l.partition_day = $day AND l.campaign_id = $campaign
          AND l.email NOT IN (SELECT email FROM raw.suppression)
          AND l.lead_id NOT IN (SELECT lead_id FROM raw.assignments WHERE campaign_id = $campaign)""",
    # ...and a day with assignments has the allocation they were drawn from.
    "assignments_without_allocation": """
        SELECT count(*) FROM raw.assignments a
        WHERE a.partition_day = $day AND a.campaign_id = $campaign AND NOT EXISTS (
            SELECT 1 FROM raw.allocations x WHERE x.partition_day = $day AND x.campaign_id = $campaign
              AND x.segment = a.segment AND x.arm_id = a.arm_id)""",
    # plan: a day that assigned or drafted had its plan.
    "day_without_plan": """
        SELECT count(*) FROM (SELECT 1 FROM raw.assignments WHERE partition_day = $day AND campaign_id = $campaign LIMIT 1)
        WHERE NOT EXISTS (SELECT 1 FROM raw.plans WHERE partition_day = $day AND campaign_id = $campaign)""",
    # draft: a lead drafted on the day has all of its first-round candidates.
    "leads_with_missing_candidates": """
        SELECT count(*) FROM (
            SELECT lead_id FROM raw.drafts WHERE partition_day = $day AND campaign_id = $campaign AND attempt = 0
            GROUP BY lead_id HAVING count(*) <> $candidates)""",
    # gate: every draft of the day has its gate result...
    "drafts_without_gate_result": """
        SELECT count(*) FROM raw.drafts d
        WHERE d.partition_day = $day AND d.campaign_id = $campaign
          AND d.draft_id NOT IN (SELECT draft_id FROM raw.gate_results)""",
    # ...every lead with a verdict (message or quarantine) was drafted that day...
    "verdicts_without_drafts": """
        SELECT count(*) FROM (
            SELECT lead_id FROM raw.messages WHERE partition_day = $day AND campaign_id = $campaign
            UNION ALL SELECT lead_id FROM raw.messages_quarantine WHERE partition_day = $day AND campaign_id = $campaign) v
        WHERE v.lead_id NOT IN (SELECT lead_id FROM raw.drafts WHERE partition_day = $day AND campaign_id = $campaign)""",
    # ...every message comes from a draft that passed and was selected...
    "messages_not_gated": """
        SELECT count(*) FROM raw.messages m
        WHERE m.partition_day = $day AND m.campaign_id = $campaign AND NOT EXISTS (
            SELECT 1 FROM raw.gate_results g WHERE g.draft_id = m.draft_id AND g.passed AND g.selected)""",
    # ...and a day with messages has its audit sample.
    "messages_without_audit": """
        SELECT count(*) FROM (SELECT 1 FROM raw.messages WHERE partition_day = $day AND campaign_id = $campaign LIMIT 1)
        WHERE NOT EXISTS (SELECT 1 FROM raw.audits WHERE partition_day = $day AND campaign_id = $campaign)""",
    # send: what passed by the day went out, unless held, suppressed or over the daily cap.
    "messages_left_unsent": """
        SELECT count(*) FROM raw.messages m
        WHERE m.partition_day <= $day AND m.campaign_id = $campaign
          AND m.send_id NOT IN (SELECT send_id FROM raw.sends)
          AND m.partition_day NOT IN (SELECT partition_day FROM raw.send_holds WHERE released_at IS NULL)
          AND lower(m.to_email) NOT IN (SELECT lower(email) FROM raw.suppression)
          AND (SELECT count(*) FROM raw.sends WHERE partition_day = $day AND campaign_id = $campaign) < $cap""",
}
# Invariants over the whole warehouse, whatever the day.
GLOBAL_INVARIANTS: dict[str, str] = {
    "leads_with_message_and_quarantine": """
        SELECT count(*) FROM (SELECT DISTINCT campaign_id, lead_id FROM raw.messages) m
        JOIN (SELECT DISTINCT campaign_id, lead_id FROM raw.messages_quarantine) q USING (campaign_id, lead_id)""",
    "sends_without_message": "SELECT count(*) FROM raw.sends WHERE message_id NOT IN (SELECT message_id FROM raw.messages)",
    "event_rows_lost": """
        SELECT coalesce(sum(greatest(f.rows_accepted - (SELECT count(*) FROM raw.events e WHERE e.source_file = f.file_path), 0)), 0)
        FROM raw.intake_files f WHERE f.kind = 'events' AND f.status = 'imported'""",
    "dbt_leftover_relations": """
        SELECT count(*) FROM information_schema.tables
        WHERE table_name LIKE '%\\_\\_dbt\\_tmp%' ESCAPE '\\' OR table_name LIKE '%\\_\\_dbt\\_backup%' ESCAPE '\\'""",
}


@dataclass
class Findings:
    """Everything a crash could have lost or doubled; all zero when nothing was."""

    duplicate_sends: int = 0  # send rows beyond one per send_id, and beyond one per campaign and lead
    duplicate_eml: int = 0  # .eml files beyond one per Message-ID
    orphan_eml: int = 0  # .eml files with no send row: a message out that the warehouse does not know of
    eml_mismatch: int = 0  # send rows whose .eml is missing or is not the message recorded as sent
    outbox_temp_files: int = 0  # half-written .eml temp files left by a kill (never read as sent)
    lead_rows_in: int = 0
    lost_rows: int = 0  # input rows in neither raw.leads nor raw.leads_quarantine
    duplicated_rows: int = 0  # input rows stored more than once
    half_written: dict[str, int] = field(default_factory=dict)  # invariant -> violations

    @property
    def clean(self) -> bool:
        counts = (self.duplicate_sends, self.duplicate_eml, self.orphan_eml, self.eml_mismatch, self.lost_rows)
        return not any(counts) and not self.duplicated_rows and not any(self.half_written.values())


def count_csv_rows(path: Path) -> int:
    """Data records of a lead CSV by the standard library alone (blank records are not leads)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    header = text.lstrip().split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header.count)
    records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(f.strip() for f in r)]
    return max(0, len(records) - 1)


def check_folder(
    home: Path, days: list[date], outbox_days: list[date] | None = None, spec: CampaignSpec | None = None
) -> Findings:
    """Check a data folder after its `days` completed (no line process may run on it).

    Orphan .eml files are looked for in the day folders of `outbox_days` (default: all): a day
    killed and not re-run yet may hold files its send rows will record on the re-run.
    """
    spec = spec or load_spec(DEFAULT_SPEC_PATH)
    findings = Findings()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        _check_sends(con, home, spec, findings, outbox_days)
        _check_lead_rows(con, home, days, findings)
        params = {"campaign": spec.campaign_id, "candidates": spec.drafting.candidates, "cap": spec.limits.daily_send_cap}
        for name, sql in PARTITION_INVARIANTS.items():
            used = {k: v for k, v in params.items() if f"${k}" in sql}
            findings.half_written[name] = sum(_count(con, sql, {**used, "day": day}) for day in days)
        for name, sql in GLOBAL_INVARIANTS.items():
            findings.half_written[name] = _count(con, sql, {"campaign": spec.campaign_id} if "$campaign" in sql else {})
    return findings


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> int:
    return int(con.execute(sql, params).fetchall()[0][0])


def _check_sends(
    con: duckdb.DuckDBPyConnection, home: Path, spec: CampaignSpec, findings: Findings, outbox_days: list[date] | None
) -> None:
    findings.duplicate_sends = _count(
        con,
        """SELECT (SELECT count(*) - count(DISTINCT send_id) FROM raw.sends)
                + (SELECT count(*) - count(DISTINCT (campaign_id, lead_id)) FROM raw.sends)""",
        {},
    )
    outbox = home / "outbox"
    files = sorted(outbox.rglob("*.eml")) if outbox.exists() else []
    findings.outbox_temp_files = len(list(outbox.rglob(".*.tmp"))) if outbox.exists() else 0
    message_ids = {path: _message_id(path) for path in files}
    ids = Counter(message_ids.values())
    findings.duplicate_eml = sum(n - 1 for n in ids.values())
    sent = con.execute(
        """SELECT s.send_id, s.to_email, s.transport_ref, m.subject, m.body
           FROM raw.sends s LEFT JOIN raw.messages m USING (message_id)"""
    ).fetchall()
    sent_ids = {f"<{row[0]}@" for row in sent}
    folders = None if outbox_days is None else {d.isoformat() for d in outbox_days}
    findings.orphan_eml = sum(
        1
        for path in files
        if (folders is None or path.parent.name in folders) and message_ids[path].split("@")[0] + "@" not in sent_ids
    )
    for send_id, to_email, ref, subject, body in sent:
        # Where the transport said it put the message (a send may find it delivered on an earlier day).
        path = outbox / Path(ref).parent.name / Path(ref).name
        written_on = date.fromisoformat(path.parent.name)
        expected = _expected_eml(spec, send_id, written_on, to_email, subject, body) if subject is not None else None
        if expected is None or not path.exists() or path.read_bytes() != expected:
            findings.eml_mismatch += 1


def _message_id(path: Path) -> str:
    with open(path, "rb") as handle:
        return str(BytesHeaderParser().parse(handle).get("Message-ID", f"<no id: {path.name}>")).strip()


def _expected_eml(spec: CampaignSpec, send_id: str, day: date, to_email: str, subject: str, body: str) -> bytes:
    """The bytes the file transport writes for this message: what must be on disk."""
    message = OutgoingMessage(
        send_id=send_id,
        day=day,
        from_name=spec.sender.name,
        from_email=spec.sender.email,
        to_email=to_email,
        subject=subject,
        body=body,
        postal_address=spec.sender.postal_address,
    )
    return build_email(message).as_bytes(policy=SMTP)


def _check_lead_rows(con: duckdb.DuckDBPyConnection, home: Path, days: list[date], findings: Findings) -> None:
    """Every row of each completed day's lead file is in raw.leads or raw.leads_quarantine exactly once."""
    for day in days:
        path = (home / "inbox" / "leads" / f"leads_{day.isoformat()}.csv").resolve()
        if not path.exists():
            continue
        expected = count_csv_rows(path)
        stored, distinct = con.execute(
            """SELECT count(*), count(DISTINCT source_row) FROM (
                   SELECT source_row FROM raw.leads WHERE source_file = $file
                   UNION ALL SELECT source_row FROM raw.leads_quarantine WHERE source_file = $file)""",
            {"file": str(path)},
        ).fetchall()[0]
        findings.lead_rows_in += expected
        findings.lost_rows += max(0, expected - distinct)
        findings.duplicated_rows += stored - distinct
