"""Dagster wiring of the content line's day: pieces (brief → variants → gate → audit → approval), then publish and
engagement. The logic is in `content.stages`, `review`, `publish`, `audience` and `engagement`; these assets only
load the content spec, hand the stations a gateway and the warehouse, and say what happened in their metadata.

Two assets, not seven: each Dagster step costs about a tenth of a second a day, and the content line shares the
outreach line's time budget in `make run`. Its marts are built with the outreach line's dbt build (tag `content`).
"""

from dataclasses import asdict
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.spec import SpecError
from factory_dagster.content.audience import SimulatedAudience
from factory_dagster.content.cli import content_spec_path, published_folder
from factory_dagster.content.edit_proposals import decide_prompt_experiment, prompt_versions, propose_from_edits
from factory_dagster.content.edits import edit_lessons, with_edit_notes
from factory_dagster.content.engagement import Variants, import_engagement_files
from factory_dagster.content.experiments import (
    Learned,
    allocate_day,
    decide_pieces,
    finished_pieces,
    learn,
    open_piece_experiments,
    published_variants,
    variant_counts,
)
from factory_dagster.content.publish import publish_day, publish_shares, published_days
from factory_dagster.content.review import approved_variants, auto_approve, published_texts, queue, store_pieces
from factory_dagster.content.sources import mark_used, pending_sources, sources_inbox
from factory_dagster.content.spec import ContentSpec, load_content_spec
from factory_dagster.content.stages import audit_pieces, write_briefs, write_variants
from factory_dagster.improve.decisions import start_approved
from factory_dagster.models.ledger import write_ledger
from factory_dagster.partitions import DAILY
from factory_dagster.resources import FactoryResource, day_asset, partition_day
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import transaction

AUDIT_SAMPLE = 0.1  # of the passed variants, beside every flagged one


def content_spec() -> ContentSpec:
    """The content spec (`FACTORY_CONTENT_SPEC`, else the example); an invalid one fails the step with file and field."""
    try:
        return load_content_spec(content_spec_path(None))
    except SpecError as exc:
        raise dg.Failure(description=str(exc)) from exc


def engagement_inbox(home: Path) -> Path:
    """Where LinkedIn and GA4 exports are dropped (`linkedin/`, `ga4/`), by people or the simulated audience."""
    return home / "inbox" / "content_engagement"


def day_close(day: date) -> datetime:
    """When the content line's decisions of a day are stamped: at its close, as the outreach loop's."""
    return datetime.combine(day, time(18, 0))


def day_learning(con: duckdb.DuckDBPyConnection, spec: ContentSpec, day: date, published: pd.DataFrame) -> Learned:
    """What the pieces whose test ended before `day` teach: the cross-piece prior and each channel's typical rate."""
    counts = variant_counts(con, spec.content_id, day)
    return learn(finished_pieces(published, counts, day, spec.cadence.test_days), spec.cadence.test_days)


def guidance(learned: Learned) -> dict[str, Any] | None:
    """What earlier pieces teach the next briefs: the prior's feature effects (None before any piece finished)."""
    return {"feature_effects": learned.prior.describe()} if learned.pieces else None


