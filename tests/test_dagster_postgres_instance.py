"""The production instance for real: Dagster's storage on PostgreSQL, the daemon's run queue and run monitoring.

Why end to end: deploy/dagster.production.yaml is only worth what the pinned Dagster really does with it. A
throwaway PostgreSQL cluster holds the instance; one code server (`dagster api grpc`) serves the code location that
workspace.yaml names, and `dagster-daemon run` and every CLI call reach it over gRPC. Runs go in through Dagster's
own CLI, as an operator's would, and each is a process of its own that the code server started for the daemon. The
instance's file is the production file with the test cluster in its environment variables (every Dagster process
reaches it through PgBouncer in session mode, as docs/deployment.md advises), a run limit below the
number of runs (so the queue has to hold one back), and monitoring intervals of seconds. The campaigns' warehouse is
a PostgreSQL database of the same cluster, as parallel runs need: the DuckDB file has one writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG
from dagster._grpc.client import DagsterGrpcClient
from helpers_line import START
from pgbouncer_server import POOL_SIZE, pooler
from postgres_server import new_database, server_sessions

from factory_dagster.campaign.runs import register_campaigns
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.partitions import line_key
from factory_dagster.resources import POOL
from factory_dagster.settings import PROJECT_ROOT
from factory_dagster.warehouse import pg_server

PRODUCTION = PROJECT_ROOT / "deploy" / "dagster.production.yaml"
MODULE, LOCATION = "factory_dagster.definitions", "factory"  # as in the repository's workspace.yaml
BIN = Path(sys.executable).parent
JOB = "daily_line"
MAX_CONCURRENT_RUNS = 2  # below the number of runs, so the queue must hold one back
# The queue counts a run's root steps in the pool (`leads`, `outcome_events`) against its limit while the run starts
# and for 5 s after: a pool of 2 x the run limit never holds a run back, so the run limit is what does.
POOL_LIMIT = 2 * MAX_CONCURRENT_RUNS
FREE_SLOTS_AFTER_RUN_END_SECONDS = 2
LEADS_PER_DAY = 4
# Three campaigns' runs of one day (the two examples and a copy of the second under another id); the last one's run
# is held back by the run limit, then killed.
CAMPAIGN_KEYS = ["brightwave_close", "brightwave_spend", "third_campaign"]
KILLED_CAMPAIGN = CAMPAIGN_KEYS[-1]
WAIT_SECONDS = 240
# The watcher must see the run hold its slot while its first step runs, and the slot still held within
# FREE_SLOTS_AFTER_RUN_END_SECONDS of the run's failure; runs finishing and a slot being freed are waited for slowly.
FAST_POLL_SECONDS, SLOW_POLL_SECONDS = 0.2, 1.0
CODE_SERVER_ATTEMPTS = 3
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def partition_key(campaign: str, day: date) -> str:
    """The daily line's partition key of a campaign's day."""
    return str(line_key(campaign, day))


def campaigns_folder(folder: Path) -> Path:
    """The example campaigns, and a third: a copy of the second with an id of its own."""
    folder.mkdir()
    for name in ("brightwave_close.yaml", "brightwave_spend.yaml"):
        shutil.copy(PROJECT_ROOT / "campaigns" / name, folder / name)
    third = yaml.safe_load((folder / "brightwave_spend.yaml").read_text(encoding="utf-8"))
    third["campaign_id"] = "third-campaign"
    (folder / "third_campaign.yaml").write_text(yaml.safe_dump(third), encoding="utf-8")
    return folder


def instance_config() -> dict:
    """The production instance file, with the test's run limit, and a queue and monitoring that act within seconds."""
    config = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
    config["concurrency"]["runs"]["max_concurrent_runs"] = MAX_CONCURRENT_RUNS
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    config["run_monitoring"] |= {
        "poll_interval_seconds": 1,
        "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_RUN_END_SECONDS,
    }
    config["telemetry"] = {"enabled": False}
    return config


