"""Off-policy estimators checked against the truth: the `ope` benchmark (issue 11, item 3).

Setup: the simulated market's hidden model gives the expected positive-reply rate of every
(segment, arm) through the benchmark-only oracle `expected_outcomes`; arms are the example campaign's
3 angles x its 2 prompt versions (6 arms, draft-v2 a true +15% on replies), segments come in the mix the
sample-lead generator and the real intake give. A log is ROWS decisions: segment drawn by that mix,
arm by the logging policy (propensity recorded), reward Bernoulli(true rate). So the true value of a
target policy, sum_x P(x) sum_a pi(a | x) rate(x, a), is known exactly, and each simulation asks: does
the 95% interval of IPS, SNIPS and DR (`backtest.estimators.off_policy_estimates`, the function the
loop's preflight calls) contain it, and how far is the estimate off?

Policies (none is the logging policy of its own scenario):
- `uniform`: 1/6 per arm in every segment;
- `factory_pilot`: the line's allocation (`improve.allocation.angle_shares`) after a pilot of
  PILOT_ROWS uniform rows (fixed pilot seed): skewed toward each segment's pilot leader, at least 0.1/6 per arm;
- `greedy_pilot`: each segment's best arm by the same pilot's means, deterministic (weights up to 60);
- `factory_adaptive` (logging only): the line's allocation learning day by day from the log itself,
  ADAPTIVE_BATCH rows a day, as the line's own logs are.

Scenarios (logging -> target), SIMULATIONS logs each: on ROWS-row logs (about a month of the demo
line) uniform -> factory_pilot, factory_pilot -> uniform, factory_pilot -> greedy_pilot and
factory_adaptive -> uniform; and factory_pilot -> uniform again on LARGE_ROWS-row logs, to show how
the normal intervals' coverage moves with the number of positive replies behind them.

Figures: `coverage.<estimator>` and `bias.<estimator>` over every simulation of every scenario
(bias = mean of estimate - truth, in positive replies per decision; `relative_bias` divides by the
truth), `simulations`; per scenario the same plus RMSE, mean interval width and mean effective
sample size. The intervals are the estimators' own normal approximations, not clipped.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from factory_dagster.backtest.estimators import ESTIMATORS, off_policy_estimates, target_matrix
from factory_dagster.backtest.market import (
    START,
    adaptive_oracle_log,
    day_leads,
    market_arms,
    oracle_log,
    true_value,
    truth_table,
)
from factory_dagster.backtest.policies import backtest_spec, factory_shares
from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.settings import DEFAULT_SPEC_PATH

ROWS = 5000  # about a month of the demo line at 180 leads a day
SIMULATIONS = 200  # per scenario
PILOT_ROWS = 2000
LARGE_ROWS = 20000  # the same question on logs four times as long: how coverage moves with the number of events
ADAPTIVE_BATCH = 1000  # rows a "day" of the adaptive logging policy: 5 learning steps per log
MARKET_SEED = 11
SEED = 2026
MIX_LEADS = 2000
NOMINAL = 0.95


def segment_mix(spec: CampaignSpec) -> dict[str, float]:
    """Each segment's share of accepted sample leads (real generator, real intake)."""
    leads = day_leads(spec, START, MIX_LEADS, seed=SEED, known=set())
    shares = leads["segment"].value_counts(normalize=True)
    return {s.name: float(shares.get(s.name, 0.0)) for s in spec.segments if shares.get(s.name, 0.0) > 0}


def pilot_policies(truth: pd.DataFrame, mix: dict[str, float], spec: CampaignSpec) -> dict[str, pd.DataFrame]:
    """uniform, factory_pilot and greedy_pilot as (context, arm, share) tables (see the module docstring)."""
    plan = truth[["context", "arm"]]
    uniform = plan.assign(share=1.0 / plan.groupby("context")["arm"].transform("size"))
    pilot = oracle_log(truth, mix, uniform, PILOT_ROWS, np.random.default_rng(SEED))
    factory = factory_shares(plan, pilot[["context", "arm", "reward"]], backtest_spec(spec), date(2026, 2, 1))
    means = pilot.groupby(["context", "arm"])["reward"].mean().reindex(pd.MultiIndex.from_frame(plan), fill_value=0.0)
    best = means.groupby(level="context").idxmax()
    greedy = plan.assign(share=[float(best[c] == (c, a)) for c, a in zip(plan["context"], plan["arm"], strict=True)])
    return {"uniform": uniform, "factory_pilot": factory, "greedy_pilot": greedy}


