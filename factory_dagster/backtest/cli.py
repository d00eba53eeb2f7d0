"""`factory backtest`: what uniform, each arm, the best arm in hindsight and Factory's own allocation
would have earned on a log of past decisions (see `policies` for the methods).

    factory backtest --log FILE --arm COL --reward COL [--context COL,COL...]
                     [--propensity COL | --uniform] [--batch-size N] [--seed N] [--json OUT]
    factory backtest --warehouse [PATH] [--level angle|arm] [--export-log OUT.csv] [--json OUT]

The second form backtests the line's own logged assignments (`warehouse.warehouse_log`): context the
segment, propensities as logged, one batch per day. Exit codes: 0 done, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from factory_dagster.cli_types import positive_int
from factory_dagster.settings import Paths

DEFAULT_BATCH_SIZE = 180  # a day of the demo line
_LOG_FLAGS = {"--arm": "arm", "--reward": "reward", "--context": "context", "--propensity": "propensity", "--uniform": "uniform"}


def _columns(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def register(commands: argparse._SubParsersAction) -> None:
    """Add `factory backtest` to the `factory` command."""
    parser = commands.add_parser(
        "backtest",
        help="estimate, with 95%% intervals, what uniform, each arm and Factory's allocation would have earned on a log",
        description="Estimate, with 95% intervals, what uniform random, each single arm, the best single arm in hindsight "
        "and Factory's own allocation would have earned on a log of past decisions: the replay method on a --uniform log, "
        "IPS, self-normalised IPS and doubly robust (the headline) on a log with --propensity.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--log", type=Path, metavar="FILE", help="the log of past decisions, CSV or Parquet, one row per decision in time order"
    )
    source.add_argument(
        "--warehouse",
        nargs="?",
        const="",
        metavar="PATH",
        help="backtest the line's own logged assignments: a DuckDB file, or by default the data folder's warehouse "
        "(PostgreSQL when FACTORY_WAREHOUSE_URL is set)",
    )
    parser.add_argument("--arm", metavar="COL", help="column with the arm that was chosen")
    parser.add_argument("--reward", metavar="COL", help="column with the reward (a number; 0/1 for a conversion)")
    parser.add_argument(
        "--context",
        type=_columns,
        default=(),
        metavar="COL,COL...",
        help="context columns, comma-separated (the policy's segments)",
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--propensity", metavar="COL", help="column with the logging policy's probability of the chosen arm, in (0, 1]"
    )
    how.add_argument("--uniform", action="store_true", help="the arms were drawn uniformly at random (replay method)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help=f"rows per batch, one batch = one day of learning (default {DEFAULT_BATCH_SIZE}; --warehouse: its days)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the factory policy's draws (default 0)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures here as JSON")
    parser.add_argument(
        "--level", choices=["angle", "arm"], default="angle", help="--warehouse: arms are angles (default) or full arm ids"
    )
    parser.add_argument("--export-log", type=Path, metavar="OUT", help="--warehouse: also write the exported log here (CSV)")
    parser.set_defaults(run=run_backtest)


def run_backtest(args: argparse.Namespace, paths: Paths) -> int:
    """The handler: read the log, run the backtest, print the table, write the JSON."""
    from factory_dagster.backtest.log import BacktestInputError
    from factory_dagster.backtest.warehouse import WarehouseLogError

    try:
        rows, batch, described, mode = _load(args, paths)
        return _report(args, paths, rows, batch, described, mode)
    except (BacktestInputError, WarehouseLogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _load(args: argparse.Namespace, paths: Paths) -> tuple[Any, Any, dict[str, Any], str]:
    from factory_dagster.backtest.log import BacktestInputError, LogSpec, read_log, standard_frame
    from factory_dagster.backtest.policies import OFF_POLICY, REPLAY
    from factory_dagster.campaign.spec import load_spec

    if args.warehouse is not None:
        from factory_dagster.backtest.warehouse import warehouse_log
        from factory_dagster.warehouse.store import warehouse_name

        given = [flag for flag, value in _LOG_FLAGS.items() if getattr(args, value)]
        if given:
            raise BacktestInputError(
                f"{', '.join(given)}: not with --warehouse, whose log has its own columns (segment, arm, propensity)"
            )
        spec = load_spec(paths.spec)
        # A path names a DuckDB file; without one, the data folder's warehouse (PostgreSQL when FACTORY_WAREHOUSE_URL is set).
        path = Path(args.warehouse) if args.warehouse else paths.warehouse
        url = None if args.warehouse else paths.warehouse_url
        where = str(path) if args.warehouse else warehouse_name(paths)
        exported = warehouse_log(path, spec.campaign_id, spec.improve.outcome_window_days, args.level, url, where)
        if exported.rows.empty:
            raise BacktestInputError(f"{where}: no mature sends to backtest yet ({exported.describe()})")
        if args.export_log:
            exported.rows.to_csv(args.export_log, index=False)
        log_spec = LogSpec(arm="arm", reward="reward", context=("segment",), propensity="propensity")
        rows = standard_frame(exported.rows, log_spec, where)
        batch = None if args.batch_size else exported.rows["partition_day"].to_numpy()
        described = {"warehouse": where, "campaign_id": spec.campaign_id, "level": args.level, "rows": exported.describe()}
        return rows, batch, described, OFF_POLICY
    if args.log is None:
        raise BacktestInputError("say which log to backtest: --log FILE (CSV or Parquet), or --warehouse for the line's own")
    if args.export_log:
        raise BacktestInputError("--export-log goes with --warehouse")
    if not args.arm or not args.reward:
        raise BacktestInputError(f"{args.log}: say which columns hold the arm and the reward (--arm COL --reward COL)")
    log_spec = LogSpec(args.arm, args.reward, tuple(args.context), args.propensity, args.uniform)
    rows = read_log(args.log, log_spec)
    described = {
        "file": str(args.log),
        "arm": args.arm,
        "reward": args.reward,
        "context": list(args.context),
        "propensity": args.propensity or "uniform",
    }
    return rows, None, described, REPLAY if args.uniform else OFF_POLICY


def _report(args: argparse.Namespace, paths: Paths, rows: Any, batch: Any, described: dict[str, Any], mode: str) -> int:
    from factory_dagster.backtest.policies import backtest
    from factory_dagster.campaign.spec import load_spec

    batch_size = None if batch is not None else (args.batch_size or DEFAULT_BATCH_SIZE)
    result = backtest(rows, load_spec(paths.spec), mode=mode, batch_size=batch_size, batch=batch, seed=args.seed)
    figures = {"log": described, **result.to_dict()}
    print(format_table(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


def _value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def format_table(figures: dict[str, Any]) -> str:
    """The printed summary: one aligned line per policy and per arm."""
    log = figures["log"]
    source = log.get("file") or log.get("warehouse")
    batches = f"{figures['batches']} batches" + (
        f" of {figures['batch_size']} rows" if figures["batch_size"] else " (one per day)"
    )
    method = "replay, the log's arms drawn uniformly" if figures["mode"] == "replay" else "off-policy, logged propensities"
    lines = [
        f"backtest of {source}: {figures['rows']} rows, {figures['contexts']} contexts, {len(figures['arms'])} arms; {method}; "
        f"{batches}, seed {figures['seed']}"
    ]
    if "warehouse" in log:
        lines.append(f"rows: {log['rows']}")
    entries = [(name, result) for name, result in figures["policies"].items()]
    entries += [(f"arm {arm}", result) for arm, result in figures["arms"].items()]
    labels = [name + (f" ({result['arm']})" if "arm" in result else "") for name, result in entries]
    width = max(len("policy"), *(len(label) for label in labels))
    lines.append(f"{'policy':<{width}}  {'estimator':<9}  {'value':>10}  {'95% interval':<23}  {'matched':>9}")
    for label, (_, result) in zip(labels, entries, strict=True):
        interval = f"[{_value(result['ci_low'])}, {_value(result['ci_high'])}]"
        matched = "n/a" if result["matched"] is None else f"{result['matched']:.0f}"
        lines.append(f"{label:<{width}}  {result['estimator']:<9}  {_value(result['value']):>10}  {interval:<23}  {matched:>9}")
    lines.append(f"matched: {figures['matched_means']}")
    lines += [f"note: {note}" for note in figures["notes"]]
    return "\n".join(lines)
