"""`factory demo`: run N consecutive days of the line through Dagster and summarise them.

Each day's sample lead file is dropped in the inbox first (as a user would), then the
`daily_line` job runs for that day's partition in the Dagster instance under the data
folder, so `make ui` shows the runs and materializations afterwards.

A day whose run failed only at a blocking gate check and whose sends are held (an
operator must look: `factory holds`) is a *held* day, not a stop: the next day runs,
as the daily schedule would. Any other failure stops the demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.registry import CampaignFolderError, campaign_specs
from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.campaign.spec import load_spec
from factory_dagster.controls.holds import open_holds
from factory_dagster.controls.run_history import write_without_fsync
from factory_dagster.controls.runs import process_tags, recover_dead_runs
from factory_dagster.improve import store as experiment_store
from factory_dagster.improve.experiments import AUTO_APPROVER
from factory_dagster.improve.versions import current_version
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.learning.marts import table_exists
from factory_dagster.models.registry import ModelRegistry
from factory_dagster.models.routing import Route
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import DBT_BUILD_LOCK, fetch_one, open_warehouse, reads_dbt_relations, shared

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
DAGSTER_YAML_HEADER = "# Written by Factory"
DAGSTER_YAML = """\
# Written by Factory, and rewritten by `factory demo` and `factory ui` (remove this line to keep your own settings).
# Every DuckDB-touching step runs in the `duckdb` pool: one at a time.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
# Dagster's own SQLite files in this folder, each opened once per process instead of once per event
# (factory_dagster/controls/run_history.py).
storage:
  custom:
    module: factory_dagster.controls.run_history
    class: PooledSqliteStorage
    config:
      base_dir: {home}
"""
SUMMARY_COLUMNS = {
    "day": "day",
    "leads_in": "leads in",
    "leads_accepted": "accepted",
    "leads_quarantined": "quarantined",
    "drafts": "drafts",
    "gate_pass_rate": "gate pass",
    "unusable": "unusable",
    "held": "held",
    "sends": "sends",
    "replies": "replies",
    "reply_rate": "reply rate",
    "cost_usd": "cost USD",
}


def prepare_dagster_home(paths: Paths) -> dg.DagsterInstance:
    """The persistent Dagster instance under the data folder, with the DuckDB pool limited to 1 and its SQLite files pooled."""
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config, wanted = home / "dagster.yaml", DAGSTER_YAML.format(home=json.dumps(str(home.resolve())))
    # Factory's own file is brought up to date (an older version's, or a data folder that moved); a person's is left alone.
    if not config.exists() or (config.read_text().startswith(DAGSTER_YAML_HEADER) and config.read_text() != wanted):
        config.write_text(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    write_without_fsync(home)
    return dg.DagsterInstance.get()


# The stages that call models, in the order a day runs them.
MODEL_STAGE_ORDER = ("plan", "draft", "repair", "escalate", "audit")
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"


@dataclass
class DayResult:
    day: date
    success: bool
    seconds: float
    error: str | None = None
    held: str | None = None  # why a gate held the day's sends (the run failed at that gate's blocking check)
    campaign: str = ""  # the campaign key (its spec file's name)

    @property
    def completed(self) -> bool:
        """The day ran to its end: every step, or every step up to a gate that held its sends."""
        return self.success or self.held is not None


@dataclass(frozen=True)
class DemoCampaign:
    """A campaign the demo runs, the sample leads it drops in its inbox each day (`seed` picks the people), and the
    demo day it starts on (0: the first)."""

    key: str
    leads_per_day: int
    seed: int = 7
    first_day: int = 0


def demo_campaigns(paths: Paths, leads_per_day: int, days: int, keys: Sequence[str] | None = None) -> list[DemoCampaign]:
    """The campaigns the demo runs (by default every campaign in the folder, the default one first): the default
    campaign runs every day with `leads_per_day`; each other starts halfway through, as a team adds a campaign to a
    running line, with a quarter of the leads and people of its own (another seed). `factory demo --campaigns`
    picks some."""
    found = list(campaign_specs(paths.campaigns))
    if paths.default_campaign not in found:
        found.insert(0, paths.default_campaign)
    chosen = list(keys) if keys else sorted(found, key=lambda k: k != paths.default_campaign)
    unknown = sorted(set(chosen) - set(found))
    if unknown:
        raise CampaignFolderError(f"no campaign {', '.join(unknown)} in {paths.campaigns} (campaigns there: {', '.join(found)})")
    default = paths.default_campaign
    return [
        DemoCampaign(key, leads_per_day)
        if key == default
        else DemoCampaign(key, max(1, leads_per_day // 4), 8 + found.index(key), days // 2)
        for key in chosen
    ]


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failure in words an operator can act on (the root cause, not the wrapper)."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return f"step '{event.step_key}' failed: {data.user_failure_data.description}"
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            return f"step '{event.step_key}' failed: {error.message.strip() if error else 'unknown error'}"
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            check = event.event_specific_data
            return f"blocking check '{check.check_name}' failed on {check.asset_key.to_user_string()}"
    return "the run failed"


def _failed_only_at_blocking_checks(result: dg.ExecuteInProcessResult) -> bool:
    """Every failed step is a blocking asset check that found a problem (no stage crashed)."""
    failures = [e for e in result.all_events if e.is_step_failure]
    return bool(failures) and all(
        e.step_failure_data.error is not None and e.step_failure_data.error.cls_name == CHECK_FAILED_ERROR for e in failures
    )


def _campaign_id(paths: Paths, key: str) -> str:
    return load_spec(paths.campaign_spec(key)).campaign_id


def _held_days(con: duckdb.DuckDBPyConnection, campaign_id: str) -> dict[date, str]:
    """The campaign's days whose sends are held (not released yet), and why."""
    return {_as_date(day): reason for day, reason in open_holds(con, campaign_id)}


