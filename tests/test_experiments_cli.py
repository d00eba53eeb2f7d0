"""People approve designs and roll the loop back: `factory experiments ...`, `factory versions` and
`factory rollback` (the installed command in its own process for an approval; the same `main` in this process for the
rest), and the `experiment_decision` and `loop_rollback` Dagster jobs, all on a real warehouse in a
temporary data folder."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from helpers_db import CAMPAIGN, OTHER_CAMPAIGN, SPEC, run_for
from test_improve_store import proposal

from factory_dagster.cli import main
from factory_dagster.definitions import build_definitions
from factory_dagster.improve.experiments import Experiment
from factory_dagster.improve.store import experiment_events, load_experiment, save_proposed
from factory_dagster.improve.versions import current_version, record_version, version_history
from factory_dagster.settings import PROJECT_ROOT, Paths
from factory_dagster.warehouse.store import connect, transaction

FACTORY = Path(sys.executable).with_name("factory")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path / "factory")


def _seed(paths: Paths, *experiments: Experiment) -> None:
    with connect(paths.warehouse) as con:
        for experiment in experiments:
            save_proposed(con, experiment, run_for(experiment.proposed_at.date(), campaign_id=experiment.campaign_id))


OPERATOR = {"USER": "ops-oncall", "LOGNAME": "ops-oncall"}


def _installed(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    """The installed `factory` command, in its own process."""
    env = {**os.environ, "FACTORY_HOME": str(paths.home), **OPERATOR}
    return subprocess.run([str(FACTORY), *args], env=env, capture_output=True, text=True, timeout=60)


def _command(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    """The same command's `main` in this process (a process of its own costs about a second of imports): the same
    arguments, environment, output streams and exit code."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {"FACTORY_HOME": str(paths.home), **OPERATOR}), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return subprocess.CompletedProcess(["factory", *args], code, out.getvalue(), err.getvalue())


def _factory(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    return _command(paths, "experiments", *args)


def _history(paths: Paths, experiment_id: str) -> list[dict]:
    with connect(paths.warehouse, read_only=True) as con:
        return experiment_events(con, experiment_id)


def _state(paths: Paths, experiment_id: str) -> str:
    with connect(paths.warehouse, read_only=True) as con:
        return load_experiment(con, experiment_id).state


def test_approve_then_list_and_show(paths: Paths) -> None:
    approved, waiting, other = proposal(), proposal(challenger="draft-v4"), proposal(campaign_id=OTHER_CAMPAIGN)
    _seed(paths, approved, waiting, other)
    approval = _installed(paths, "experiments", "approve", approved.experiment_id, "--actor", "ana")
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


SEGMENT = "scaleup_finance_leaders"


def _promoted(paths: Paths, *champions: str) -> None:
    """Versions 1.. as promotions of each champion in one segment would record them."""
    with connect(paths.warehouse) as con:
        for n, champion in enumerate(champions):
            state = current_version(con, SPEC).state.with_champion(SEGMENT, champion)
            with transaction(con):
                record_version(con, SPEC, state, actor="decision step", reason=f"{champion} won", experiment_id=f"exp_{n}")


def _versions(paths: Paths) -> list:
    with connect(paths.warehouse, read_only=True) as con:
        return version_history(con, SPEC)


def test_versions_lists_the_audit_log_and_rollback_restores_an_earlier_state(paths: Paths) -> None:
    _promoted(paths, "draft-v2", "draft-77aa01bc")
    rolled = _command(paths, "rollback", "--campaign", CAMPAIGN, "--to", "1", "--reason", "v77 reads as spam", "--actor", "ana")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.startswith(f"{CAMPAIGN} is at loop version 3 by ana: rollback to version 1: v77 reads as spam")
    latest = _versions(paths)[-1]
    assert (latest.version, latest.actor, latest.state.champions[SEGMENT]) == (3, "ana", "draft-v2")

    listed = _command(paths, "versions", "--campaign", CAMPAIGN)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("v0  -  by the campaign spec: the spec's own state")
    assert "by decision step (experiment exp_1): draft-77aa01bc won" in listed.stdout
    assert lines[-1].strip().startswith("champions: enterprise_finance draft-v1, ")
    assert lines[-1].endswith(f"{SEGMENT} draft-v2; routing: the spec's")
    assert lines[-2].endswith("by ana: rollback to version 1: v77 reads as spam  <- current")


def test_rollback_to_version_zero_needs_no_reason_and_the_os_user_is_the_actor(paths: Paths) -> None:
    _promoted(paths, "draft-v2")
    rolled = _command(paths, "rollback", "--campaign", CAMPAIGN, "--to", "0")
    assert rolled.returncode == 0, rolled.stderr
    latest = _versions(paths)[-1]
    assert (latest.version, latest.actor) == (2, "ops-oncall")
    assert latest.state == _versions(paths)[0].state  # the spec's own state
    assert latest.reason == "rollback to version 0: rolled back at the command line (no reason given)"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--campaign", CAMPAIGN, "--to", "5"), 1, f"error: campaign {CAMPAIGN} has no loop version 5 (versions: 0, 1)"),
        (("--campaign", OTHER_CAMPAIGN, "--to", "0"), 2, f"is for campaign '{OTHER_CAMPAIGN}'"),
        (("--campaign", CAMPAIGN, "--to", "0", "--reason", " "), 2, "error: a rollback needs a reason"),
    ],
)
def test_a_rollback_that_cannot_be_done_fails_clearly_and_writes_nothing(
    paths: Paths, args: tuple[str, ...], code: int, message: str
) -> None:
    _promoted(paths, "draft-v2")
    result = _command(paths, "rollback", *args)
    assert (result.returncode, result.stdout) == (code, "")
    assert message in result.stderr
    assert [v.version for v in _versions(paths)] == [0, 1]


def _rollback_job(paths: Paths, to_version: int, campaign_id: str = CAMPAIGN) -> dg.ExecuteInProcessResult:
    config = {"campaign_id": campaign_id, "to_version": to_version, "reason": "canary cost more than it saved", "actor": "ana"}
    return (
        build_definitions(paths)
        .resolve_job_def("loop_rollback")
        .execute_in_process(
            run_config={"ops": {"roll_back_loop": {"config": config}}},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )


def test_the_dagster_job_rolls_back_and_names_its_run(paths: Paths) -> None:
    _promoted(paths, "draft-v2", "draft-v3")
    result = _rollback_job(paths, 0)
    assert result.success
    latest = _versions(paths)[-1]
    assert latest.version == 3 and latest.state == _versions(paths)[0].state
    assert latest.actor == f"ana (dagster job loop_rollback, run {result.run_id})"
    assert latest.reason == "rollback to version 0: canary cost more than it saved"


@pytest.mark.parametrize(
    ("to_version", "campaign_id", "message"),
    [
        (9, CAMPAIGN, "has no loop version 9 (versions: 0, 1)"),
        (0, OTHER_CAMPAIGN, f"no spec in {PROJECT_ROOT / 'campaigns'} is for campaign '{OTHER_CAMPAIGN}'"),
    ],
)
def test_the_dagster_job_fails_with_the_reason(paths: Paths, to_version: int, campaign_id: str, message: str) -> None:
    _promoted(paths, "draft-v2")
    result = _rollback_job(paths, to_version, campaign_id)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert message in failure.step_failure_data.user_failure_data.description
    assert [v.version for v in _versions(paths)] == [0, 1]
