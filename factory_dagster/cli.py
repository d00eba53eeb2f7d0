"""The `factory` command: `demo`, `ui` and `kill-switch`."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import warnings
from datetime import date
from pathlib import Path

from factory_dagster.campaign.spec import SpecError, load_spec
from factory_dagster.settings import PROJECT_ROOT, Paths


def _demo(args: argparse.Namespace, paths: Paths) -> int:
    if args.fresh and paths.home.exists():
        shutil.rmtree(paths.home)
    # Import late: building the definitions parses the dbt project when needed.
    import dagster as dg

    from factory_dagster.definitions import build_definitions
    from factory_dagster.demo import closing_lines, daily_summary, describe_models, format_summary, prepare_dagster_home, run_days
    from factory_dagster.resources import FactoryResource

    instance = prepare_dagster_home(paths)
    factory = FactoryResource.from_paths(paths)  # the line's own resource: the same routing, registry and environment
    print(f"Factory demo: {args.days} days from {args.start}, {args.leads_per_day} sample leads a day")
    try:
        print(describe_models(factory.routes(), factory.registry(), os.environ))
    except dg.Failure as exc:  # a stage routed to a model that needs a key and has no offline stand-in
        print(f"error: {exc.description}", file=sys.stderr)
        return 2
    print(f"data folder: {paths.home}")
    results = run_days(build_definitions(paths), instance, paths, args.start, args.days, args.leads_per_day)
    if results:
        summary = daily_summary(paths, results[0].day, results[-1].day)
        print()
        print(format_summary(summary))
        print()
        for line in closing_lines(results, summary, args.days):
            print(line)
        print(f"runs are in the Dagster instance at {paths.dagster_home} (make ui)")
    print(f"warehouse: {paths.warehouse}")
    return 0 if len(results) == args.days and all(r.completed for r in results) else 1


def _ui(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.demo import prepare_dagster_home

    prepare_dagster_home(paths)
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-p", str(args.port), "-h", args.host]
    os.execv(command[0], command)
    return 0  # not reached


def _kill_switch(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.controls.kill_switch import kill_switch_state, set_kill_switch
    from factory_dagster.warehouse.store import connect

    with connect(paths.warehouse) as con:
        if args.state == "status":
            state = kill_switch_state(con)
        elif not args.reason:
            print("error: --reason is required to change the kill switch", file=sys.stderr)
            return 2
        else:
            state = set_kill_switch(con, args.state == "on", args.actor, args.reason)
    print(f"kill switch: {'ENGAGED' if state.engaged else 'off'} ({state.actor}: {state.reason})")
    return 0


def _holds(args: argparse.Namespace, paths: Paths) -> int:
    from factory_dagster.controls.holds import open_holds, release_day
    from factory_dagster.warehouse.store import connect

    campaign_id = load_spec(paths.spec).campaign_id
    with connect(paths.warehouse) as con:
        if args.action == "release":
            if not (args.day and args.reason):
                print("error: release needs --day and --reason", file=sys.stderr)
                return 2
            if not release_day(con, args.day, campaign_id, args.actor, args.reason):
                print(f"no open hold on {args.day} for {campaign_id}", file=sys.stderr)
                return 1
            print(f"released {args.day}: its messages go out with the next send")
            return 0
        holds = open_holds(con, campaign_id)
    for day, reason in holds:
        print(f"{day}  HELD  {reason}")
    if not holds:
        print("no days are held")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="factory", description="Factory: an AI production line for outreach, on Dagster, dbt and DuckDB."
    )
    commands = root.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run N simulated days of the whole line and print a per-day table")
    demo.add_argument("--days", type=int, default=14, help="number of consecutive daily partitions (default 14)")
    demo.add_argument(
        "--start", type=date.fromisoformat, default=date(2026, 1, 1), help="first day, YYYY-MM-DD (default 2026-01-01)"
    )
    demo.add_argument("--leads-per-day", type=int, default=180, help="sample leads dropped in the inbox per day (default 180)")
    demo.add_argument("--fresh", action="store_true", help="delete the data folder first")
    demo.set_defaults(run=_demo)
    ui = commands.add_parser("ui", help="start the Dagster UI (dagster dev) on the same data folder")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(run=_ui)
    switch = commands.add_parser("kill-switch", help="show, engage (on) or release (off) the send kill switch")
    switch.add_argument("state", choices=["status", "on", "off"])
    switch.add_argument("--reason", help="why (required for on/off)")
    switch.add_argument("--actor", default=getpass.getuser())
    switch.set_defaults(run=_kill_switch)
    holds = commands.add_parser("holds", help="list the days whose messages are held, or release one")
    holds.add_argument("action", choices=["list", "release"])
    holds.add_argument("--day", type=date.fromisoformat, help="the held day, YYYY-MM-DD (release)")
    holds.add_argument("--reason", help="why it may go out now (release)")
    holds.add_argument("--actor", default=getpass.getuser())
    holds.set_defaults(run=_holds)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    paths = Paths.from_env()
    try:
        load_spec(paths.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Dagster's beta/preview notices are for developers, not for the operator's terminal.
    warnings.filterwarnings("ignore")
    return args.run(args, paths)


if __name__ == "__main__":
    sys.exit(main())