def day_hold(paths: Paths, day: date, key: str | None = None) -> str | None:
    """Why the campaign's (by default the default campaign's) day's sends are held, else None."""
    with open_warehouse(paths, read_only=True) as con:
        return _held_days(con, _campaign_id(paths, key or paths.default_campaign)).get(day)


def run_days(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    paths: Paths,
    start: date,
    days: int,
    leads_per_day: int,
    progress: Callable[[str], None] = print,
    after_day: Callable[[date], list[str]] | None = None,
    campaigns: Sequence[DemoCampaign] | None = None,
) -> list[DayResult]:
    """Run the daily line for `days` days from `start`, each day one run per campaign (by default only the default
    campaign, with `leads_per_day`). A campaign whose day fails (not held: failed) stops there, as its later days build
    on it; the other campaigns go on, as the daily schedule's runs would.

    Runs an earlier demo process left unfinished (it was killed) are failed first and their
    pool slots freed, or the day's run would wait for them for ever. `after_day` acts between
    days (the demo's operator); its lines are printed.
    """
    campaigns = list(campaigns or [DemoCampaign(paths.default_campaign, leads_per_day)])
    for run_id in recover_dead_runs(instance):
        progress(f"run {run_id} was left unfinished by a process that no longer exists: marked failed, its pool slot freed")
    tags = process_tags()
    results: list[DayResult] = []
    live = list(campaigns)
    for offset in range(days):
        if not live:
            break
        day = start + timedelta(days=offset)
        for campaign in [c for c in live if c.first_day <= offset]:
            if campaign.first_day == offset and offset:
                progress(f"day {offset + 1}/{days} {day}: {campaign.key} joins the line (a new spec in the campaigns folder)")
            outcome = _run_campaign_day(defs, instance, paths, campaign, day, tags)
            results.append(outcome)
            label = f"day {offset + 1}/{days} {day}" + (f" {campaign.key}" if len(campaigns) > 1 else "")
            progress(f"{label}: {_day_line(outcome, paths.home / 'logs' / _log_name(campaign.key, day, 'run'))}")
            if not outcome.completed:
                live.remove(campaign)
                if live:
                    progress(f"{label}: {campaign.key} stops here; {', '.join(c.key for c in live)} go on")
        for line in after_day(day) if after_day and live else ():
            progress(f"day {offset + 1}/{days} {day}: {line}")
    if results:
        # One more dbt build, so the marts also count the last day's sends (the marts are shared by every campaign).
        last = results[-1]
        with _captured_output(paths, _log_name(last.campaign, last.day, "refresh")):
            execute_campaign_day(defs, instance, last.campaign, last.day, "refresh_marts", run_config=QUIET_RUN_CONFIG, tags=tags)
    return results


