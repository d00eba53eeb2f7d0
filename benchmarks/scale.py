"""`scale`: how far one machine carries the line on the DuckDB warehouse (issue 13, item 5).

Two figures, each measured in a process of its own so its wall time and peak RSS are its alone:

- `day_100k_*`: one 100,000-lead day through the real `daily_line` job (intake, plan, assign, draft,
  gates, send on the offline models) and the marts refresh after it, on a fresh data folder. The
  example spec caps sends (180) and model spend ($2) a day, so the day runs on a copy of it in the temp
  data folder with both caps raised; everything else is the example's.
- `marts_10m_events_s`: the learn stage's `dbt build` over 10 million events. A short demo builds a real
  warehouse; its lead-keyed raw rows are replicated with SQL (ids suffixed, so every key stays
  consistent across tables, and the copies spread over a year of days) until `raw.events` holds 10M rows.

- `parallel_speedup`: many campaigns' days on the PostgreSQL warehouse with 1 and with 4 runs at once
  (`benchmarks/scale_parallel.py`, which also runs alone and merges its figures into this key).

Run alone: `python -m benchmarks.scale` (writes the `scale` key of results.json).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import yaml

LEADS = 100_000
EVENTS = 10_000_000
DAY = date(2026, 1, 1)
DAY_TIMEOUT_S = 30 * 60
MARTS_TIMEOUT_S = 20 * 60
SEED_DEMO_DAYS = 7  # the demo whose warehouse is scaled up: a week, so part of its sends have outcomes
SPREAD_SLOTS = 52  # copies shift by multiples of the seed demo's length: 52 weeks of days
BUDGET_USD = 10_000.0  # offline models cost about $0.0008 a lead in the ledger: far above a 100k day

# The raw tables the marts read per lead, send or model call: replicated. The others (experiments, their looks and
# events, the content line's tables, caches, the kill switch) stay as the demo left them.
REPLICATED = (
    "leads",
    "leads_quarantine",
    "assignments",
    "drafts",
    "gate_results",
    "messages",
    "messages_quarantine",
    "audits",
    "sends",
    "events",
    "llm_calls",
    "message_edits",
    "message_reviews",
)
# Columns that identify a row or point at one: suffixed per copy, the same way in every table.
ID_COLUMNS = frozenset(
    {
        "lead_id",
        "send_id",
        "message_id",
        "draft_id",
        "llm_call_id",
        "call_id",
        "event_id",
        "audit_id",
        "reply_id",
        "edit_id",
        "review_id",
    }
)
EMAIL_COLUMNS = frozenset({"email", "to_email"})


def probe_s() -> float:
    """The fixed pure-Python probe the README quotes with every figure (the shared VM's speed drifts)."""
    import hashlib

    block, started = b"x" * 1024, time.time()
    for _ in range(300_000):
        hashlib.sha256(block).digest()
    return round(time.time() - started, 3)


# --- replication ---------------------------------------------------------------------------------


def copy_select(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """SELECT of one copy `k` (a column of the cross-joined range) of `raw.<table>`: ids suffixed, dates shifted by `shift` days."""
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()
    parts = []
    for name, data_type in columns:
        quoted = f'"{name}"'
        if name in ID_COLUMNS:
            parts.append(f"{quoted} || '~' || k")
        elif name in EMAIL_COLUMNS:
            parts.append(f"replace({quoted}, '@', '+' || k || '@')")
        elif data_type == "DATE":
            parts.append(f"{quoted} + shift")
        elif data_type.startswith("TIMESTAMP"):
            parts.append(f"{quoted} + to_days(shift)")
        else:
            parts.append(quoted)
    return ", ".join(parts)


def replicate(con: duckdb.DuckDBPyConnection, copies: int, period_days: int, spread: int = SPREAD_SLOTS) -> dict[str, int]:
    """Add copies 1..copies-1 of the replicated tables' rows, so each holds `copies` times its rows.

    Copy k shifts every date and timestamp by (k mod spread) x period_days days: the demo's days tile a
    longer calendar, each slot holding about copies / spread copies. Returns each table's rows afterwards.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    counts = {}
    for table in REPLICATED:
        if copies > 1:
            con.execute(
                f"""INSERT INTO raw.{table}
                    SELECT {copy_select(con, table)}
                    FROM raw.{table} AS source,
                         (SELECT k, CAST((k % {spread}) * {period_days} AS INTEGER) AS shift FROM range(1, {copies}) r(k)) AS copies
                    ORDER BY k"""
            )
        counts[table] = con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
    return counts


def copies_for(events_in_seed: int, target: int = EVENTS) -> int:
    if events_in_seed <= 0:
        raise ValueError("the seed warehouse has no events to replicate")
    return math.ceil(target / events_in_seed)


# --- processes -----------------------------------------------------------------------------------


def _run_child(args: list[str], env: dict[str, str], timeout_s: float, log: Path) -> tuple[int | None, float, float]:
    """(exit code or None when stopped at the timeout, wall s, peak RSS MB) of one child process, its own rusage."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        status = rusage = None
        while True:
            pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout_s:
                os.killpg(child.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(child.pid, 0)
                child.returncode = None
                return None, time.perf_counter() - started, rusage.ru_maxrss / 1024
            time.sleep(0.5)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - started, rusage.ru_maxrss / 1024  # KiB on Linux


def benchmark_spec(home: Path, sends: int) -> Path:
    """The example spec with its daily send cap and budget raised for a day of `sends` leads, in the data folder."""
    from factory_dagster.settings import DEFAULT_SPEC_PATH

    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["limits"]["daily_send_cap"] = sends
    spec["limits"]["daily_budget_usd"] = BUDGET_USD
    path = home / "benchmark_spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def _env(home: Path, spec: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "FACTORY_HOME": str(home)}
    env.pop("OPENAI_API_KEY", None)
    env.pop("FACTORY_WAREHOUSE", None)
    env.pop("FACTORY_WAREHOUSE_URL", None)
    if spec is not None:
        env["FACTORY_SPEC"] = str(spec)
    return env


def _step_times(dagster_home: Path) -> dict[str, dict[str, float]]:
    """job -> step -> seconds, from the runs the Dagster instance recorded (finished steps and the one running)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    steps: dict[str, dict[str, float]] = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            for step in instance.get_run_step_stats(run.run_id):
                end = step.end_time or time.time()
                steps.setdefault(run.job_name, {})[step.step_key] = round(end - (step.start_time or end), 2)
    return steps


# --- the 100,000-lead day ------------------------------------------------------------------------


def day_worker(leads: int, timings: Path) -> int:
    """In the child: the day's sample file, then `daily_line` and the marts refresh in-process (as `factory demo`)."""
    marks: dict[str, Any] = {"started": time.time()}
    from factory_dagster.definitions import build_definitions
    from factory_dagster.demo import prepare_dagster_home, run_days
    from factory_dagster.intake.sample_leads import write_sample_file
    from factory_dagster.settings import Paths

    paths = Paths.from_env()
    instance = prepare_dagster_home(paths)
    defs = build_definitions(paths)
    marks["setup_s"] = round(time.time() - marks["started"], 2)
    started = time.time()
    write_sample_file(paths.leads_inbox, DAY, n=leads)
    marks["sample_file_s"] = round(time.time() - started, 2)
    timings.write_text(json.dumps(marks))
    started = time.time()
    results = run_days(defs, instance, paths, DAY, 1, leads, progress=lambda line: print(line, flush=True))
    marks["line_s"] = round(time.time() - started, 2)
    marks["day_run_s"] = round(results[0].seconds, 2) if results else None
    marks["completed"] = bool(results and results[0].completed)
    marks["error"] = results[0].error if results else "no day ran"
    timings.write_text(json.dumps(marks))
    return 0 if marks["completed"] else 1


def _warehouse_counts(warehouse: Path) -> dict[str, int]:
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            tables = {
                t
                for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()
            }
            counts = {n: con.execute(f"SELECT count(*) FROM raw.{n}").fetchone()[0] for n in REPLICATED if n in tables}
            if {"assignments", "messages", "messages_quarantine"} <= tables:
                # Assigned leads with neither a message nor a quarantine row wait for the next day: the consistency
                # gate postpones a lead whose every draft reads like a colleague's message going out today.
                counts["waiting_for_next_day"] = counts["assignments"] - counts["messages"] - counts["messages_quarantine"]
            if "llm_calls" in tables:
                counts["offline_cost_usd"] = round(
                    con.execute("SELECT coalesce(sum(cost_usd), 0) FROM raw.llm_calls").fetchone()[0], 2
                )
            return counts
    except duckdb.Error as exc:
        return {"error": str(exc)}  # type: ignore[dict-item]


def run_day(leads: int = LEADS, timeout_s: float = DAY_TIMEOUT_S, keep: Path | None = None) -> dict[str, Any]:
    """One `leads`-lead day on a fresh data folder in a child process: wall, peak RSS, where the time went."""
    with tempfile.TemporaryDirectory(prefix="factory-scale-day-") as tmp:
        home = Path(keep or tmp)
        home.mkdir(parents=True, exist_ok=True)
        spec = benchmark_spec(home, leads)
        timings = home / "scale_timings.json"
        probe_before = probe_s()
        code, wall, rss = _run_child(
            [sys.executable, "-m", "benchmarks.scale", "--day-worker", str(leads), str(timings)],
            _env(home, spec),
            timeout_s,
            home / "scale_day.log",
        )
        marks = json.loads(timings.read_text()) if timings.exists() else {}
        marks.pop("started", None)
        steps = _step_times(home / "dagster_home") if (home / "dagster_home").exists() else {}
        return {
            "leads": leads,
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "exit": "stopped at the timeout" if code is None else code,
            "phases_s": marks,
            "steps_s": steps,
            "rows": _warehouse_counts(home / "warehouse.duckdb"),
            "spec": f"the example spec with limits.daily_send_cap = {leads} and daily_budget_usd = {BUDGET_USD:.0f}",
            "probe_s": [probe_before, probe_s()],
        }


# --- the marts over 10M events -------------------------------------------------------------------


def marts_worker(warehouse: Path, target: Path, out: Path) -> int:
    """In the child: the learn stage's build (its selection, in-process dbt), first whole, then as a later day runs it."""
    from factory_dagster.learning import view_reuse
    from factory_dagster.learning.dbt_project import INTEGRITY_TAG
    from factory_dagster.learning.dbt_runner import invoke
    from factory_dagster.learning.manifest import ensure_manifest

    manifest = json.loads(ensure_manifest().read_text())
    views = view_reuse.view_nodes(manifest)
    marks: dict[str, Any] = {}
    started = time.time()
    full = invoke(["build", "--exclude", f"tag:{INTEGRITY_TAG}"], warehouse, target)
    marks["full_build_s"] = round(time.time() - started, 2)
    marks["full_build_success"] = full.success
    marks["full_build_failures"] = full.failures[:10] + ([full.error] if full.error else [])
    marks["nodes_s"] = {
        event["data"]["node_info"]["node_name"]: round(event["data"].get("execution_time", 0.0), 2) for event in full.results
    }
    out.write_text(json.dumps(marks))
    if full.success:
        view_reuse.record(warehouse, target, views)
        if view_reuse.reusable(warehouse, target, views):
            started = time.time()
            daily = invoke(
                ["build", *view_reuse.build_args_without_views(manifest, exclude=f"tag:{INTEGRITY_TAG}")], warehouse, target
            )
            marks["daily_build_s"] = round(time.time() - started, 2)
            marks["daily_build_success"] = daily.success
    out.write_text(json.dumps(marks))
    return 0 if full.success else 1


def run_marts(events: int = EVENTS, seed_days: int = SEED_DEMO_DAYS, timeout_s: float = MARTS_TIMEOUT_S) -> dict[str, Any]:
    """A `seed_days` demo scaled up to `events` events, then the learn stage's dbt build over it, timed."""
    with tempfile.TemporaryDirectory(prefix="factory-scale-marts-") as tmp:
        home = Path(tmp)
        factory = Path(sys.executable).with_name("factory")
        started = time.perf_counter()
        subprocess.run([str(factory), "demo", "--days", str(seed_days)], env=_env(home), check=True, stdout=subprocess.DEVNULL)
        seed_s = time.perf_counter() - started
        warehouse = home / "warehouse.duckdb"
        with duckdb.connect(str(warehouse)) as con:
            seed_rows = {t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0] for t in REPLICATED}
            copies = copies_for(seed_rows["events"], events)
            started = time.perf_counter()
            rows = replicate(con, copies, seed_days)
            con.execute("CHECKPOINT")
            replicate_s = time.perf_counter() - started
            days = con.execute("SELECT count(DISTINCT partition_day) FROM raw.sends").fetchone()[0]
        size_mb = warehouse.stat().st_size / 2**20
        out = home / "scale_marts.json"
        probe_before = probe_s()
        code, wall, rss = _run_child(
            [sys.executable, "-m", "benchmarks.scale", "--marts-worker", str(warehouse), str(home / "dbt_target"), str(out)],
            _env(home),
            timeout_s,
            home / "scale_marts.log",
        )
        marks = json.loads(out.read_text()) if out.exists() else {}
        return {
            "seed_demo_days": seed_days,
            "seed_demo_s": round(seed_s, 1),
            "seed_rows": seed_rows,
            "copies": copies,
            "replicate_s": round(replicate_s, 1),
            "rows": rows,
            "send_days": days,
            "warehouse_mb": round(size_mb),
            "process_wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "exit": "stopped at the timeout" if code is None else code,
            **marks,
            "probe_s": [probe_before, probe_s()],
        }


# --- the benchmark -------------------------------------------------------------------------------


def run() -> dict[str, Any]:
    from benchmarks import scale_parallel

    return assemble(run_day(), run_marts(), scale_parallel.run())


def assemble(day: dict[str, Any], marts: dict[str, Any], parallel: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `scale` key from the measurements: headline figures first, then each one's details."""
    slowest = sorted(
        ((f"{job}.{step}", s) for job, steps in day["steps_s"].items() for step, s in steps.items()), key=lambda x: -x[1]
    )
    return {
        "day_100k_s": day["wall_s"],
        "day_100k_rss_mb": day["peak_rss_mb"],
        "day_100k_steps": dict(slowest),
        "day_100k": day,
        "marts_10m_events_s": marts.get("full_build_s"),
        "marts_10m_daily_build_s": marts.get("daily_build_s"),
        "marts_10m_rss_mb": marts.get("peak_rss_mb"),  # DuckDB's buffer pool takes up to 80% of RAM by default
        "marts_rows": marts["rows"],
        "marts_10m": marts,
        "parallel_speedup": parallel["speedup"] if parallel else None,
        "parallel": parallel,
        "goals": {"day_100k_s": 600, "day_100k_rss_mb": 2048, "marts_10m_events_s": 60, "parallel_speedup": 1.5},
    }


def write_result(figures: dict[str, Any]) -> None:
    """Merge the `scale` key into results.json the way `python -m benchmarks` does (read again just before writing)."""
    from benchmarks.__main__ import RESULTS

    figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    figures["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": sys.platform}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["scale"] = figures
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--day-worker"]:
        return day_worker(int(argv[1]), Path(argv[2]))
    if argv[:1] == ["--marts-worker"]:
        return marts_worker(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    if argv[:1] == ["--day"]:  # one day alone, e.g. `--day 5000` to see how it scales; printed, not written
        print(json.dumps(run_day(int(argv[1])), indent=2))
        return 0
    if argv[:1] == ["--marts"]:
        print(json.dumps(run_marts(int(argv[1])), indent=2))
        return 0
    if argv[:1] == ["--assemble"]:  # the printed outputs of `--day 100000` and `--marts 10000000`, measured apart
        from benchmarks.__main__ import RESULTS

        recorded = json.loads(RESULTS.read_text()).get("scale", {}) if RESULTS.exists() else {}
        day, marts = (json.loads(Path(name).read_text()) for name in argv[1:3])
        figures = assemble(day, marts, recorded.get("parallel"))  # the parallel passes as scale_parallel recorded them
        write_result(figures)
        print(json.dumps({"scale": figures}, indent=2))
        return 0
    figures = run()
    write_result(figures)
    print(json.dumps({"scale": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