@dataclass(frozen=True)
class Deployment:
    """A running code server and daemon over a PostgreSQL-backed instance, and how to reach them."""

    environment: Mapping[str, str]
    workspace: Path
    instance: dg.DagsterInstance
    database_dsn: str
    warehouse_dsn: str
    factory_home: Path
    daemon: subprocess.Popen


def _dagster_cli(environment: Mapping[str, str], *arguments: str) -> str:
    result = subprocess.run(
        [str(BIN / "dagster"), *arguments],
        env=dict(environment),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"dagster {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _start_service(
    stack: contextlib.ExitStack, command: list[str], environment: Mapping[str, str], log: Path
) -> subprocess.Popen:
    """A long-running Dagster process in a process group of its own, stopped with all its children when `stack` closes."""
    output = stack.enter_context(open(log, "w", encoding="utf-8"))
    process = subprocess.Popen(
        command, env=dict(environment), cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(_stop_process_group, process)
    return process


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGINT to the process group (the process and, for the code server, its run workers), then SIGKILL the rest.

    A process that outlives SIGINT is killed alone first: its multiprocessing resource tracker, in the same group,
    then sees it go and unlinks the semaphores it registered (the code server makes some for each run it starts),
    which a SIGKILL of the whole group would leave in /dev/shm."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)  # raises once the group is empty
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)


def _shut_down_code_server(port: int, server: subprocess.Popen) -> None:
    """Dagster's own way to stop a code server, the gRPC call the webserver makes to servers it manages: it exits
    once no run it started is going, and runs its exit handlers. After SIGINT alone it sometimes waited for more than
    20 s under the whole suite's load."""
    if server.poll() is None:
        with contextlib.suppress(Exception):  # a server that cannot answer is stopped by _stop_process_group
            DagsterGrpcClient(port=port, host="127.0.0.1").shutdown_server()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)


def _start_code_server(
    stack: contextlib.ExitStack, environment: Mapping[str, str], workspace: Path, root: Path
) -> tuple[int, subprocess.Popen]:
    """`dagster api grpc` on a free port, and the workspace file that names it."""
    port = pg_server.free_port()
    workspace.write_text(
        yaml.safe_dump({"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": LOCATION}}]}),
        encoding="utf-8",
    )
    command = [str(BIN / "dagster"), "api", "grpc", "-m", MODULE, "--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(port)]
    return port, _start_service(stack, command, environment, root / f"code_server_{port}.log")


def _code_server_listens(port: int, server: subprocess.Popen) -> bool:
    """Wait until the code server accepts connections (it loads the code location before it listens; a health-check
    command instead would start a Python process of its own every half second while the server loads). False when it
    exited first: another process took the free port between the probe and the bind, so the caller tries another."""
    deadline = time.monotonic() + WAIT_SECONDS
    while server.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        assert time.monotonic() < deadline, f"the code server on port {port} did not answer in {WAIT_SECONDS}s"
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def deployment(postgres_server: pg_server.PostgresServer, tmp_path_factory, dbt_manifest) -> Iterator[Deployment]:
    """Production's layout on one machine: one code server for the code location, the daemon and every CLI call
    reach it over gRPC (so the definitions are imported once, not by each), and each run is a process of its own."""
    database, warehouse = new_database(postgres_server, "dagster"), new_database(postgres_server, "warehouse")
    root = tmp_path_factory.mktemp("production")
    dagster_home, factory_home, workspace = root / "dagster_home", root / "factory", root / "workspace.yaml"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config()), encoding="utf-8")
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "FACTORY_HOME": str(factory_home),
        "FACTORY_CAMPAIGNS": str(campaigns_folder(root / "campaigns")),
        "FACTORY_WAREHOUSE_URL": postgres_server.dsn(warehouse),
        "PYTHONPATH": str(PROJECT_ROOT),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": pg_server.SUPERUSER,
        "DAGSTER_PG_PASSWORD": "",  # the test cluster trusts loopback
    }
    with contextlib.ExitStack() as stack:
        # Dagster's processes reach its database through PgBouncer, as docs/deployment.md advises (pgbouncer_server).
        environment["DAGSTER_PG_PORT"] = str(stack.enter_context(pooler(postgres_server)))
        port, server = _start_code_server(stack, environment, workspace, root)
        # The pool's limit is set by name, as docs/deployment.md says for the PostgreSQL warehouse (this also creates
        # the instance's tables).
        _dagster_cli(environment, "instance", "concurrency", "set", POOL, str(POOL_LIMIT))
        for attempt in range(CODE_SERVER_ATTEMPTS):
            if _code_server_listens(port, server):
                break
            assert attempt + 1 < CODE_SERVER_ATTEMPTS, (
                f"the code server exited with {server.returncode}, {CODE_SERVER_ATTEMPTS} times"
            )
            port, server = _start_code_server(stack, environment, workspace, root)
        stack.callback(_shut_down_code_server, port, server)  # before _stop_process_group (the stack unwinds backwards)
        daemon = _start_service(
            stack, [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], environment, root / "daemon.log"
        )
        with pytest.MonkeyPatch.context() as patch:  # this process reads the same instance
            for name in (
                "DAGSTER_HOME",
                "DAGSTER_PG_HOST",
                "DAGSTER_PG_PORT",
                "DAGSTER_PG_DB",
                "DAGSTER_PG_USER",
                "DAGSTER_PG_PASSWORD",
            ):
                patch.setenv(name, environment[name])
            with dg.DagsterInstance.get() as instance:
                yield Deployment(
                    environment,
                    workspace,
                    instance,
                    postgres_server.dsn(database),
                    environment["FACTORY_WAREHOUSE_URL"],
                    factory_home,
                    daemon,
                )


