"""Dagster wiring of the learn stage: the dbt build, and the anomaly guard after it."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_dbt import dbt_assets
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

from factory_dagster.controls.incidents import record_incident
from factory_dagster.controls.kill_switch import kill_switch_state, set_kill_switch
from factory_dagster.learning import view_reuse
from factory_dagster.learning.dbt_project import INTEGRITY_TAG, FactoryDbtTranslator, ensure_manifest, prior_day_specs
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.learning.marts import halt_reason
from factory_dagster.partitions import CAMPAIGN_DAYS, ONE_DAY_PER_RUN
from factory_dagster.resources import POOL, FactoryResource, line_asset
from factory_dagster.warehouse.store import exclusive

MANIFEST = ensure_manifest()
MANIFEST_JSON = json.loads(MANIFEST.read_text())
TRANSLATOR = FactoryDbtTranslator()
ANOMALIES = dg.AssetKey(["marts", "anomalies"])
PRIOR_DAYS = prior_day_specs(MANIFEST_JSON)
VIEWS = view_reuse.view_nodes(MANIFEST_JSON)


def _output_name(unique_id: str) -> str:
    return TRANSLATOR.get_asset_spec(MANIFEST_JSON, unique_id, None).key.to_python_identifier()


BUILD_ORDER = {_output_name(unique_id): rank for rank, unique_id in enumerate(view_reuse.model_order(MANIFEST_JSON))}
REUSED_VIEW_METADATA = {
    "status": "reused",
    "why": "the view the current project defines is in place: not rebuilt (its tests ran)",
}


@contextmanager
def _one_build_at_a_time(factory: FactoryResource) -> Iterator[None]:
    """On PostgreSQL campaign runs write at once, and two dbt builds would replace the same relations together: the
    build holds the warehouse lock `dbt-build`. On the DuckDB file (one writer, and dbt opens the file itself) no lock."""
    if factory.paths.warehouse_url is None:
        yield
        return
    with factory.warehouse() as con, exclusive(con, "dbt-build"):
        yield


def _reconciliation_vars(context: dg.AssetExecutionContext, factory: FactoryResource) -> list[str]:
    """On PostgreSQL other campaigns' runs write raw rows during this build, so the tests that reconcile marts with
    raw compare this run's campaign only (macro `reconciled_rows`); on the DuckDB file, one writer, every campaign."""
    if factory.paths.warehouse_url is None:
        return []
    return ["--vars", json.dumps({"reconcile_campaign": factory.configured_spec(context).campaign_id})]


# One campaign's day per run, like every other stage of the line: the days build on each other. The build
# covers every campaign (the marts are shared); each campaign's run refreshes them after its own observe stage.
@dbt_assets(
    manifest=MANIFEST,
    dagster_dbt_translator=TRANSLATOR,
    exclude=f"tag:{INTEGRITY_TAG}",
    partitions_def=CAMPAIGN_DAYS,
    backfill_policy=ONE_DAY_PER_RUN,
    pool=POOL,
)
def dbt_marts(context: dg.AssetExecutionContext, factory: FactoryResource):
    """`dbt build`, in this process: staging → intermediate → marts, with the dbt tests as checks.

    The whole project's build leaves the views in place when they are the ones the current project built
    (`view_reuse`): each is recorded as materialized with status `reused`, and its tests run as every day.
    """
    warehouse, target, url = factory.paths.warehouse, factory.paths.home / "dbt_target", factory.paths.warehouse_url
    whole = not context.is_subset
    # View reuse reads DuckDB's catalog; on the PostgreSQL warehouse every build builds its views.
    reuse = whole and url is None and view_reuse.reusable(warehouse, target, VIEWS)
    if reuse:
        args = view_reuse.build_args_without_views(MANIFEST_JSON, exclude=f"tag:{INTEGRITY_TAG}")
        events: list[object] = [
            dg.Output(None, output_name=_output_name(unique_id), metadata=REUSED_VIEW_METADATA | {"unique_id": unique_id})
            for unique_id in VIEWS
        ]
    else:
        selection = get_updated_cli_invocation_params_for_context(context, MANIFEST_JSON, TRANSLATOR)
        indirect = ["--indirect-selection", selection.indirect_selection] if selection.indirect_selection else []
        args, events = [*selection.selection_args, *indirect], []
    with _one_build_at_a_time(factory):
        run = invoke(["build", *args, *_reconciliation_vars(context, factory)], warehouse, target, warehouse_url=url)
    events += [
        event
        for raw in run.results
        for event in DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={}).to_default_asset_events(
            manifest=MANIFEST_JSON, dagster_dbt_translator=TRANSLATOR, context=context
        )
    ]
    # A multi-asset yields its outputs in the project's order (a reused view may feed a rebuilt table and the
    # reverse), then the tests' results.
    yield from sorted(events, key=lambda e: BUILD_ORDER[e.output_name] if isinstance(e, dg.Output) else len(BUILD_ORDER))
    if not reuse and url is None:
        if whole and run.success:
            view_reuse.record(warehouse, target, VIEWS)
        else:
            view_reuse.forget(target)
    if not run.success:
        raise dg.Failure(description=f"dbt build failed: {run.describe_failure()}")


@line_asset(group_name="learn", deps=[ANOMALIES], kinds={"duckdb"})
def send_guard(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Engages the campaign's kill switch when `marts.anomalies` flags a complaint or bounce spike for its day."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        reason = halt_reason(con, spec.campaign_id, run.partition_day)
        state = kill_switch_state(con, spec.campaign_id)
        if reason and not state.engaged:  # this campaign's spike stops this campaign, not the others
            state = set_kill_switch(con, True, "anomaly_guard", reason, spec.campaign_id)
            record_incident(con, run, "kill_switch_engaged", "critical", reason)
            context.log.error(f"kill switch engaged: {reason}")
    return dg.MaterializeResult(
        metadata={
            "kill_switch": f"engaged ({state.scope})" if state.engaged else "off",
            "reason": state.reason,
            "anomaly": reason or "none",
        }
    )