def _run_campaign_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, paths: Paths, campaign: DemoCampaign, day: date, tags: Mapping[str, str]
) -> DayResult:
    """Drop the campaign's sample lead file in its inbox, then run its day of the line."""
    write_sample_file(paths.campaign_inboxes(campaign.key)[0], day, n=campaign.leads_per_day, seed=campaign.seed)
    started = time.perf_counter()
    with _captured_output(paths, _log_name(campaign.key, day, "run")):
        result = execute_campaign_day(defs, instance, campaign.key, day, run_config=QUIET_RUN_CONFIG, tags=tags)
    outcome = DayResult(
        day,
        result.success,
        time.perf_counter() - started,
        None if result.success else _failure_message(result),
        campaign=campaign.key,
    )
    if not result.success and _failed_only_at_blocking_checks(result):
        outcome.held = day_hold(paths, day, campaign.key)
    return outcome


def _log_name(key: str, day: date, suffix: str) -> str:
    return f"{day}-{key}-{suffix}.log"


DEMO_OPERATOR = "demo operator"


def approve_as_operator(paths: Paths, keys: Sequence[str] | None = None) -> list[str]:
    """The demo plays the person who approves designs: every proposal of the campaigns (by default the default
    campaign) still waiting for a person (routing canaries always do) is approved through the same call as
    `factory experiments approve`, recorded with the actor `demo operator`, so `make run` shows the whole lifecycle
    unattended. A real team decides these itself (`factory demo --operator none` leaves them waiting)."""
    campaign_ids = [_campaign_id(paths, key) for key in keys or [paths.default_campaign]]
    lines = []
    with open_warehouse(paths) as con:
        proposed = [e for c in campaign_ids for e in experiment_store.list_experiments(con, c, ["proposed"])]
        for experiment in proposed:
            experiment_store.decide_by_person(
                con,
                experiment.experiment_id,
                "approve",
                DEMO_OPERATOR,
                "the demo approves every design a person must decide, as `factory experiments approve` would",
                "demo",
                datetime.now(UTC),
            )
            arms = f"{experiment.control} -> {', '.join(experiment.challengers)}"
            lines.append(
                f"the demo's operator approved {experiment.experiment_id} ({experiment.kind}: {arms}, "
                f"{experiment.max_traffic_share:.0%} of traffic), as `factory experiments approve` would"
            )
    return lines


def _day_line(outcome: DayResult, log_path: object) -> str:
    if outcome.success:
        return f"done in {outcome.seconds:.1f}s"
    if outcome.held:
        return (
            f"done in {outcome.seconds:.1f}s, sends HELD — {outcome.error}: {outcome.held} "
            f"(release: factory holds release --day {outcome.day} --reason ...)"
        )
    return f"FAILED in {outcome.seconds:.1f}s — {outcome.error} (full log: {log_path})"


@contextlib.contextmanager
def _captured_output(paths: Paths, name: str):
    """Send dbt's and Dagster's console output of one run to a log file under the data folder."""
    log_path = paths.home / "logs" / name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield log_path


MART_COLUMNS = [c for c in SUMMARY_COLUMNS if c not in {"unusable", "held"}]
# Leads the gate quarantined for which no answer of any attempt (candidates, repair, escalation) was a usable
# draft: the model answered something that is not a draft, or nothing (error, refusal, circuit open).
UNUSABLE_SQL = """
    SELECT q.partition_day AS day, count(*) AS unusable FROM raw.messages_quarantine q
    WHERE q.campaign_id = $campaign AND q.partition_day BETWEEN $first AND $last AND NOT EXISTS (
        SELECT 1 FROM raw.drafts d
        WHERE d.campaign_id = q.campaign_id AND d.partition_day = q.partition_day AND d.lead_id = q.lead_id
          AND d.parse_error IS NULL)
    GROUP BY 1"""


def daily_summary(paths: Paths, first: date, last: date, key: str | None = None) -> pd.DataFrame:
    """The per-day table the demo prints for a campaign (by default the default one): its `marts.daily_kpis` (the
    content line's model spend has rows of its own there), plus from the raw tables the leads
    quarantined because the model's answers were unusable and whether the day's sends are held."""
    campaign_id = _campaign_id(paths, key or paths.default_campaign)
    with open_warehouse(paths, read_only=True) as con, shared(con, DBT_BUILD_LOCK):
        frame = con.execute(
            f"SELECT {', '.join(MART_COLUMNS)} FROM marts.daily_kpis WHERE campaign_id = ? AND day BETWEEN ? AND ? ORDER BY day",
            [campaign_id, first, last],
        ).df()
        unusable = con.execute(UNUSABLE_SQL, {"first": first, "last": last, "campaign": campaign_id}).df()
        held = _held_days(con, campaign_id)
    days = pd.to_datetime(frame["day"]).dt.date
    frame["unusable"] = days.map(dict(zip(unusable["day"].map(_as_date), unusable["unusable"]))).fillna(0).astype(int)
    frame["held"] = days.map(lambda d: "yes" if d in held else "-")
    return frame[list(SUMMARY_COLUMNS)]


