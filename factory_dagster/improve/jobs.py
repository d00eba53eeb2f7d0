"""A person's decisions from the Dagster UI (Launchpad): on a proposed experiment, and rollbacks.

The same decisions as `factory experiments approve|reject` and `factory rollback`, through the
same functions, so a design approved or a loop rolled back in the UI is recorded exactly like one
at the command line, except that the record names the Dagster job and run.
"""

from enum import Enum

import dagster as dg

from factory_dagster.improve.experiments import IllegalTransition
from factory_dagster.improve.store import UnknownExperiment, decide_by_person
from factory_dagster.improve.versions import UnknownVersion, rollback
from factory_dagster.resources import POOL, FactoryResource
from factory_dagster.run_context import utcnow


class PersonDecision(Enum):
    approve = "approve"
    reject = "reject"


class ExperimentDecisionConfig(dg.Config):
    experiment_id: str
    decision: PersonDecision
    reason: str
    actor: str = "operator"


@dg.op(pool=POOL)
def decide_experiment(context: dg.OpExecutionContext, config: ExperimentDecisionConfig, factory: FactoryResource) -> None:
    """Approve or reject; an unknown id or a design no longer proposed fails the run with the reason."""
    try:
        with factory.warehouse() as con:
            moved, event = decide_by_person(
                con,
                config.experiment_id,
                config.decision.value,
                config.actor,
                config.reason,
                "dagster job experiment_decision",
                utcnow(),
                run_id=context.run_id,
            )
    except (UnknownExperiment, IllegalTransition, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"experiment {moved.experiment_id} {event.from_state} -> {moved.state} by {event.actor}: {event.reason}")


@dg.job(
    description="Approve or reject a proposed experiment design (experiment_id, decision, reason, actor); the decision is recorded."
)
def experiment_decision():
    decide_experiment()


class LoopRollbackConfig(dg.Config):
    campaign_id: str
    to_version: int
    reason: str
    actor: str = "operator"


@dg.op(pool=POOL)
def roll_back_loop(context: dg.OpExecutionContext, config: LoopRollbackConfig, factory: FactoryResource) -> None:
    """Restore an earlier loop version as a new one; another campaign or an unknown version fails the run."""
    spec = factory.spec_of_campaign(config.campaign_id)  # an unknown campaign fails the run, naming the folder
    actor = f"{config.actor} (dagster job loop_rollback, run {context.run_id})"
    try:
        with factory.warehouse() as con:
            version = rollback(con, spec, config.to_version, actor=actor, reason=config.reason)
    except (UnknownVersion, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"campaign {spec.campaign_id} is at loop version {version.version}: {version.reason}")


@dg.job(
    description="Roll the loop (segment champions, routing) back to an earlier version (campaign_id, to_version, reason, actor); recorded as a new version."
)
def loop_rollback():
    roll_back_loop()
