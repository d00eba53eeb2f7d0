"""A run whose process died is failed and its `duckdb` pool slot freed; a live one is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from factory_dagster.controls.runs import PID_TAG, PROCESS_TAG, is_dead, process_tags, recover_dead_runs
from factory_dagster.resources import POOL


def _started_run(instance: dg.DagsterInstance, run_id: str, tags: dict[str, str]) -> None:
    instance.add_run(DagsterRun(job_name="daily_line", run_id=run_id, status=DagsterRunStatus.STARTED, tags=tags))
    assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "dbt_marts").is_claimed


def _tags_of_a_finished_process() -> dict[str, str]:
    """The tags a process would have put on its runs, taken from a real process that has since exited."""
    code = "import json; from factory_dagster.controls.runs import process_tags; print(json.dumps(process_tags()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_a_killed_demos_run_is_failed_and_its_slot_freed_so_the_next_run_can_start(tmp_path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        _started_run(instance, "dead-run", _tags_of_a_finished_process())
        # The slot is taken: a new run's step could not claim it.
        assert not instance.event_log_storage.claim_concurrency_slot(POOL, "next-run", "leads").is_claimed
        assert recover_dead_runs(instance) == ["dead-run"]
        assert instance.get_run_by_id("dead-run").status == DagsterRunStatus.FAILURE
        assert instance.event_log_storage.claim_concurrency_slot(POOL, "next-run", "leads").is_claimed


def test_live_runs_and_runs_of_other_launchers_are_left_alone(tmp_path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 2)
        _started_run(instance, "this-process", process_tags())
        _started_run(instance, "from-the-ui", {})
        assert recover_dead_runs(instance) == []
        assert {r.status for r in instance.get_runs()} == {DagsterRunStatus.STARTED}


def test_a_reused_pid_is_not_taken_for_the_original_process() -> None:
    tags = process_tags()
    assert not is_dead(tags)
    assert is_dead({**tags, PROCESS_TAG: "0"})  # same pid, another start time: not the same process
    assert not is_dead({k: v for k, v in tags.items() if k != PID_TAG})
