"""Experiments in the warehouse: `raw.experiments` (latest version) and `raw.experiment_events` (history).

Plain functions on a DuckDB connection, so the improve stage, the decision step, the CLI and the
Dagster job all read and write experiments the same way. The lifecycle rules live in
`experiments.transition`; this module only makes each move durable: the new version and the event
that explains it are written in one transaction, and a move made from a stale copy (someone moved
the experiment in between) is refused instead of overwriting the other decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from factory_dagster.improve.experiments import (
    OPEN_STATES,
    Experiment,
    ExperimentEvent,
    IllegalTransition,
    transition,
)
from factory_dagster.learning.marts import table_exists
from factory_dagster.warehouse.store import insert_rows, reads_dbt_relations, transaction

if TYPE_CHECKING:  # the model gateway (and the openai client it imports) is not needed to store experiments
    from factory_dagster.run_context import RunContext

# A rejected design is not proposed again for this long: people said no, and asking again the next
# morning would only wear down their attention.
REJECTION_MEMORY = timedelta(days=30)

# A person's decision on a proposed design, as the CLI and the Launchpad name it.
PERSON_DECISIONS: Mapping[str, str] = {"approve": "approved", "reject": "rejected"}


class UnknownExperiment(LookupError):
    """No experiment has this id."""


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _experiments(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Experiment]:
    sql = f"SELECT * FROM raw.experiments WHERE {where} ORDER BY proposed_at, experiment_id"
    return [Experiment.from_record(row) for row in _records(con, sql, params)]


def _event_row(event: ExperimentEvent, run_id: str | None, partition_day: date | None) -> dict[str, Any]:
    """The raw.experiment_events row: the event's record, its `at` as occurred_at (AT is reserved in DuckDB)."""
    record = event.to_record()
    record["occurred_at"] = record.pop("at")
    return record | {"run_id": run_id, "partition_day": partition_day}


def _latest(con: duckdb.DuckDBPyConnection, experiment_id: str) -> Experiment:
    if (experiment := load_experiment(con, experiment_id)) is None:
        raise UnknownExperiment(f"no experiment with id {experiment_id!r}")
    return experiment


def save_proposed(con: duckdb.DuckDBPyConnection, experiment: Experiment, run: RunContext) -> bool:
    """Record a new proposal; False when the experiment is already there (a re-run of the day).

    An existing row is left alone, whatever its state: re-proposing must never reset an experiment
    people already approved or rejected. Only proposals are saved this way, so every later state
    of a row is explained by an event.
    """
    if experiment.state != "proposed":
        raise ValueError(f"experiment {experiment.experiment_id}: only a proposal can be saved, not a {experiment.state} one")
    if experiment.campaign_id != run.campaign_id:
        raise ValueError(f"experiment {experiment.experiment_id} is for {experiment.campaign_id}, the run for {run.campaign_id}")
    record = experiment.to_record() | {
        "run_id": run.run_id,
        "partition_day": run.partition_day,
        "updated_at": experiment.updated_at or experiment.proposed_at,
    }
    return insert_rows(con, "experiments", pd.DataFrame([record]), skip_existing=True) == 1


def apply_transition(
    con: duckdb.DuckDBPyConnection,
    moved: Experiment,
    event: ExperimentEvent,
    *,
    run_id: str | None = None,
    partition_day: date | None = None,
) -> None:
    """Write a move `transition` returned: the new version and its event, all or nothing.

    The row is only updated while it is still in the event's `from_state`; otherwise (unknown id,
    or another decision got there first) IllegalTransition is raised and nothing is written.
    """
    with transaction(con):
        write_transition(con, moved, event, run_id=run_id, partition_day=partition_day)


def write_transition(
    con: duckdb.DuckDBPyConnection,
    moved: Experiment,
    event: ExperimentEvent,
    *,
    run_id: str | None = None,
    partition_day: date | None = None,
) -> None:
    """`apply_transition` inside the caller's transaction, for a move that must be written
    together with other rows (the decision step's look and the loop version a promotion makes)."""
    (updated,) = con.execute(
        """UPDATE raw.experiments SET state = ?, winner = ?, updated_at = ?
           WHERE experiment_id = ? AND state = ?""",
        [moved.state, moved.winner, moved.updated_at, moved.experiment_id, event.from_state],
    ).fetchall()[0]
    if updated != 1:
        raise IllegalTransition(
            f"experiment {moved.experiment_id}: not recorded as {event.from_state} any more, so it cannot move to {event.to_state}"
        )
    insert_rows(con, "experiment_events", pd.DataFrame([_event_row(event, run_id, partition_day)]))


def move_experiment(
    con: duckdb.DuckDBPyConnection,
    experiment_id: str,
    to_state: str,
    actor: str,
    reason: str,
    evidence: Mapping[str, Any],
    at: datetime,
    *,
    run_id: str | None = None,
    partition_day: date | None = None,
) -> tuple[Experiment, ExperimentEvent]:
    """Load the latest version, move it through the lifecycle and record the move.

    Raises UnknownExperiment, IllegalTransition (nothing written) or ValueError (no reason, ...).
    """
    moved, event = transition(_latest(con, experiment_id), to_state, actor, reason, evidence, at)
    apply_transition(con, moved, event, run_id=run_id, partition_day=partition_day)
    return moved, event