def _as_date(value: object) -> date:
    return pd.Timestamp(value).date()


def format_summary(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    shown["day"] = pd.to_datetime(shown["day"]).dt.strftime("%Y-%m-%d")
    for column in ("gate_pass_rate", "reply_rate"):
        shown[column] = shown[column].map(lambda v: "-" if pd.isna(v) else f"{v:.1%}")
    shown["cost_usd"] = shown["cost_usd"].map(lambda v: f"{v:.4f}")
    for column in ("leads_in", "leads_accepted", "leads_quarantined", "drafts", "unusable", "sends", "replies"):
        shown[column] = shown[column].fillna(0).astype(int).astype(str)
    shown = shown.rename(columns=SUMMARY_COLUMNS)
    widths = {c: max(len(c), *(len(v) for v in shown[c])) if len(shown) else len(c) for c in shown.columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in shown.columns)]
    lines += ["  ".join(str(v).rjust(widths[c]) for c, v in row.items()) for _, row in shown.iterrows()]
    return "\n".join(lines)


def closing_lines(results: list[DayResult], summary: pd.DataFrame, days: int) -> list[str]:
    """The demo's last words: how many days ran, which were held, and how many leads the model failed."""
    held = [r for r in results if r.held]
    ran = f"{sum(r.completed for r in results)}/{days} days ran in {sum(r.seconds for r in results):.0f}s"
    if held:
        ran += f"; {len(held)} held at a gate, their sends wait for an operator (factory holds list / release)"
    unusable = int(summary["unusable"].sum()) if not summary.empty else 0
    quarantined_note = (
        f"{unusable} leads were quarantined because the model's answers were unusable "
        "(no answer of any attempt was a usable draft; column 'unusable')"
    )
    return [ran, quarantined_note]


def loop_lines(paths: Paths, key: str | None = None) -> list[str]:
    """The demo's words on a campaign's loop (by default the default campaign's), from the warehouse: what was
    proposed and how it was approved, what runs and what was decided, where the loop stands (version, champions,
    routing), and what it is worth against the holdout once holdout sends are mature."""
    spec = load_spec(paths.campaign_spec(key or paths.default_campaign))
    with open_warehouse(paths, read_only=True) as con:
        states = dict(
            con.execute(
                "SELECT state, count(*) FROM raw.experiments WHERE campaign_id = ? GROUP BY 1", [spec.campaign_id]
            ).fetchall()
        )
        approvals = dict(
            con.execute(
                """SELECT actor = ?, count(*) FROM raw.experiment_events
                   WHERE campaign_id = ? AND to_state = 'approved' GROUP BY 1""",
                [AUTO_APPROVER, spec.campaign_id],
            ).fetchall()
        )
        version = current_version(con, spec)
        lift = _campaign_lift(con, spec.campaign_id)
        looks = _latest_looks(con, spec.campaign_id)
    made = sum(states.values())
    waiting = f", {states['approved']} approved and waiting for their segment" if states.get("approved") else ""
    champions = ", ".join(f"{segment} {prompt}" for segment, prompt in version.state.champions.items())
    routing = ", ".join(f"{stage} {model}" for stage, model in version.state.routing.items()) or "as the spec says"
    return [
        f"loop: {made} experiments proposed; approved {approvals.get(True, 0)} automatically and {approvals.get(False, 0)} "
        f"by a person, {states.get('proposed', 0)} waiting for a person, {states.get('rejected', 0)} rejected; "
        f"{states.get('running', 0)} running{waiting}; {states.get('promoted', 0)} promoted, "
        f"{states.get('retired', 0)} retired, {states.get('rolled_back', 0)} rolled back (factory experiments list)",
        *looks,
        f"loop version {version.version}: champions {champions}; routing {routing} (factory versions; factory rollback)",
        lift,
    ]


