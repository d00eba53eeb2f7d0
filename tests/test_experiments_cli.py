"""People approve designs: `factory experiments ...` as the installed command, in its own process,
and the `experiment_decision` Dagster job, both on a real warehouse in a temporary data folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from helpers_db import OTHER_CAMPAIGN, run_for
from test_improve_store import proposal

from factory_dagster.definitions import build_definitions
from factory_dagster.improve.experiments import Experiment
from factory_dagster.improve.store import experiment_events, load_experiment, save_proposed
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

FACTORY = Path(sys.executable).with_name("factory")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path / "factory")


def _seed(paths: Paths, *experiments: Experiment) -> None:
    with connect(paths.warehouse) as con:
        for experiment in experiments:
            save_proposed(con, experiment, run_for(experiment.proposed_at.date(), campaign_id=experiment.campaign_id))


def _factory(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACTORY_HOME": str(paths.home), "USER": "ops-oncall", "LOGNAME": "ops-oncall"}
    return subprocess.run([str(FACTORY), "experiments", *args], env=env, capture_output=True, text=True, timeout=60)


def _history(paths: Paths, experiment_id: str) -> list[dict]:
    with connect(paths.warehouse, read_only=True) as con:
        return experiment_events(con, experiment_id)


def _state(paths: Paths, experiment_id: str) -> str:
    with connect(paths.warehouse, read_only=True) as con:
        return load_experiment(con, experiment_id).state


def test_approve_then_list_and_show(paths: Paths) -> None:
    approved, waiting, other = proposal(), proposal(challenger="draft-v4"), proposal(campaign_id=OTHER_CAMPAIGN)
    _seed(paths, approved, waiting, other)
    approval = _factory(paths, "approve", approved.experiment_id, "--actor", "ana")
    assert approval.returncode == 0, approval.stderr
    assert approval.stdout.startswith(f"approved {approved.experiment_id}")
    (event,) = _history(paths, approved.experiment_id)
    assert (event["actor"], event["reason"], event["run_id"]) == ("ana", "approved at the command line (no reason given)", None)
    assert json.loads(event["evidence_json"])["channel"] == "cli"

    listed = _factory(paths, "list", "--state", "proposed")
    assert listed.returncode == 0, listed.stderr
    assert (
        waiting.experiment_id in listed.stdout and "draft-v1 -> draft-v4" in listed.stdout and "20% of traffic" in listed.stdout
    )
    assert approved.experiment_id not in listed.stdout  # approved now
    assert other.experiment_id not in listed.stdout  # another campaign than the spec's

    shown = _factory(paths, "show", approved.experiment_id)
    assert shown.returncode == 0, shown.stderr
    for text in (
        approved.hypothesis,
        "state:          approved",
        f"{approved.planned_sample_size} mature sends per arm",
        "unsubscribe_rate <= control × 1.5",
        '"missing_cta": 41',
        "proposed -> approved  by ana: approved at the command line (no reason given)",
    ):
        assert text in shown.stdout, text


def test_reject_needs_a_reason_records_the_os_user_and_is_final(paths: Paths) -> None:
    experiment = proposal()
    _seed(paths, experiment)
    missing = _factory(paths, "reject", experiment.experiment_id)
    assert missing.returncode == 2 and "the following arguments are required: --reason" in missing.stderr
    empty = _factory(paths, "reject", experiment.experiment_id, "--reason", " ")
    assert empty.returncode == 2 and "needs an actor and a reason" in empty.stderr
    assert _history(paths, experiment.experiment_id) == [] and _state(paths, experiment.experiment_id) == "proposed"

    rejected = _factory(paths, "reject", experiment.experiment_id, "--reason", "the hook implies a discount")
    assert rejected.returncode == 0, rejected.stderr
    assert _state(paths, experiment.experiment_id) == "rejected"
    assert [(e["actor"], e["reason"]) for e in _history(paths, experiment.experiment_id)] == [
        ("ops-oncall", "the hook implies a discount")
    ]

    again = _factory(paths, "approve", experiment.experiment_id, "--reason", "changed my mind")
    assert (again.returncode, again.stdout) == (1, "")
    assert "error: experiment " in again.stderr and "cannot move from rejected to approved (rejected is final)" in again.stderr
    assert [e["to_state"] for e in _history(paths, experiment.experiment_id)] == ["rejected"]


@pytest.mark.parametrize("args", [("show", "exp_missing"), ("approve", "exp_missing", "--reason", "looks fine")])
def test_an_unknown_id_fails_on_stderr(paths: Paths, args: tuple[str, ...]) -> None:
    _seed(paths, proposal())
    result = _factory(paths, *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == "error: no experiment with id 'exp_missing'"


def _decision_job(paths: Paths, experiment_id: str, decision: str, reason: str) -> dg.ExecuteInProcessResult:
    config = {"experiment_id": experiment_id, "decision": decision, "reason": reason, "actor": "ana (Launchpad)"}
    return (
        build_definitions(paths)
        .resolve_job_def("experiment_decision")
        .execute_in_process(
            run_config={"ops": {"decide_experiment": {"config": config}}},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )


def test_the_dagster_job_approves_a_proposal_and_records_its_run(paths: Paths) -> None:
    experiment = proposal()
    _seed(paths, experiment)
    result = _decision_job(paths, experiment.experiment_id, "approve", "share within policy, hypothesis is clear")
    assert result.success
    assert _state(paths, experiment.experiment_id) == "approved"
    (event,) = _history(paths, experiment.experiment_id)
    assert (event["actor"], event["reason"], event["run_id"]) == (
        "ana (Launchpad)",
        "share within policy, hypothesis is clear",
        result.run_id,
    )
    assert json.loads(event["evidence_json"])["channel"] == "dagster job experiment_decision"


def test_the_dagster_job_fails_with_the_reason_on_an_illegal_move(paths: Paths) -> None:
    experiment = proposal()
    _seed(paths, experiment)
    assert _decision_job(paths, experiment.experiment_id, "reject", "off-brand").success
    result = _decision_job(paths, experiment.experiment_id, "approve", "second thoughts")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "cannot move from rejected to approved" in failure.step_failure_data.error.message
    assert [e["to_state"] for e in _history(paths, experiment.experiment_id)] == ["rejected"]
