"""Backtest logs from the simulated market, so the backtest runs on "the market's own logs".

`market_log` is what a campaign on the simulated market would have logged: real sample leads through
the real intake (their segment is the natural context; seniority and region come along, and the market
answers senior leads of `general` differently from the rest of it), one arm per lead drawn by a logging policy with its
propensity recorded, and the reward is whether the market's own event simulation
(`SimulatedMarket.simulate`, the code `receive` runs) gives the send a positive reply. The logging
policy is `uniform`, `factory` (the line's allocation learning day by day from the rows logged so far,
rewards counted at once rather than over the market's 1-7 day delays) or fixed shares per
(context, arm).

`truth_table`, `oracle_log` and `true_value` read the hidden model through the market's oracle
(`expected_outcomes`), which only benchmarks may do: rewards drawn as Bernoulli of the expected
positive-reply rate of the (segment, arm) cell, so the true value of any policy is known exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from factory_dagster.backtest.policies import backtest_spec, draw, factory_shares
from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.intake.sample_leads import generate_leads
from factory_dagster.intake.validation import validate_leads
from factory_dagster.market.simulated import LEAD_ATTRIBUTES, SimulatedMarket

START = date(2026, 1, 1)
LOG_COLUMNS = ["day", "lead_id", "segment", "seniority", "region", "angle", "prompt_version", "arm", "propensity", "reward"]


def market_arms(spec: CampaignSpec, prompt_versions: Sequence[str] = ("draft-v1",)) -> list[str]:
    """Arm names: the spec's angles, as `angle|prompt_version` when more than one prompt version is crossed in."""
    angles = [a.name for a in spec.angles]
    if len(prompt_versions) == 1:
        return angles
    return [f"{angle}|{version}" for angle in angles for version in prompt_versions]


def split_arm(arm: str, default_version: str = "draft-v1") -> tuple[str, str]:
    angle, _, version = arm.partition("|")
    return angle, version or default_version


def market_log(
    market: SimulatedMarket,
    spec: CampaignSpec,
    rows: int,
    logging: str | pd.DataFrame = "uniform",
    *,
    batch_size: int = 180,
    seed: int = 0,
    prompt_versions: Sequence[str] = ("draft-v1",),
    start: date = START,
) -> pd.DataFrame:
    """`rows` logged decisions (LOG_COLUMNS), `batch_size` leads a day, arms drawn by `logging`.

    The arm's propensity is the logging policy's share of it in the lead's segment that day.
    """
    if rows < 1 or batch_size < 1:
        raise ValueError("need at least one row and a batch size of at least 1")
    if isinstance(logging, str) and logging not in ("uniform", "factory"):
        raise ValueError(f"logging policy must be 'uniform', 'factory' or a frame of shares, got {logging!r}")
    arms = market_arms(spec, prompt_versions)
    plan = pd.DataFrame([(s.name, a) for s in spec.segments for a in arms], columns=["context", "arm"])
    allocation = backtest_spec(spec)
    rng = np.random.default_rng(seed)
    known: set[str] = set()
    days: list[pd.DataFrame] = []
    logged = 0
    day = start
    while logged < rows:
        leads = day_leads(spec, day, batch_size, seed, known).head(rows - logged)
        shares = _logging_shares(logging, plan, days, allocation, day, start)
        days.append(_log_day(market, spec, leads, shares, day, seed, rng))
        logged += len(leads)
        day += timedelta(days=1)
    return pd.concat(days, ignore_index=True)[LOG_COLUMNS]


def day_leads(spec: CampaignSpec, day: date, n: int, seed: int, known: set[str]) -> pd.DataFrame:
    """The day's accepted sample leads, through the real intake validation (which gives the segment)."""
    raw = generate_leads(day, n, seed=seed, defect_rate=0.0)
    raw = raw.assign(source_file=f"leads_{day:%Y%m%d}.csv", source_row=range(1, len(raw) + 1))
    accepted, _ = validate_leads(raw, spec, known)
    known |= set(accepted["email"])
    return accepted.reset_index(drop=True)


def _logging_shares(
    logging: str | pd.DataFrame, plan: pd.DataFrame, days: list[pd.DataFrame], spec: CampaignSpec, day: date, start: date
) -> pd.DataFrame:
    if isinstance(logging, pd.DataFrame):
        return logging[["context", "arm", "share"]]
    if logging == "uniform":
        return plan.assign(share=1.0 / plan.groupby("context")["arm"].transform("size"))
    history = pd.concat(days, ignore_index=True) if days else pd.DataFrame(columns=["segment", "arm", "reward"])
    learned = history.rename(columns={"segment": "context"})[["context", "arm", "reward"]]
    return factory_shares(plan, learned, spec, day)