@reads_dbt_relations
def _latest_looks(con: duckdb.DuckDBPyConnection, campaign_id: str) -> list[str]:
    """Each experiment's latest daily look (from marts.experiment_results) in one line: the
    decision, and how far its sample has come. The experiment's own columns repeat on each arm's row: min() takes
    them on either engine (PostgreSQL has no any_value before version 16)."""
    if not table_exists(con, "marts", "experiment_results"):
        return []
    rows = con.execute(
        """SELECT experiment_id, min(look_day), min(decision),
                  min(arm) FILTER (WHERE role = 'control'),
                  string_agg(arm, ', ' ORDER BY arm) FILTER (WHERE role <> 'control'),
                  min(look_mature_sends), min(planned_sample_size), min(days_running), min(reasons)
           FROM marts.experiment_results
           WHERE campaign_id = ? AND look_day IS NOT NULL
           GROUP BY experiment_id ORDER BY experiment_id""",
        [campaign_id],
    ).fetchall()
    return [
        f"decision step, {day}: {experiment} ({challengers} vs {control}) -> {decision}, "
        f"{mature} of {planned} planned mature sends per arm after {days} days"
        + ("" if decision == "continue" or not reasons else f": {reasons}")
        for experiment, day, decision, control, challengers, mature, planned, days, reasons in rows
    ]


NO_LOOP_LIFT = "loop lift: no mature holdout sends yet (a send counts once its outcome window has closed)"


@reads_dbt_relations
def _campaign_lift(con: duckdb.DuckDBPyConnection, campaign_id: str) -> str:
    """marts.loop_lift's campaign row in words, or why there is none yet."""
    row = table_exists(con, "marts", "loop_lift") and fetch_one(
        con,
        """SELECT loop_rate, loop_sends, holdout_rate, holdout_sends, lift, lift_low, lift_high
           FROM marts.loop_lift WHERE campaign_id = ? AND segment IS NULL AND holdout_sends > 0 AND loop_sends > 0""",
        [campaign_id],
    )
    if not row:
        return NO_LOOP_LIFT
    loop_rate, loop_sends, holdout_rate, holdout_sends, lift, low, high = row
    versus = f"{loop_rate:.2%} positive replies per mature send (loop, {loop_sends} sends) vs {holdout_rate:.2%} (holdout, {holdout_sends})"
    if lift is None:
        return f"loop lift: {versus}; no ratio while the holdout has no positive reply"
    interval = " (too few positive replies on a side for an interval yet)" if low is None else f" [{low:+.0%}, {high:+.0%}] (95%)"
    return f"loop lift: {versus}: {lift:+.0%}{interval}"


def describe_models(routes: Mapping[str, Route], registry: ModelRegistry, environ: Mapping[str, str]) -> str:
    """What serves each model stage, as the gateway routes it: offline models, or an endpoint's host and models.

    An offline first model answers alone; otherwise the chain's remote models are tried in order, each
    at its registry `base_url`, else OPENAI_BASE_URL, else OpenAI's. An endpoint is named by host and
    port only, never by a key or other parts of its URL.
    """
    stages = [stage for stage in MODEL_STAGE_ORDER if stage in routes] + sorted(set(routes) - set(MODEL_STAGE_ORDER))
    served: dict[str, tuple[list[str], str | None]] = {}  # stage -> (models tried, host or None when offline)
    for stage in stages:
        route = routes[stage]
        if registry.entry(route.primary).provider == "offline":
            served[stage] = ([route.primary], None)
            continue
        chain = [m for m in route.served if registry.entry(m).provider == "openai"]
        urls = {_host(registry.entry(m).base_url or environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL) for m in chain}
        served[stage] = (chain, ", ".join(sorted(urls)))
    hosts = {host for _, host in served.values()}
    if hosts == {None}:
        stand_ins = {
            stage: routes[stage].configured[0] for stage in stages if routes[stage].configured[0] != routes[stage].primary
        }
        models = ", ".join(
            f"{stage} {chain[0]}" + (f" (for {stand_ins[stage]})" if stage in stand_ins else "")
            for stage, (chain, _) in served.items()
        )
        keys = sorted({registry.entry(model).api_key_env for model in stand_ins.values()})
        kind = (
            f"offline stand-ins, no language model runs (${', $'.join(keys)} not set)"
            if keys
            else "offline models, no language model runs"
        )
        return f"models: {kind}: {models}"
    one_host = next(iter(hosts)) if len(hosts) == 1 else None
    parts = []
    for stage, (chain, host) in served.items():
        where = "offline" if host is None else host
        parts.append(f"{stage} {' then '.join(chain)}" + ("" if one_host else f" ({where})"))
    head = f"models: the OpenAI-compatible endpoint at {one_host}" if one_host else "models"
    return f"{head}: {', '.join(parts)}"


def _host(url: str) -> str:
    """host[:port] of a URL, without user, password, path or query."""
    parts = urlsplit(url)
    if not parts.hostname:
        return "an unreadable base URL"  # never echo what may hold a secret
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