SCENARIOS = (  # logging policy, target policy, rows per log
    ("uniform", "factory_pilot", ROWS),
    ("factory_pilot", "uniform", ROWS),
    ("factory_pilot", "greedy_pilot", ROWS),
    ("factory_adaptive", "uniform", ROWS),
    ("factory_pilot", "uniform", LARGE_ROWS),
)


def run(simulations: int = SIMULATIONS) -> dict:
    started = time.perf_counter()
    spec = load_spec(DEFAULT_SPEC_PATH)
    with tempfile.TemporaryDirectory(prefix="factory-ope-") as tmp:
        market = SimulatedMarket(Path(tmp), seed=MARKET_SEED)
        mix = segment_mix(spec)
        arms = market_arms(spec, spec.drafting.prompt_versions)
        truth = truth_table(market, list(mix), arms)
    policies = pilot_policies(truth, mix, spec)
    rng = np.random.default_rng(SEED)
    records = []
    for logging, target_name, rows in SCENARIOS:
        scenario = f"{logging}->{target_name}" + ("" if rows == ROWS else f" ({rows} rows)")
        target = policies[target_name]
        truth_value = true_value(truth, mix, target)
        for simulation in range(simulations):
            if logging == "factory_adaptive":
                log = adaptive_oracle_log(truth, mix, spec, rows, ADAPTIVE_BATCH, rng)
            else:
                log = oracle_log(truth, mix, policies[logging], rows, rng)
            estimates = off_policy_estimates(log, target_matrix(log, target))
            for name, e in estimates.items():
                records.append(
                    {
                        "scenario": scenario,
                        "simulation": simulation,
                        "estimator": name,
                        "truth": truth_value,
                        "value": e.value,
                        "covered": e.ci_low <= truth_value <= e.ci_high,
                        "width": e.ci_high - e.ci_low,
                        "ess": e.effective_sample_size,
                    }
                )
    frame = pd.DataFrame(records)
    figures: dict = {
        "simulations": int(frame[["scenario", "simulation"]].drop_duplicates().shape[0]),
        "simulations_per_scenario": simulations,
        "rows_per_log": ROWS,
        "rows_per_log_large": LARGE_ROWS,
        "nominal": NOMINAL,
        "interval": "normal approximation on the per-row contributions (IPS, DR); delta method (SNIPS)",
        "reward": "positive reply, Bernoulli of the hidden model's expected rate per (segment, arm)",
        "arms": arms,
        "segment_mix": {s: round(v, 4) for s, v in mix.items()},
        "scenarios_logging_to_target": [f"{a}->{b} ({n} rows)" for a, b, n in SCENARIOS],
        "adaptive_batch_rows": ADAPTIVE_BATCH,
        "dr_reward_model": "per (segment, arm) mean, 2-fold cross-fitted, shrunk toward the arm's mean with 10 rows' weight",
    }
    figures.update(_summary(frame))
    figures["scenarios"] = {name: _summary(group) for name, group in frame.groupby("scenario", sort=False)}
    for name, group in frame.groupby("scenario", sort=False):
        figures["scenarios"][name]["truth"] = round(float(group["truth"].iloc[0]), 6)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures


def _summary(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {k: {} for k in ("coverage", "bias", "relative_bias", "rmse", "mean_width", "mean_ess")}
    for name in ESTIMATORS:
        rows = frame[frame["estimator"] == name]
        error = rows["value"] - rows["truth"]
        out["coverage"][name] = round(float(rows["covered"].mean()), 4)
        out["bias"][name] = round(float(error.mean()), 6)
        out["relative_bias"][name] = round(float((error / rows["truth"]).mean()), 4)
        out["rmse"][name] = round(float(np.sqrt((error**2).mean())), 6)
        out["mean_width"][name] = round(float(rows["width"].mean()), 6)
        out["mean_ess"][name] = round(float(rows["ess"].mean()), 1)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