def decide_by_person(
    con: duckdb.DuckDBPyConnection,
    experiment_id: str,
    decision: str,
    actor: str,
    reason: str,
    channel: str,
    at: datetime,
    *,
    run_id: str | None = None,
) -> tuple[Experiment, ExperimentEvent]:
    """A person approves or rejects a proposed design (CLI or Launchpad: `channel`).

    The evidence is what the person decided on: the design as it stood (its key, traffic share and
    planned sample), so a later reader sees exactly which design was approved and from where.
    """
    if decision not in PERSON_DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(PERSON_DECISIONS)}, got {decision!r}")
    experiment = _latest(con, experiment_id)
    evidence = {
        "channel": channel,
        "design_key": experiment.design_key,
        "max_traffic_share": experiment.max_traffic_share,
        "planned_sample_size": experiment.planned_sample_size,
    }
    moved, event = transition(experiment, PERSON_DECISIONS[decision], actor, reason, evidence, at)
    apply_transition(con, moved, event, run_id=run_id)
    return moved, event


def load_experiment(con: duckdb.DuckDBPyConnection, experiment_id: str) -> Experiment | None:
    """The latest version of one experiment, or None for an unknown id."""
    found = _experiments(con, "experiment_id = ?", [experiment_id])
    return found[0] if found else None


def list_experiments(
    con: duckdb.DuckDBPyConnection, campaign_id: str | None = None, states: Iterable[str] | None = None
) -> list[Experiment]:
    """Experiments, oldest proposal first; optionally of one campaign and in the given states."""
    return _experiments(
        con,
        "(?::VARCHAR IS NULL OR campaign_id = ?) AND (?::VARCHAR[] IS NULL OR state = ANY(?::VARCHAR[]))",
        [campaign_id, campaign_id, *[None if states is None else sorted(states)] * 2],
    )


def count_open_proposals(con: duckdb.DuckDBPyConnection, campaign_id: str) -> int:
    """Experiments of a campaign still in flight (proposed, approved or running).

    The improve stage proposes only while this is under the spec's bound: a proposal people have
    not looked at yet and an experiment still using traffic both count against it.
    """
    (count,) = con.execute(
        "SELECT count(*) FROM raw.experiments WHERE campaign_id = ? AND state = ANY(?::VARCHAR[])",
        [campaign_id, sorted(OPEN_STATES)],
    ).fetchall()[0]
    return count


def find_duplicates(
    con: duckdb.DuckDBPyConnection, experiment: Experiment, rejected_within: timedelta = REJECTION_MEMORY
) -> list[Experiment]:
    """Other experiments of the same design (design_key) that are open, or were rejected within
    `rejected_within` before this one was proposed: the improve stage does not propose those again.

    The experiment itself is not its own duplicate: a re-run of the day re-proposes the same id,
    which `save_proposed` already treats as one row.
    """
    return _experiments(
        con,
        """design_key = ? AND experiment_id <> ?
           AND (state = ANY(?::VARCHAR[]) OR (state = 'rejected' AND updated_at >= ?))""",
        [experiment.design_key, experiment.experiment_id, sorted(OPEN_STATES), experiment.proposed_at - rejected_within],
    )


def experiment_events(con: duckdb.DuckDBPyConnection, experiment_id: str) -> list[dict[str, Any]]:
    """An experiment's history, oldest move first, as raw.experiment_events rows."""
    return _records(
        con, "SELECT * FROM raw.experiment_events WHERE experiment_id = ? ORDER BY occurred_at, event_id", [experiment_id]
    )


# ---------------------------------------------------------------- the decision step's inputs and looks

ARM_COUNTS_VIEW = ("intermediate", "int_experiment_arm_counts")


@reads_dbt_relations
def arm_count_rows(con: duckdb.DuckDBPyConnection, experiment_id: str) -> list[dict[str, Any]] | None:
    """The experiment's rows of intermediate.int_experiment_arm_counts (the figures
    marts.experiment_results shows); None before dbt has ever built the view."""
    schema, view = ARM_COUNTS_VIEW
    if not table_exists(con, schema, view):
        return None
    return _records(con, f"SELECT * FROM {schema}.{view} WHERE experiment_id = ? ORDER BY role, arm", [experiment_id])


def latest_look_day(con: duckdb.DuckDBPyConnection, experiment_id: str) -> date | None:
    """The day of the experiment's latest look, None before the first."""
    (day,) = con.execute(
        "SELECT max(partition_day) FROM raw.experiment_looks WHERE experiment_id = ?", [experiment_id]
    ).fetchall()[0]
    return day


def save_look(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> int:
    """Append one look (a row per arm; call inside the caller's transaction)."""
    return insert_rows(con, "experiment_looks", rows)
