"""`scale.parallel_speedup`: many campaigns' days on the PostgreSQL warehouse, with 1 and with 4 runs at once.

Both passes start from the same state: a fresh database of a throwaway PostgreSQL cluster and a fresh data folder
whose campaigns folder holds CAMPAIGNS copies of the second example spec (each its own campaign id). Each pass runs
every campaign's DAYS days of the real `daily_line` job (dbt included) in WORKERS worker processes: each worker takes
its share of the campaigns and runs their days in order (a campaign's day reads what its day before left), so a pass
with 4 workers has up to 4 runs writing the warehouse at once. The figure is the 1-worker pass's wall time over the
4-worker pass's, measured in one run of this benchmark. The simulated market is off: the runs' outcome imports would
race on its state files, which a real ESP does not have.

Run alone: `python -m benchmarks.scale_parallel [campaigns] [days]` (merges into the `scale` key of results.json).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

CAMPAIGNS = 20
DAYS = 7
LEADS_PER_DAY = 20
START = date(2026, 1, 1)
PASSES = (1, 4)
SECOND_SPEC = Path(__file__).resolve().parent.parent / "campaigns" / "brightwave_spend.yaml"


def campaigns_folder(folder: Path, count: int) -> list[str]:
    """`count` campaigns, copies of the second example spec with ids of their own; their keys."""
    folder.mkdir(parents=True)
    spec = yaml.safe_load(SECOND_SPEC.read_text(encoding="utf-8"))
    keys = [f"campaign_{n:02d}" for n in range(1, count + 1)]
    for key in keys:
        (folder / f"{key}.yaml").write_text(yaml.safe_dump({**spec, "campaign_id": key.replace("_", "-")}), encoding="utf-8")
    return keys


def worker(home: str, url: str, keys: list[str], days: int, out: str) -> None:
    """Run `keys`' days, day by day, in this process; write how many runs succeeded and the first failure."""
    import dagster as dg

    from factory_dagster.campaign.runs import execute_campaign_day
    from factory_dagster.definitions import build_definitions
    from factory_dagster.demo import QUIET_RUN_CONFIG, _failure_message
    from factory_dagster.intake.sample_leads import write_sample_file
    from factory_dagster.settings import Paths

    base = Paths.under(home, spec=Path(home) / "campaigns" / f"{keys[0]}.yaml")
    paths = Paths(base.home, base.warehouse, base.leads_inbox, base.spec, url, Path(home) / "campaigns")
    defs = build_definitions(paths, simulate_market=False)
    instance = dg.DagsterInstance.ephemeral()
    succeeded, failures = 0, []
    for offset in range(days):
        day = START + timedelta(days=offset)
        for key in keys:
            # People of its own for each campaign (its number picks them), whichever worker runs it.
            write_sample_file(paths.campaign_inboxes(key)[0], day, n=LEADS_PER_DAY, seed=100 + int(key.rsplit("_", 1)[1]))
            result = execute_campaign_day(defs, instance, key, day, run_config=QUIET_RUN_CONFIG)
            if result.success:
                succeeded += 1
            else:
                failures.append(f"{key} {day}: {_failure_message(result)}")
    Path(out).write_text(json.dumps({"succeeded": succeeded, "failures": failures[:3]}), encoding="utf-8")


def one_pass(server: Any, workers: int, campaigns: int, days: int, root: Path) -> dict[str, Any]:
    """A fresh database and data folder, then every campaign's days over `workers` processes; wall time and outcome."""
    database = f"parallel_{workers}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
    home = root / f"workers_{workers}"
    keys = campaigns_folder(home / "campaigns", campaigns)
    shares = [keys[n::workers] for n in range(workers)]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    processes = [
        context.Process(target=worker, args=(str(home), server.dsn(database), share, days, str(root / f"out_{workers}_{n}.json")))
        for n, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    wall = time.perf_counter() - started
    outs = [
        json.loads((root / f"out_{workers}_{n}.json").read_text())
        for n in range(workers)
        if (root / f"out_{workers}_{n}.json").exists()
    ]
    with psycopg.connect(server.dsn(database)) as con:
        sends, campaigns_sent = con.execute("SELECT count(*), count(DISTINCT campaign_id) FROM raw.sends").fetchone()
        (builds,) = con.execute("SELECT count(*) FROM raw.dbt_builds").fetchone()
    return {
        "workers": workers,
        "wall_s": round(wall, 1),
        "runs": campaigns * days,
        "runs_succeeded": sum(o["succeeded"] for o in outs),
        "failures": [f for o in outs for f in o["failures"]][:3],
        "sends": sends,
        "campaigns_with_sends": campaigns_sent,
        "dbt_builds": builds,  # the other runs reused a build that started after they asked (learning/build_log.py)
    }


def run(campaigns: int = CAMPAIGNS, days: int = DAYS) -> dict[str, Any]:
    from factory_dagster.warehouse import pg_server

    root = Path(tempfile.mkdtemp(prefix="factory-parallel-"))
    server = pg_server.start(fast=True)  # a folder of its own the server's user can reach
    try:
        passes = {workers: one_pass(server, workers, campaigns, days, root) for workers in PASSES}
    finally:
        pg_server.stop(server, remove=True)
        shutil.rmtree(root, ignore_errors=True)
    serial, parallel = passes[PASSES[0]], passes[PASSES[-1]]
    complete = all(p["runs_succeeded"] == p["runs"] for p in passes.values())
    return {
        "campaigns": campaigns,
        "days": days,
        "leads_per_campaign_day": LEADS_PER_DAY,
        "passes": list(passes.values()),
        "speedup": round(serial["wall_s"] / parallel["wall_s"], 2) if complete else None,
    }


def main(argv: list[str]) -> int:
    campaigns, days = (int(argv[0]), int(argv[1])) if len(argv) >= 2 else (CAMPAIGNS, DAYS)
    figures = run(campaigns, days)
    print(json.dumps(figures, indent=2))
    results = Path(__file__).resolve().parent / "results.json"
    data = json.loads(results.read_text(encoding="utf-8"))
    scale = data.setdefault("scale", {})
    scale["parallel"] = figures
    scale["parallel_speedup"] = figures["speedup"]
    scale.pop("not_measured", None)  # written by older versions of benchmarks/scale.py
    results.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0 if figures["speedup"] is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
