"""A person's decision on a proposed experiment, from the Dagster UI (Launchpad).

The same decision as `factory experiments approve|reject`, through the same store function, so a
design approved in the UI is recorded exactly like one approved at the command line, except that
the event carries the Dagster run that made it.
"""

from enum import Enum

import dagster as dg

from factory_dagster.improve.experiments import IllegalTransition
from factory_dagster.improve.store import UnknownExperiment, decide_by_person
from factory_dagster.models.gateway import utcnow
from factory_dagster.resources import POOL, FactoryResource


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
