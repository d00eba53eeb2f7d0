"""Dagster wiring of the learn stage: the dbt build, and the anomaly guard after it."""

import json

import dagster as dg
from dagster_dbt import dbt_assets
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

from factory_dagster.controls.incidents import record_incident
from factory_dagster.controls.kill_switch import kill_switch_state, set_kill_switch
from factory_dagster.learning import view_reuse
from factory_dagster.learning.build_log import Build, covering_build, database_now, record_build
from factory_dagster.learning.dbt_project import INTEGRITY_TAG, FactoryDbtTranslator, prior_day_specs
from factory_dagster.learning.dbt_runner import DbtRun, invoke
from factory_dagster.learning.manifest import ensure_manifest
from factory_dagster.learning.marts import halt_reason
from factory_dagster.partitions import CAMPAIGN_DAYS, ONE_DAY_PER_RUN
from factory_dagster.resources import POOL, FactoryResource, line_asset, partition_day
from factory_dagster.warehouse.store import DBT_BUILD_LOCK, exclusive

MANIFEST = ensure_manifest()
MANIFEST_JSON = json.loads(MANIFEST.read_text())
TRANSLATOR = FactoryDbtTranslator()
ANOMALIES = dg.AssetKey(["marts", "anomalies"])
PRIOR_DAYS = prior_day_specs(MANIFEST_JSON)
VIEWS = view_reuse.view_nodes(MANIFEST_JSON)
RECONCILIATION_TAG = "reconciliation"  # the tests that compare marts with raw totals (dbt_project/tests/assert_*)
RECONCILIATION_TESTS = frozenset(
    node["name"]
    for node in MANIFEST_JSON["nodes"].values()
    if node["resource_type"] == "test" and RECONCILIATION_TAG in node["tags"]
)


def _output_name(unique_id: str) -> str:
    return TRANSLATOR.get_asset_spec(MANIFEST_JSON, unique_id, None).key.to_python_identifier()


BUILD_ORDER = {_output_name(unique_id): rank for rank, unique_id in enumerate(view_reuse.model_order(MANIFEST_JSON))}
REUSED_VIEW_METADATA = {
    "status": "reused",
    "why": "the view the current project defines is in place: not rebuilt (its tests ran)",
}


def _selection_args(context: dg.AssetExecutionContext) -> list[str]:
    """The dbt selection of the run's assets (the whole project but the weekly integrity tests, or a subset)."""
    selection = get_updated_cli_invocation_params_for_context(context, MANIFEST_JSON, TRANSLATOR)
    indirect = ["--indirect-selection", selection.indirect_selection] if selection.indirect_selection else []
    return [*selection.selection_args, *indirect]


def _build_on_duckdb(context: dg.AssetExecutionContext, factory: FactoryResource) -> tuple[DbtRun, list[object]]:
    """The build on the DuckDB file, leaving the views in place when they are the ones the current project built
    (`view_reuse`): each is recorded as materialized with status `reused`, and its tests run as every day."""
    warehouse, target = factory.paths.warehouse, factory.paths.home / "dbt_target"
    whole = not context.is_subset
    if whole and view_reuse.reusable(warehouse, target, VIEWS):
        args = view_reuse.build_args_without_views(MANIFEST_JSON, exclude=f"tag:{INTEGRITY_TAG}")
        reused: list[object] = [
            dg.Output(None, output_name=_output_name(unique_id), metadata=REUSED_VIEW_METADATA | {"unique_id": unique_id})
            for unique_id in VIEWS
        ]
        return invoke(["build", *args], warehouse, target), reused
    run = invoke(["build", *_selection_args(context)], warehouse, target)
    if whole and run.success:
        view_reuse.record(warehouse, target, VIEWS)
    else:
        view_reuse.forget(target)
    return run, []


def _build_on_postgres(context: dg.AssetExecutionContext, factory: FactoryResource) -> tuple[DbtRun, list[object]]:
    """The build on the PostgreSQL warehouse, where many campaigns' runs go at once.

    - Builds take turns (warehouse lock `dbt-build`): two would replace the same relations together.
    - A whole-project build that started after this run asked for one (its observe stage had ended) holds all this
      run wrote: it is reused (`build_log`), and only the reconciliation tests run, for this campaign.
    - Other campaigns' runs write raw rows meanwhile, so the reconciliation tests compare this run's campaign only
      (dbt var `reconcile_campaign`, macro `reconciled_rows`): its own rows are settled.
    """
    paths, target = factory.paths, factory.paths.home / "dbt_target"
    campaign_id = factory.configured_spec(context).campaign_id
    scope = ["--vars", json.dumps({"reconcile_campaign": campaign_id})]
    whole = not context.is_subset
    with factory.warehouse() as con:
        asked_at = database_now(con)
        with exclusive(con, DBT_BUILD_LOCK):
            cover = covering_build(con, asked_at) if whole else None
            if cover is not None:
                run = invoke(
                    ["test", "--select", f"tag:{RECONCILIATION_TAG}", *scope], paths.warehouse, target, paths.warehouse_url
                )
                return run, _reused_build(context, cover)
            started_at = database_now(con)
            run = invoke(["build", *_selection_args(context), *scope], paths.warehouse, target, paths.warehouse_url)
            if whole:
                passed = run.success and all(status == "pass" for status in _test_statuses(run).values())
                record_build(con, context.run.run_id, campaign_id, partition_day(context), started_at, passed)
    return run, []


def _test_statuses(run: DbtRun) -> dict[str, str]:
    return {e["data"]["node_info"]["node_name"]: e["data"]["status"] for e in run.results if e["info"]["name"] == "LogTestResult"}


def _reused_build(context: dg.AssetExecutionContext, cover: Build) -> list[object]:
    """Another run's build in place of this run's: every model as materialized with status `reused`, and each test
    of that build as passed there (a build is reused only when every one of its tests passed), but the
    reconciliation tests, which this run runs itself for its own campaign."""
    why = (
        f"built by run {cover.run_id} (campaign {cover.campaign_id}) from {cover.started_at:%H:%M:%S} UTC, "
        "after this run's observe stage had ended: not built again"
    )
    metadata = {"status": "reused", "why": why}
    outputs: list[object] = [dg.Output(None, output_name=name, metadata=metadata) for name in BUILD_ORDER]
    return outputs + [
        dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=True, metadata=metadata)
        for key in context.selected_asset_check_keys
        if key.name not in RECONCILIATION_TESTS
    ]


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

    A model another build left in place (a view on the DuckDB file, every model of a build another campaign's run
    made on PostgreSQL) is recorded as materialized with status `reused`.
    """
    on_duckdb = factory.paths.warehouse_url is None
    run, events = _build_on_duckdb(context, factory) if on_duckdb else _build_on_postgres(context, factory)
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
