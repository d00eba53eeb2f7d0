"""Import every new lead file of the inbox into `raw.leads` / `raw.leads_quarantine`.

A file is identified by its content hash and imported once; re-runs skip it. A file
that cannot be read at all is recorded as rejected (with the error naming file, row
and column) plus an incident, and the other files go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.intake.reading import LeadFileError, list_lead_files, read_lead_file
from factory_dagster.intake.validation import validate_leads
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.file_registry import register_file, reject_file, unregistered_files
from factory_dagster.warehouse.store import insert_rows, transaction


@dataclass
class IntakeSummary:
    files: list[str] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0


def import_lead_files(con: duckdb.DuckDBPyConnection, inboxes: list[Path], spec: CampaignSpec, run: RunContext) -> IntakeSummary:
    """Each inbox's new files, for the run's campaign: a file is new to a campaign until that campaign imported it,
    and an address is a duplicate only among the campaign's own leads (a person may be a lead of several campaigns)."""
    summary = IntakeSummary()
    known_emails = {
        row[0] for row in con.execute("SELECT email FROM raw.leads WHERE campaign_id = ?", [run.campaign_id]).fetchall()
    }
    files = [path for inbox in inboxes for path in list_lead_files(inbox)]
    for path, sha in unregistered_files(con, "leads", files, campaign_id=run.campaign_id):
        try:
            raw = read_lead_file(path)
        except LeadFileError as exc:
            reject_file(con, run, "leads", path, sha, str(exc))
            summary.rejected_files[str(path)] = str(exc)
            continue
        accepted, quarantined = validate_leads(raw, spec, known_emails)
        known_emails |= set(accepted["email"])
        with transaction(con):
            insert_rows(con, "leads", run.stamp(accepted, "imported_at"))
            insert_rows(con, "leads_quarantine", run.stamp(quarantined, "imported_at"))
            register_file(con, run, "leads", path, sha, (len(raw), len(accepted), len(quarantined)))
        summary.files.append(str(path))
        summary.rows += len(raw)
        summary.accepted += len(accepted)
        summary.quarantined += len(quarantined)
    return summary
