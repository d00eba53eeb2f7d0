"""Dagster wiring of the gate stage: `messages` and the blocking checks before sending."""

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.holds import hold_day
from factory_dagster.controls.incidents import record_incident
from factory_dagster.drafting.assets import deferral_detail, drafts
from factory_dagster.drafting.work import clear_unsent, unsent_work
from factory_dagster.gates.audit import audit_messages, audit_sample, hold_reason
from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.gates.consistency import CODES as CONSISTENCY_CODES
from factory_dagster.gates.consistency import CONSISTENCY_LOCK, load_earlier, stored_inconsistencies
from factory_dagster.gates.pipeline import GATE_TABLES, CandidateReader, run_gates
from factory_dagster.gates.schemas import message_failures
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.ledger import flush_ledger, write_ledger
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import exclusive, fetch_one, insert_rows, replace_partition, transaction


def _messages_match_schema(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    return stored_rows_check(con, spec, day, "messages", message_failures)


def _gate_pass_rate_above_floor(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    accepted, quarantined = gate_counts(con, day, spec.campaign_id)
    total = accepted + quarantined
    return pass_rate_hold_reason(accepted, quarantined, spec) is None, {  # the same rule that held the day
        "leads": total,
        "messages": accepted,
        "quarantined": quarantined,
        "pass_rate": accepted / total if total else 1.0,
        "floor": spec.limits.min_gate_pass_rate,
    }


def _messages_consistent_with_earlier(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date
) -> tuple[bool, Mapping[str, Any]]:
    findings = stored_inconsistencies(con, spec, day)
    return findings.empty, {
        "findings": len(findings),
        "max_similarity": spec.consistency.max_similarity,
        "lookback_days": spec.consistency.lookback_days,
        "failing_messages": dg.MetadataValue.md(findings.head(20).to_markdown(index=False) if not findings.empty else "none"),
    }


def _audit_failure_rate_below_limit(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date
) -> tuple[bool, Mapping[str, Any]]:
    audits = con.execute("SELECT * FROM raw.audits WHERE partition_day = ? AND campaign_id = ?", [day, spec.campaign_id]).df()
    reason = hold_reason(audits, spec) if not audits.empty else None
    failing = audits[~audits.passed] if not audits.empty else audits
    return reason is None, {
        "audited": len(audits),
        "failed": len(failing),
        "limit": spec.audit.max_failure_rate,
        "verdict": reason or "within the limit",
        "failing_audits": dg.MetadataValue.md(
            failing[["message_id", "lead_id", "status", "reasons"]].head(20).to_markdown(index=False)
            if not failing.empty
            else "none"
        ),
    }


# What the gate reads of each candidate draft: not the run stamps, which it does not use and a large day has 300,000 of.
CANDIDATE_COLUMNS = (
    "draft_id",
    "lead_id",
    "arm_id",
    "candidate_index",
    "attempt",
    "model",
    "prompt_version",
    "subject",
    "body",
    "parse_error",
)
MESSAGE_CHECKS = (
    LineCheck(
        "messages_match_schema", "Stored messages pass the Pandera message schema built from the spec.", _messages_match_schema
    ),
    LineCheck(
        "gate_pass_rate_above_floor",
        "Share of the day's leads that got a message stays above the spec's pass-rate floor.",
        _gate_pass_rate_above_floor,
    ),
    LineCheck(
        "messages_consistent_with_earlier",
        "No stored message repeats a colleague's message going out the same day or contradicts what its "
        "company was already sent.",
        _messages_consistent_with_earlier,
    ),
)
AUDIT_CHECKS = (
    LineCheck(
        "audit_failure_rate_below_limit",
        "The sampled premium audit's failure rate stays under the spec's limit.",
        _audit_failure_rate_below_limit,
    ),
)


@line_asset(
    group_name="gate",
    deps=[drafts],
    kinds={"duckdb", "pandera"},
    check_specs=check_specs("messages", *MESSAGE_CHECKS),
)
def messages(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """The one message per lead that passed every rule; repaired, escalated or quarantined otherwise."""
    spec = factory.spec(context)
    gateway = factory.gateway(context, spec)
    day = gateway.run.partition_day
    with factory.warehouse() as con, exclusive(con, CONSISTENCY_LOCK):  # on PostgreSQL, campaigns' gates take turns
        return _gate_day(context, factory, spec, gateway, day)


def _gate_day(
    context: dg.AssetExecutionContext, factory: FactoryResource, spec: CampaignSpec, gateway: ModelGateway, day: date
) -> dg.MaterializeResult:
    with factory.warehouse() as con:
        work = unsent_work(con, day, spec.campaign_id)
        history = load_earlier(con, spec, day, work)

    output = run_gates(gateway, spec, work, candidate_reader(factory, spec, day), history, after_calls=ledger_writer(factory))
    leads = len(work)
    deferred, postponed = output.deferred, output.postponed
    passed = output.results.columns.get("passed", [])
    codes = Counter(code for found in output.results.columns.get("violation_codes", ()) for code in found)
    counts = {
        "leads": leads,
        "messages": len(output.messages),
        "quarantined": len(output.quarantine),
        "draft_pass_rate": sum(passed) / len(passed) if passed else 0.0,
        "repair_or_escalation_drafts": len(output.drafts),
    }
    del work, history, passed  # what the gate compared against is let go before the inserts copy its output
    with factory.warehouse() as con:
        with transaction(con):
            clear_unsent(con, "drafts", day, spec.campaign_id, where="attempt > 0")
            for table in ("gate_results", "messages", "messages_quarantine"):
                clear_unsent(con, table, day, spec.campaign_id)
            for table in GATE_TABLES:  # one table's frame at a time, its rows let go once written
                rows = output.take(table)
                if table == "messages":
                    rows = rows.assign(spec_version=spec.spec_version)
                rows = gateway.run.stamp(rows)  # `assign` copies: the unstamped frame goes before the insert runs
                insert_rows(con, table, rows)
                del rows
            flush_ledger(con, gateway)
            if deferred:
                record_incident(
                    con,
                    gateway.run,
                    "budget_reached",
                    "warning",
                    deferral_detail("gating", deferred, spec.limits.daily_budget_usd),
                )
            # The blocking floor check skips today's send step only; the hold keeps the day's messages
            # out of every later send too, until an operator has looked.
            floor_hold = pass_rate_hold_reason(*gate_counts(con, day, spec.campaign_id), spec)
            if floor_hold:
                hold_day(con, gateway.run, floor_hold)
                record_incident(con, gateway.run, "pass_rate_hold", "critical", floor_hold)
        metadata = {
            **counts,
            "leads_deferred_by_budget": len(deferred),
            "leads_postponed_near_duplicate": len(postponed),
            "held": floor_hold or "no",
            **{f"drafts_{code}": codes[code] for code in sorted(CONSISTENCY_CODES)},
            **gateway.usage(),
        }
        # The checks read the day's messages back and gate them again: without the gate's own copies alongside.
        del output, gateway
        checks = run_checks(con, spec, day, *MESSAGE_CHECKS)
    if floor_hold:
        context.log.error(floor_hold)
    if postponed:
        context.log.info(f"{len(postponed)} leads wait for tomorrow: every draft read like a colleague's message going out today")
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def candidate_reader(factory: FactoryResource, spec: CampaignSpec, day: date) -> CandidateReader:
    """The day's candidate drafts of some leads, read from the warehouse when the gate comes to them."""

    def read(lead_ids: list[str]) -> pd.DataFrame:
        with factory.warehouse() as con:
            return con.execute(
                f"""SELECT {", ".join(CANDIDATE_COLUMNS)} FROM raw.drafts
                    WHERE partition_day = $day AND campaign_id = $campaign AND attempt = 0
                      AND lead_id IN (SELECT unnest($leads::VARCHAR[]))""",
                {"day": day, "campaign": spec.campaign_id, "leads": lead_ids},
            ).df()

    return read


def ledger_writer(factory: FactoryResource) -> Callable[[ModelGateway], None]:
    """What the gate does after each batch of calls: the calls and answers go to the ledger and the cache at
    once, in their own transaction. Every call made is then spent whatever happens next, a re-run reads the
    answers from the cache, and a large day's calls are not all held; the day's verdicts still go in one
    transaction at the end (the send step reads them)."""

    def write(gateway: ModelGateway) -> None:
        with factory.warehouse() as con, transaction(con):
            flush_ledger(con, gateway)

    return write


def gate_counts(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str) -> tuple[int, int]:
    """(leads with a message, leads quarantined) of the day's gate."""
    counts = fetch_one(
        con,
        """SELECT (SELECT count(*) FROM raw.messages WHERE partition_day = $day AND campaign_id = $campaign),
                  (SELECT count(*) FROM raw.messages_quarantine WHERE partition_day = $day AND campaign_id = $campaign)""",
        {"day": day, "campaign": campaign_id},
    )
    return (counts[0], counts[1]) if counts else (0, 0)


def pass_rate_hold_reason(accepted: int, quarantined: int, spec: CampaignSpec) -> str | None:
    """Why the day's sends are held because too few leads passed the gate, else None."""
    total = accepted + quarantined
    floor = spec.limits.min_gate_pass_rate
    if not total or accepted / total >= floor:
        return None
    return (
        f"The gate passed {accepted} of {total} leads ({accepted / total:.0%}, below the spec's floor of {floor:.0%}); "
        f"{quarantined} were quarantined with their reasons. The day's sends are held until an operator reviews them."
    )


@line_asset(
    group_name="gate",
    deps=[messages],
    kinds={"duckdb"},
    check_specs=check_specs("message_audit", *AUDIT_CHECKS),
)
def message_audit(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """A premium judge scores a sample of the day's messages against the spec's rubric.

    When more of the sample fails than the spec allows, the day is held: its messages stay in
    the outbox until an operator releases them, and an incident says why.
    """
    spec = factory.spec(context)
    gateway = factory.gateway(context, spec, audit=True)
    day = gateway.run.partition_day
    with factory.warehouse() as con:
        todays = con.execute(
            """SELECT m.*, l.first_name, l.last_name, l.company, l.role, l.industry, l.segment
               FROM raw.messages m JOIN raw.leads l USING (campaign_id, lead_id)
               WHERE m.partition_day = ? AND m.campaign_id = ?""",
            [day, spec.campaign_id],
        ).df()
    audits = audit_messages(gateway, spec, audit_sample(todays, spec, day))
    reason = hold_reason(audits, spec) if not audits.empty else None
    with factory.warehouse() as con:
        with transaction(con):
            replace_partition(con, "audits", day, gateway.run.stamp(audits), spec.campaign_id)
            write_ledger(con, gateway)
            if reason:
                hold_day(con, gateway.run, reason)
                record_incident(con, gateway.run, "audit_hold", "critical", reason)
        checks = run_checks(con, spec, day, *AUDIT_CHECKS)
    if reason:
        context.log.error(reason)
    return dg.MaterializeResult(
        metadata={
            "messages": len(todays),
            "audited": len(audits),
            "failed": int((~audits.passed).sum()) if not audits.empty else 0,
            "held": reason or "no",
            **gateway.usage(),
        },
        check_results=checks,
    )
