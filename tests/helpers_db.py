"""Builders for a small, realistic warehouse state in a temporary DuckDB file.

The rows are shaped exactly like the `raw` contracts (ids from the line's own id
functions, the example campaign's segments and angles), so the functions under test
see what the real stages would have written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.assignment.policy import POLICY_VERSION, arm_id
from factory_dagster.campaign.spec import load_spec
from factory_dagster.gates.pipeline import send_id_for
from factory_dagster.intake.validation import lead_id_for
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH
from factory_dagster.warehouse.store import insert_rows

SPEC = load_spec(DEFAULT_SPEC_PATH)
CAMPAIGN = SPEC.campaign_id
OTHER_CAMPAIGN = "harbour-payroll"
DAY = date(2026, 3, 2)
DRAFT_MODEL = SPEC.routing["draft"]


def run_for(day: date = DAY, run_id: str | None = None, campaign_id: str = CAMPAIGN) -> RunContext:
    return RunContext(run_id or f"run-{day.isoformat()}-a1b2", day, campaign_id)


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def count(con: duckdb.DuckDBPyConnection, table: str, where: str = "TRUE", params: list | None = None) -> int:
    return con.execute(f"SELECT count(*) FROM raw.{table} WHERE {where}", params or []).fetchall()[0][0]


@dataclass(frozen=True)
class Lead:
    email: str
    first_name: str
    last_name: str
    company: str
    industry: str
    company_size: int
    role: str
    seniority: str
    region: str
    note: str | None = None

    @property
    def lead_id(self) -> str:
        return lead_id_for(self.email)

    @property
    def segment(self) -> str:
        return SPEC.segment_for(self.__dict__)


LEADS: tuple[Lead, ...] = (
    Lead(
        "anna.berg@northwind-labs.example",
        "Anna",
        "Berg",
        "Northwind Labs AB",
        "Software",
        250,
        "Finance Director",
        "Director",
        "Nordics",
        "Met at FinOps Summit",
    ),
    Lead(
        "jmueller@kranwerk.example",
        "Jürgen",
        "Müller",
        "Kranwerk GmbH",
        "Manufacturing",
        640,
        "Financial Controller",
        "Manager",
        "DACH",
    ),
    Lead(
        "siobhan.obrien@tallyfield.example",
        "Siobhán",
        "O'Brien",
        "Tallyfield Ltd",
        "Professional Services",
        45,
        "CFO",
        "C-level",
        "UK & Ireland",
    ),
    Lead(
        "pvandijk@grachtlogistics.example",
        "Pieter",
        "van Dijk",
        "Gracht Logistics B.V.",
        "Logistics",
        1800,
        "Head of Finance",
        "Director",
        "Benelux",
        "On Exact, close takes 9 days",
    ),
    Lead(
        "maria.garcia@cedarpay.example", "María", "García", "Cedarpay Inc.", "Fintech", 320, "VP Finance", "VP", "North America"
    ),
    Lead(
        "lars.nystrom@fjordretail.example",
        "Lars",
        "Nyström",
        "Fjord Retail AS",
        "Retail",
        90,
        "Accounting Manager",
        "Manager",
        "Nordics",
    ),
)


def stamp(rows: list[dict[str, Any]], run: RunContext, time_column: str = "created_at") -> pd.DataFrame:
    return run.stamp(pd.DataFrame(rows), time_column)


def add_leads(
    con: duckdb.DuckDBPyConnection, leads: tuple[Lead, ...] | list[Lead], day: date = DAY, campaign_id: str = CAMPAIGN
) -> None:
    rows = [
        {
            "lead_id": lead.lead_id,
            "source_file": f"/srv/factory/inbox/leads/leads_{day.isoformat()}.csv",
            "source_row": i + 2,
            **lead.__dict__,
            "segment": lead.segment,
        }
        for i, lead in enumerate(leads)
    ]
    insert_rows(con, "leads", stamp(rows, run_for(day, campaign_id=campaign_id), "imported_at"))


def add_assignment(
    con: duckdb.DuckDBPyConnection,
    lead: Lead,
    day: date = DAY,
    angle: str = "close_speed",
    prompt_version: str = "draft-v1",
    campaign_id: str = CAMPAIGN,
) -> None:
    row = {
        "spec_version": SPEC.spec_version,
        "lead_id": lead.lead_id,
        "segment": lead.segment,
        "arm_id": arm_id(angle, prompt_version, DRAFT_MODEL),
        "angle": angle,
        "prompt_version": prompt_version,
        "model": DRAFT_MODEL,
        "propensity": 0.3125,
        "policy_version": POLICY_VERSION,
        "reason": f"thompson draw in segment {lead.segment}: p_best 0.31, exploration floor 0.10",
    }
    insert_rows(con, "assignments", stamp([row], run_for(day, campaign_id=campaign_id), "assigned_at"))


def message_body(lead: Lead) -> str:
    return (
        f"Hi {lead.first_name},\n\n"
        f"Month-end at {lead.company} probably still means long evenings of reconciliations. "
        "Teams using Brightwave close the month up to 4 days faster, and reconciliations run "
        "automatically every night, so your team starts day one with matched accounts.\n\n"
        f"{SPEC.required.call_to_action}\n\nMaya Okafor\nBrightwave Ledger\n\n{SPEC.required.unsubscribe_footer}"
    )


def add_message(
    con: duckdb.DuckDBPyConnection,
    lead: Lead,
    day: date = DAY,
    angle: str = "close_speed",
    prompt_version: str = "draft-v1",
    campaign_id: str = CAMPAIGN,
    assign: bool = True,
) -> dict[str, Any]:
    """An accepted message (and, unless told otherwise, the lead's assignment); returns the message row."""
    if assign:
        add_assignment(con, lead, day, angle, prompt_version, campaign_id)
    row = {
        "message_id": "msg_" + hashlib.sha256(f"{campaign_id}|{lead.lead_id}|{day}".encode()).hexdigest()[:20],
        "send_id": send_id_for(campaign_id, lead.lead_id),
        "spec_version": SPEC.spec_version,
        "lead_id": lead.lead_id,
        "to_email": lead.email,
        "arm_id": arm_id(angle, prompt_version, DRAFT_MODEL),
        "angle": angle,
        "prompt_version": prompt_version,
        "model": DRAFT_MODEL,
        "draft_id": "drf_" + hashlib.sha256(f"{lead.lead_id}|{day}|0".encode()).hexdigest()[:20],
        "subject": f"{lead.company}: closing the month in fewer days",
        "body": message_body(lead),
    }
    insert_rows(con, "messages", stamp([row], run_for(day, campaign_id=campaign_id)))
    return {**row, "partition_day": day, "campaign_id": campaign_id, "segment": lead.segment}


def add_send(con: duckdb.DuckDBPyConnection, message: dict[str, Any], day: date = DAY) -> str:
    """A `raw.sends` row for a message, sent on `day`; returns its send_id."""
    row = {
        "send_id": message["send_id"],
        "message_id": message["message_id"],
        "message_day": message["partition_day"],
        "spec_version": message["spec_version"],
        "lead_id": message["lead_id"],
        "to_email": message["to_email"],
        "segment": message["segment"],
        "arm_id": message["arm_id"],
        "angle": message["angle"],
        "prompt_version": message["prompt_version"],
        "model": message["model"],
        "subject": message["subject"],
        "body_sha256": hashlib.sha256(message["body"].encode()).hexdigest(),
        "transport": "file",
        "transport_ref": f"/srv/factory/outbox/{day.isoformat()}/{message['send_id']}.eml",
    }
    insert_rows(con, "sends", stamp([row], run_for(day, campaign_id=message["campaign_id"]), "sent_at"))
    return row["send_id"]


def add_plan(
    con: duckdb.DuckDBPyConnection, segment: str, angle: str, hook: str, day: date = DAY, campaign_id: str = CAMPAIGN
) -> None:
    row = {
        "spec_version": SPEC.spec_version,
        "segment": segment,
        "angle": angle,
        "hook": hook,
        "claims": list(SPEC.angle(angle).claims),
        "model": SPEC.routing["plan"],
        "prompt_version": "plan-v1",
    }
    insert_rows(con, "plans", stamp([row], run_for(day, campaign_id=campaign_id)))


def add_llm_call(
    con: duckdb.DuckDBPyConnection, cost_usd: float, day: date = DAY, campaign_id: str = CAMPAIGN, n: int = 0
) -> None:
    run = run_for(day, campaign_id=campaign_id)
    row = {
        "call_id": "call_" + hashlib.sha256(f"{run.run_id}|{campaign_id}|{n}|{cost_usd}".encode()).hexdigest()[:20],
        "stage": "plan",
        "provider": "offline",
        "model": SPEC.routing["plan"],
        "prompt_version": "plan-v1",
        "lead_id": None,
        "tokens_in": 1850,
        "tokens_out": 420,
        "cost_usd": cost_usd,
        "latency_ms": 812.5,
        "status": "ok",
        "mode": "offline",
        "retries": 0,
        "reasks": 0,
        "cache_hit": False,
        "fallback_used": False,
        "error": None,
    }
    insert_rows(con, "llm_calls", stamp([row], run))


def add_suppression(con: duckdb.DuckDBPyConnection, email: str, reason: str = "unsubscribed", day: date = DAY) -> None:
    con.execute(
        "INSERT INTO raw.suppression VALUES (?, ?, ?, ?, ?)",
        [email, reason, "event:evt_seed", day, datetime.combine(day, datetime.min.time()) + timedelta(hours=9)],
    )
