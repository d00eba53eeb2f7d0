"""Dagster wiring of the observe stage: outcome events and the suppression list."""

from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.delivery.config import ConfigError
from factory_dagster.feedback.esp_import import import_esp_event_files
from factory_dagster.feedback.imap_fetch import ImapFetchError, ImapSettings, fetch_replies, imap_configured
from factory_dagster.feedback.importer import import_event_files
from factory_dagster.feedback.reply_classes import classify_new_replies, replies_honoured, suppress_from_replies
from factory_dagster.feedback.reply_import import import_reply_files
from factory_dagster.feedback.suppression import import_suppression_files, suppress_from_events
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.models.ledger import write_ledger
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import fetch_one, transaction


def _events_accounted_for(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    files = con.execute(
        """SELECT f.file_path, f.rows_total, f.rows_accepted, f.rows_quarantined,
                  (SELECT count(*) FROM raw.events e WHERE e.source_file = f.file_path) AS stored
           FROM raw.intake_files f WHERE f.kind = 'events' AND f.status = 'imported' AND f.partition_day = ?""",
        [day],
    ).df()
    lost = files[(files.rows_accepted + files.rows_quarantined > files.rows_total) | (files.stored < files.rows_accepted)]
    return lost.empty, {
        "files": len(files),
        "rows": int(files.rows_total.sum()),
        "files_with_lost_rows": dg.MetadataValue.json(lost.file_path.tolist()),
    }


EVENT_CHECKS = (
    LineCheck(
        "events_accounted_for",
        "Every row of the day's event files is imported, quarantined or a known repeat.",
        _events_accounted_for,
    ),
)


@line_asset(group_name="observe", kinds={"duckdb", "pandera"}, check_specs=check_specs("outcome_events", *EVENT_CHECKS))
def outcome_events(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Outcome events (delivered … complained) from the event inbox; bad rows quarantined with reasons."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    if factory.simulate_market:
        # The market answers through the real doors: webhook events and reply e-mails as the feedback
        # receiver stores them, bookings as a CRM export (market/feedback.py).
        delivered = SimulatedMarket(factory.paths.market, seed=factory.market_seed).deliver_feedback(
            run.partition_day,
            spec.sender.email,
            factory.paths.esp_events_inbox,
            factory.paths.replies_inbox,
            factory.paths.events_inbox,
        )
        context.log.info(f"simulated market delivered {len(delivered)} files (webhook events, replies, CRM exports)")
    imap_fetched = 0
    if imap_configured():
        # Before the warehouse is opened, so the network wait holds no lock. A mailbox that cannot be
        # read is a warning, not a failed day: the next run catches up (nothing is marked fetched).
        try:
            fetched = fetch_replies(ImapSettings.from_env(), factory.paths.replies_inbox)
            imap_fetched = fetched.written
            context.log.info(fetched.summary())
        except (ConfigError, ImapFetchError) as exc:
            context.log.warning(f"replies from IMAP not fetched: {exc}")
    with factory.warehouse() as con:
        summary = import_event_files(con, factory.paths.events_inbox, run)
        # What the feedback receiver stored: ESP webhook events, one-click unsubscribes, inbound replies.
        esp = import_esp_event_files(con, factory.paths.esp_events_inbox, run)
        replies = import_reply_files(con, factory.paths.replies_inbox, run)
        # What each reply says (rules, cheap model, premium model), as events with the class.
        gateway = factory.gateway(context, spec)
        with transaction(con):
            classes = classify_new_replies(con, gateway, spec)
            write_ledger(con, gateway)
        checks = run_checks(con, spec, run.partition_day, *EVENT_CHECKS)
    for path, error in {**summary.rejected_files, **esp.rejected_files, **replies.rejected_files}.items():
        context.log.warning(f"rejected inbox file {path}: {error}")
    return dg.MaterializeResult(
        metadata={
            "files_imported": len(summary.files),
            "files_rejected": len(summary.rejected_files),
            "events": summary.accepted,
            "quarantined": summary.quarantined,
            "already_imported": summary.already_imported,
            "esp_files_imported": len(esp.files),
            "esp_events": esp.accepted,
            "esp_quarantined": esp.quarantined,
            "esp_skipped": dg.MetadataValue.json(dict(esp.skipped)),
            "esp_already_imported": esp.already_imported,
            "imap_replies_fetched": imap_fetched,
            "replies_stored": replies.stored,
            "replies_quarantined": replies.quarantined,
            "replies_classified": classes.classified,
            "replies_unclassified": classes.unclassified,
            "reply_classes": dg.MetadataValue.json(dict(classes.by_class)),
            "reply_events": classes.events,
            **gateway.usage(),
        },
        check_results=checks,
    )


SUPPRESSION_CHECKS = (
    LineCheck(
        "replies_honoured",
        "Every reply asking to stop (unsubscribe, negative) and every reply unclassified for 48 hours has its "
        "recipient suppressed before anything else is sent.",
        replies_honoured,
    ),
)


@line_asset(
    group_name="observe",
    deps=[outcome_events],
    kinds={"duckdb"},
    check_specs=check_specs("suppression_list", *SUPPRESSION_CHECKS),
)
def suppression_list(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Addresses and domains never to write to again: unsubscribes, complaints, bounces, replies that said no, do-not-contact files."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        with transaction(con):
            from_events = suppress_from_events(con, run)
            from_replies = suppress_from_replies(con, run)
        from_files = import_suppression_files(con, factory.paths.suppression_inbox, run)
        total = fetch_one(con, "SELECT count(*) FROM raw.suppression")[0]
        checks = run_checks(con, spec, run.partition_day, *SUPPRESSION_CHECKS)
    return dg.MaterializeResult(
        metadata={
            "added_from_events": from_events,
            "added_from_replies": from_replies,
            "added_from_files": from_files,
            "suppressed_total": total,
        },
        check_results=checks,
    )