def _log_day(
    market: SimulatedMarket,
    spec: CampaignSpec,
    leads: pd.DataFrame,
    shares: pd.DataFrame,
    day: date,
    seed: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    arm, propensity = draw_arms(leads["segment"].to_numpy(), shares, rng)
    angle, version = zip(*(split_arm(a) for a in arm), strict=True) if len(arm) else ((), ())
    log = pd.DataFrame(
        {
            "day": day,
            "lead_id": leads["lead_id"].to_numpy(),
            "segment": leads["segment"].to_numpy(),
            "seniority": leads["seniority"].to_numpy(),
            "region": leads["region"].to_numpy(),
            "angle": angle,
            "prompt_version": version,
            "arm": arm,
            "propensity": propensity,
        }
    )
    body = "\n\n".join(["Hi {name},", spec.required.call_to_action, spec.required.unsubscribe_footer])
    # The lead's attributes go with the send: the market answers some subgroups differently from their segment.
    sends = log.assign(
        **{attribute: leads[attribute].to_numpy() for attribute in LEAD_ATTRIBUTES if attribute in leads},
        send_id=[f"backtest{seed}_{lead_id}" for lead_id in log["lead_id"]],
        sent_day=day,
        to_email=leads["email"].to_numpy(),
        subject="Month-end close",
        body=[body.format(name=name) for name in leads["first_name"]],
    )
    events = market.simulate(sends)
    positive = set(events.loc[events["event_type"] == "positive_reply", "send_id"])
    return log.assign(reward=sends["send_id"].isin(positive).astype(int).to_numpy())


def draw_arms(contexts: np.ndarray, shares: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One arm per row from the shares of its context, and the drawn arm's share (its propensity)."""
    table = shares.pivot_table(index="context", columns="arm", values="share", aggfunc="sum", fill_value=0.0)
    probabilities = table.reindex(contexts).to_numpy(dtype=float)
    if np.isnan(probabilities).any():
        raise ValueError("the logging policy has no shares for some contexts")
    choice = draw(probabilities, rng)
    total = probabilities.sum(axis=1)
    rows = np.arange(len(contexts))
    return table.columns.to_numpy(dtype=object)[choice], probabilities[rows, choice] / total


# ---------------------------------------------------------------- the oracle (benchmarks only)


def truth_table(market: SimulatedMarket, segments: Sequence[str], arms: Sequence[str]) -> pd.DataFrame:
    """(context, arm, rate): the expected positive replies per send under the hidden model. Benchmarks only."""
    return pd.DataFrame(
        [(s, a, market.expected_positive_rate(s, *split_arm(a))) for s in segments for a in arms],
        columns=["context", "arm", "rate"],
    )


def oracle_log(
    truth: pd.DataFrame, segment_shares: Mapping[str, float], logging: pd.DataFrame, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    """A standard-frame log: segments drawn by their shares, arms by `logging`, rewards Bernoulli(true rate)."""
    segments = list(segment_shares)
    weights = np.array([segment_shares[s] for s in segments], dtype=float)
    contexts = np.array(segments, dtype=object)[rng.choice(len(segments), size=rows, p=weights / weights.sum())]
    arm, propensity = draw_arms(contexts, logging, rng)
    rate = truth.set_index(["context", "arm"])["rate"]
    expected = rate.reindex(pd.MultiIndex.from_arrays([contexts, arm])).to_numpy(dtype=float)
    reward = (rng.random(rows) < expected).astype(float)
    return pd.DataFrame({"context": contexts, "arm": arm, "propensity": propensity, "reward": reward})


def true_value(truth: pd.DataFrame, segment_shares: Mapping[str, float], target: pd.DataFrame) -> float:
    """sum_x P(x) sum_a pi(a | x) rate(x, a): the target policy's expected reward per decision."""
    total = sum(segment_shares.values())
    merged = target.merge(truth, on=["context", "arm"], how="left", validate="one_to_one")
    if merged["rate"].isna().any():
        raise ValueError("the target names arms the truth table does not know")
    per_context = (merged["share"] * merged["rate"]).groupby(merged["context"]).sum()
    return float(sum(segment_shares[s] / total * per_context.get(s, 0.0) for s in segment_shares))


def adaptive_oracle_log(
    truth: pd.DataFrame,
    segment_shares: Mapping[str, float],
    spec: CampaignSpec,
    rows: int,
    batch_size: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Like `oracle_log`, logged by the line's allocation learning batch by batch from the rows so far,
    as the line's own logs are: each row's propensity is its batch's share. Benchmarks only."""
    plan = truth[["context", "arm"]]
    allocation = backtest_spec(spec)
    days: list[pd.DataFrame] = []
    for b, start in enumerate(range(0, rows, batch_size)):
        learned = pd.concat(days, ignore_index=True) if days else pd.DataFrame(columns=["context", "arm", "reward"])
        shares = factory_shares(plan, learned, allocation, START + timedelta(days=b))
        days.append(oracle_log(truth, segment_shares, shares, min(batch_size, rows - start), rng))
    return pd.concat(days, ignore_index=True)