def submit_partition_runs(deployment: Deployment, job: str, keys: list[str]) -> list[dg.DagsterRun]:
    """One run per partition key into the daemon's queue, through Dagster's CLI (`dagster job backfill`)."""
    output = _dagster_cli(
        deployment.environment,
        "job",
        "backfill",
        "-w",
        str(deployment.workspace),
        "-j",
        job,
        "--partitions",
        ",".join(keys),
        "--noprompt",
    )
    backfill_id = re.search(r"Launched backfill job `(\w+)`", output)
    assert backfill_id, output
    runs = deployment.instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id.group(1)}))
    assert sorted(run.tags[PARTITION_NAME_TAG] for run in runs) == sorted(keys)
    return runs


@contextlib.contextmanager
def connection_peak(dsn: str) -> Iterator[list[int]]:
    """Sample the number of connections to the instance's database while the block runs (Dagster opens one per
    query and per waiting step, and a busy instance can run out of them)."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(dsn, autocommit=True) as con:
            while not stop.wait(0.2):
                row = con.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()").fetchone()
                samples.append(row[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join(timeout=10)


def wait_for(
    condition: Callable[[], object],
    what: str,
    deployment: Deployment,
    timeout_s: float = WAIT_SECONDS,
    interval_s: float = SLOW_POLL_SECONDS,
) -> object:
    """Poll `condition` until it is true. Each poll is a few new connections to the instance's database (Dagster's
    storage opens one per query), so only what must be caught within a step polls fast."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert deployment.daemon.poll() is None, f"dagster-daemon exited with {deployment.daemon.returncode}"
        time.sleep(interval_s)
    raise AssertionError(f"waited {timeout_s:.0f}s for {what}")


def wait_until_finished(deployment: Deployment, run_ids: list[str]) -> list[dg.DagsterRun]:
    def finished() -> list[dg.DagsterRun] | None:
        runs = deployment.instance.get_runs(filters=dg.RunsFilter(run_ids=run_ids))
        return runs if all(run.is_finished for run in runs) else None

    return wait_for(finished, f"runs {run_ids} to finish", deployment)


