"""Incidents: rows in `raw.incidents` that say what went wrong or was held, and why."""

from __future__ import annotations

import hashlib

import duckdb

from factory_dagster.run_context import RunContext, utcnow


def record_incident(con: duckdb.DuckDBPyConnection, run: RunContext, kind: str, severity: str, detail: str) -> str:
    """Write one incident; the same incident in the same run is written once."""
    incident_id = "inc_" + hashlib.sha256(f"{run.run_id}|{run.partition_day}|{kind}|{detail}".encode()).hexdigest()[:20]
    con.execute(
        """INSERT INTO raw.incidents (incident_id, partition_day, run_id, campaign_id, kind, severity, detail, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
        [incident_id, run.partition_day, run.run_id, run.campaign_id, kind, severity, detail, utcnow()],
    )
    return incident_id
