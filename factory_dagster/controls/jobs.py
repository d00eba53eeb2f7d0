"""Operator jobs: flip the kill switch from the Dagster UI (Launchpad), with a reason."""

import dagster as dg

from factory_dagster.controls.kill_switch import set_kill_switch
from factory_dagster.resources import POOL, FactoryResource


class KillSwitchConfig(dg.Config):
    engaged: bool
    reason: str
    actor: str = "operator"
    campaign_id: str = ""  # one campaign's switch; empty: the switch for every campaign


@dg.op(pool=POOL)
def flip_kill_switch(context: dg.OpExecutionContext, config: KillSwitchConfig, factory: FactoryResource) -> None:
    with factory.warehouse() as con:
        state = set_kill_switch(con, config.engaged, config.actor, config.reason, config.campaign_id.strip() or None)
    context.log.info(
        f"kill switch for {state.scope} {'engaged' if state.engaged else 'released'} by {state.actor}: {state.reason}"
    )


@dg.job(
    description="Engage (engaged: true) or release (engaged: false) the kill switch, for every campaign or one "
    "(campaign_id); the reason is recorded."
)
def kill_switch():
    flip_kill_switch()