def event_times(instance: dg.DagsterInstance, run_id: str) -> dict[DagsterEventType, float]:
    """When each run-level event of the run was recorded (the first of each type)."""
    times: dict[DagsterEventType, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            times.setdefault(entry.dagster_event.event_type, entry.timestamp)
    return times


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's process id, from the engine event its code server records when it starts it."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        found = WORKER_PID.search(entry.message or "")
        if found:
            return int(found.group(1))
    return None


def failure_report(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> str:
    lines = []
    for run in runs:
        if run.status != dg.DagsterRunStatus.SUCCESS:
            errors = [e.message for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_failure]
            lines.append(f"{run.run_id} {run.tags.get(PARTITION_NAME_TAG)} {run.status}: {errors[:3]}")
    return "\n".join(lines)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


@dataclass
class Backfill:
    """One backfill of the three campaigns' first day. The queue starts two; the third waits for one of them to end,
    and a watcher kills its run worker (SIGKILL) as soon as it holds a pool slot (its first step imports the
    campaign's leads, in one transaction)."""

    day_runs: list[dg.DagsterRun]
    killed_run: dg.DagsterRun
    connection_peak: list[int]
    killed: threading.Event  # set once the worker is killed and its run failed
    slot_held_after_failure: list[bool]
    watcher_error: list[str]


def holds_slot(instance: dg.DagsterInstance, run_id: str) -> bool:
    return run_id in instance.event_log_storage.get_concurrency_info(POOL).active_run_ids


@pytest.fixture(scope="module")
def backfill(deployment: Deployment) -> Iterator[Backfill]:
    instance = deployment.instance
    for campaign in CAMPAIGN_KEYS:
        write_sample_file(deployment.factory_home / "inbox" / "leads" / campaign, START, n=LEADS_PER_DAY)
    register_campaigns(instance, CAMPAIGN_KEYS)  # as the daily schedule does
    killed_key = partition_key(KILLED_CAMPAIGN, START)
    with connection_peak(deployment.database_dsn) as peak:
        runs = submit_partition_runs(deployment, JOB, [partition_key(campaign, START) for campaign in CAMPAIGN_KEYS])
        (killed_run,) = [run for run in runs if run.tags[PARTITION_NAME_TAG] == killed_key]
        killed, held, errors = threading.Event(), [], []

        def kill_when_it_holds_a_slot() -> None:
            try:
                wait_for(
                    lambda: holds_slot(instance, killed_run.run_id),
                    "the run to hold a slot",
                    deployment,
                    interval_s=FAST_POLL_SECONDS,
                )
                pid = worker_pid(instance, killed_run.run_id)
                assert pid is not None, "no worker pid recorded"
                os.kill(pid, signal.SIGKILL)
                wait_for(
                    lambda: instance.get_run_by_id(killed_run.run_id).is_finished,
                    "the run to be failed",
                    deployment,
                    60,
                    FAST_POLL_SECONDS,
                )
                held.append(holds_slot(instance, killed_run.run_id))  # before monitoring's delay has passed
                killed.set()
            except AssertionError as exc:  # reported by the test that reads it
                errors.append(str(exc))

        watcher = threading.Thread(target=kill_when_it_holds_a_slot, daemon=True)
        watcher.start()
        yield Backfill([run for run in runs if run is not killed_run], killed_run, peak, killed, held, errors)
        watcher.join(timeout=WAIT_SECONDS)


def test_the_daemon_runs_queued_campaign_runs_in_parallel_within_the_run_limit(
    deployment: Deployment, backfill: Backfill
) -> None:
    started = time.monotonic()
    runs = backfill.day_runs
    finished = wait_until_finished(deployment, [run.run_id for run in runs])
    instance = deployment.instance
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in finished), failure_report(instance, finished)
    (killed,) = wait_until_finished(deployment, [backfill.killed_run.run_id])

    in_progress = []
    for run in finished:
        times = event_times(instance, run.run_id)
        # The queue held every run: enqueued, then dequeued by the daemon, then started by its worker.
        order = [
            DagsterEventType.RUN_ENQUEUED,
            DagsterEventType.RUN_STARTING,
            DagsterEventType.RUN_START,
            DagsterEventType.RUN_SUCCESS,
        ]
        assert all(kind in times for kind in order), [kind for kind in order if kind not in times]
        assert [times[kind] for kind in order] == sorted(times[kind] for kind in order)
        in_progress.append((times[DagsterEventType.RUN_STARTING], times[DagsterEventType.RUN_SUCCESS]))
    # The queue held the third run back: waiting while the first two ran, started once one of them had ended.
    held_back = event_times(instance, killed.run_id)
    first_end = min(end for _, end in in_progress)
    assert held_back[DagsterEventType.RUN_ENQUEUED] < first_end <= held_back[DagsterEventType.RUN_STARTING], (
        held_back,
        in_progress,
    )
    in_progress.append((held_back[DagsterEventType.RUN_STARTING], held_back[DagsterEventType.RUN_FAILURE]))
    # The limit held, and the daemon did run them side by side, each in a worker process of its own.
    assert 2 <= most_at_once(in_progress) <= MAX_CONCURRENT_RUNS, in_progress
    pids = {worker_pid(instance, run.run_id) for run in finished}
    assert None not in pids and len(pids) == len(finished) and deployment.daemon.pid not in pids

    # Run history and events are in PostgreSQL, where every process of the deployment reads and writes them.
    with psycopg.connect(deployment.database_dsn) as con:
        stored = dict(con.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", [[r.run_id for r in runs]]))
        events = con.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s)", [[r.run_id for r in runs]]).fetchone()
    assert stored == {run.run_id: "SUCCESS" for run in runs}
    assert events[0] > 10 * len(runs)
    # Each campaign's day went to the PostgreSQL warehouse, which they wrote at once; no DuckDB file was made. The
    # killed run's import is all or nothing (one transaction).
    with psycopg.connect(deployment.warehouse_dsn) as con:
        leads = dict(con.execute("SELECT campaign_id, count(*) FROM raw.leads GROUP BY campaign_id").fetchall())
    assert leads.pop("third-campaign", 0) in (0, LEADS_PER_DAY)
    assert leads == {"brightwave-close": LEADS_PER_DAY, "brightwave-spend": LEADS_PER_DAY}
    assert not list(deployment.factory_home.rglob("*.duckdb"))
    # Dagster's connections to its database stayed far below the server's max_connections (pg_server: 50).
    assert 0 < max(backfill.connection_peak) <= 25, max(backfill.connection_peak)
    # Thousands of Dagster's client sessions (one per query) shared the few server connections PgBouncer kept open:
    # without it the server started about 3,900 sessions for this module (docs/deployment.md).
    sessions = server_sessions(deployment.database_dsn)
    assert sessions <= 2 * POOL_SIZE + 10, sessions
    print(
        f"{len(runs)} runs and a killed one through the queue in {time.monotonic() - started:.1f}s, at most {max(backfill.connection_peak)} connections, {sessions} server sessions"
    )


def test_a_killed_run_worker_fails_its_run_and_monitoring_frees_its_pool_slot(deployment: Deployment, backfill: Backfill) -> None:
    instance, run = deployment.instance, backfill.killed_run
    assert backfill.killed.wait(WAIT_SECONDS), backfill.watcher_error or "the watcher did not kill the run's worker"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert backfill.slot_held_after_failure == [True]  # nothing but run monitoring frees a dead worker's slot ...
    wait_for(lambda: not holds_slot(instance, run.run_id), f"the `{POOL}` slot of run {run.run_id} to be freed", deployment, 60)
    messages = [e.message or "" for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)]
    assert any("terminated by signal 9" in m for m in messages), messages