@day_asset(group_name="content", kinds={"duckdb"})
def content_pieces(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """The day's pieces: briefs by the premium model (with the earlier pieces' lessons, what operators' edits
    taught and, when dropped in the inbox, outside text as data), variants by the cheap model (the variants prompt
    of the piece's arm while a prompt experiment runs), each gated; the premium judge audits the flagged ones and a
    sample; what passed both is approved by the line, the rest waits for a person (`factory content list`)."""
    spec = content_spec()
    day = partition_day(context)
    gateway = factory.content_gateway(context, spec, spec.daily_budget_usd)
    at = day_close(day)
    with factory.warehouse() as con:
        started = start_approved(con, spec.content_id, day, gateway.run.run_id, at)  # one prompt experiment at a time
        published = published_texts(con, spec.content_id, day)
        learned = day_learning(con, spec, day, published_variants(published_days(published_folder(factory.paths))))
        taught = edit_lessons(con, spec.content_id, day)
        proposal = propose_from_edits(con, spec, taught, gateway.run, at)
        lessons = with_edit_notes(guidance(learned), taught)
        sources = pending_sources(con, sources_inbox(factory.paths.home), gateway.run, spec.cadence.pieces_per_day)
    briefs, notes = write_briefs(gateway, spec, day, lessons, [s.text for s in sources])
    with factory.warehouse() as con:
        versions = prompt_versions(con, spec.content_id, [str(p) for p in briefs.get("piece_id", [])])
    variants, more = write_variants(gateway, spec, briefs, published, versions)
    audits = audit_pieces(gateway, spec, variants, AUDIT_SAMPLE, f"{spec.content_id}|{day}")
    with factory.warehouse() as con:
        with transaction(con):
            write_ledger(con, gateway)
        stored = store_pieces(  # its own transaction
            con,
            variants,
            content_id=spec.content_id,
            day=day,
            run_id=gateway.run.run_id,
            spec_version=spec.spec_version,
            audits=audits,
        )
        used = [s for s in sources if not briefs.empty and s.text in set(briefs["brief_source"].dropna())]
        mark_used(con, gateway.run, used)
        approved = auto_approve(con, spec.content_id, day)
        waiting = queue(con, spec.content_id, day)
        prompt_look = decide_prompt_experiment(con, spec.content_id, gateway.run, at)
    for note in [*notes, *more]:
        context.log.warning(note)
    flagged = int((variants["gate_verdict"] == "flagged").sum()) if not variants.empty else 0
    return dg.MaterializeResult(
        metadata={
            "briefs": len(briefs),
            "variants": len(variants),
            "stored": stored,
            "flagged_by_gate": flagged,
            "audited": int((audits["audit_status"] == "audited").sum()) if not audits.empty else 0,
            "auto_approved": len(approved),
            "waiting_for_a_person": len(waiting),
            "quarantined_or_deferred": len(notes) + len(more),
            "outside_sources": dg.MetadataValue.json([str(s.path) for s in used]),
            "guidance": dg.MetadataValue.json(lessons or {}),
            "prompt_experiment": dg.MetadataValue.json(
                {
                    "proposal": proposal.reason,
                    "started": [o.experiment_id for o in started if o.action == "started"],
                    "look": prompt_look,
                }
            ),
            **gateway.usage(),
        }
    )


@day_asset(group_name="content", deps=[content_pieces], kinds={"duckdb"})
def content_engagement(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Publish the day's approved variants (scheduler CSV and JSON, UTM-tagged); open each new piece's variant
    experiment; split every live piece's audience over its variants (allocation.csv); let the simulated audience
    answer in the demo; import every new engagement export, each row accepted or quarantined; and take the day's
    look at every running piece experiment."""
    spec = content_spec()
    day = partition_day(context)
    run = RunContext(context.run.run_id, day, spec.campaign_id)
    at = day_close(day)
    folder = published_folder(factory.paths)
    inbox = engagement_inbox(factory.paths.home)
    with factory.warehouse() as con:
        approved = approved_variants(con, day, spec.content_id)
    if not approved.empty:
        publish_day(approved, day, folder, campaign=spec.content_id)
    published = published_variants(published_days(folder))
    with factory.warehouse() as con:
        learned = day_learning(con, spec, day, published)
        opened = open_piece_experiments(con, spec, published[published["day"] == day], learned, run, at)
        shares = allocate_day(con, spec, published, learned, run)
    if not shares.empty:
        publish_shares(shares, day, folder)
    if factory.simulate_market and not shares.empty:
        live = shares[["variant_id", "share"]].merge(published.drop(columns="day"), on="variant_id")
        SimulatedAudience(seed=factory.market_seed, campaign=spec.content_id).answer_day(live, day, inbox)
    with factory.warehouse() as con:
        variants = Variants.from_pieces(published) if not published.empty else None
        summary = import_engagement_files(con, inbox, run, variants) if variants is not None else None
        looks = decide_pieces(con, spec.content_id, run, at)
    return dg.MaterializeResult(
        metadata={
            "published": len(approved),
            "folder": dg.MetadataValue.path(str(folder / str(day))),
            "experiments_opened": len(opened),
            "live_pieces": int(shares["piece_id"].nunique()) if not shares.empty else 0,
            "looks": dg.MetadataValue.json([asdict(look) for look in looks]),
            "engagement": dg.MetadataValue.json(asdict(summary) if summary is not None else {}),
        }
    )


CONTENT_ASSETS = [content_pieces, content_engagement]
content_line = dg.define_asset_job("content_line", selection=dg.AssetSelection.assets(*CONTENT_ASSETS), partitions_def=DAILY)
