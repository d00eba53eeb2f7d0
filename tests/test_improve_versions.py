"""The loop's versions in a real warehouse: promotions append, rollbacks restore an earlier state
as a new version, and the history (the audit log) is never rewritten."""

from __future__ import annotations

from datetime import datetime

import pytest
from helpers_db import SPEC, query

from factory_dagster.improve.versions import (
    SPEC_ACTOR,
    UnknownVersion,
    current_version,
    initial_state,
    record_version,
    rollback,
    version_history,
)
from factory_dagster.warehouse.store import transaction

SEGMENT = "scaleup_finance_leaders"
AT = datetime(2026, 3, 10, 6)


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def promote(con, champion: str, experiment_id: str, route: str | None = None) -> int:
    state = current_version(con, SPEC).state.with_champion(SEGMENT, champion)
    if route:
        state = state.with_route("draft", route)
    with transaction(con):
        return record_version(
            con, SPEC, state, actor="decision step", reason=f"{champion} won", experiment_id=experiment_id, at=AT
        ).version


def test_a_new_campaign_is_at_version_zero_the_specs_state(con) -> None:
    version = current_version(con, SPEC)
    assert (version.version, version.actor, version.experiment_id) == (0, SPEC_ACTOR, None)
    assert version.state.champions == {s.name: SPEC.drafting.prompt_versions[0] for s in SPEC.segments}
    assert version.state.routing == {}


def test_rollback_restores_an_earlier_state_as_a_new_version(con) -> None:
    assert promote(con, "draft-v2", "exp_a") == 1
    assert promote(con, "draft-9f3c2a1b", "exp_b", route="gpt-4.1-nano") == 2
    restored = rollback(con, SPEC, 1, actor="ana", reason="v2's replies turned sour", at=AT)
    assert restored.version == 3
    assert restored.state == version_history(con, SPEC)[1].state
    assert current_version(con, SPEC).state.champions[SEGMENT] == "draft-v2"
    assert current_version(con, SPEC).state.routing == {}
    assert (restored.actor, restored.reason, restored.experiment_id) == (
        "ana",
        "rollback to version 1: v2's replies turned sour",
        None,
    )
    # The audit log keeps every version, the rolled-back ones included.
    assert query(con, "SELECT version, actor, experiment_id FROM raw.loop_versions ORDER BY version") == [
        (1, "decision step", "exp_a"),
        (2, "decision step", "exp_b"),
        (3, "ana", None),
    ]


def test_rollback_to_version_zero_restores_the_specs_own_state(con) -> None:
    promote(con, "draft-v2", "exp_a", route="gpt-4.1-nano")
    restored = rollback(con, SPEC, 0, actor="ana", reason="start over")
    assert restored.state == initial_state(SPEC)
    assert current_version(con, SPEC).version == 2


def test_rollback_to_an_unknown_version_fails_and_writes_nothing(con) -> None:
    promote(con, "draft-v2", "exp_a")
    with pytest.raises(UnknownVersion, match=r"has no loop version 7 \(versions: 0, 1\)"):
        rollback(con, SPEC, 7, actor="ana", reason="typo")
    with pytest.raises(ValueError, match="a rollback needs a reason"):
        rollback(con, SPEC, 0, actor="ana", reason="  ")
    assert current_version(con, SPEC).version == 1
