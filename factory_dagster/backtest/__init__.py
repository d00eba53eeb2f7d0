"""Backtest: what a policy would have earned on a log of past decisions, without sending anything.

`log` reads and validates a CSV or Parquet log into the standard frame (context, arm, propensity,
reward); `estimators` holds the off-policy estimators (replay, IPS, self-normalised IPS, doubly
robust) as plain functions the loop's preflight can call; `policies` walks a log with the policies
the issue names, Factory's own allocation among them; `market` builds logs from the simulated market
and `warehouse` from the line's own assignments; `cli` is `factory backtest`.
"""
