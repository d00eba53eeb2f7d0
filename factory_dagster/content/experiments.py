"""A content piece's variants as one experiment of the loop's engine, and each day's split of its audience.

Why the loop's engine: a piece's variant test is an experiment like an outreach prompt test, so it
lives in the same records (`raw.experiments`, the append-only `raw.experiment_events`, a look a day
in `raw.experiment_looks`), moves through the same lifecycle (`improve.experiments.transition`) and
is judged by the same decision rule (`improve.stats.decide`), so the marts, `factory experiments`
and the Dagster UI show both lines' experiments alike. Two things are the content line's own:

- **The design is approved with the content spec.** A piece's variants are the spec's
  `variants_per_piece` written by the line and gated; the test of them (`cadence.test_days`, the
  decision rule) is the design a person approved when they approved the spec, so each piece's
  experiment is recorded as approved by the spec's version and starts the day it is published.
- **The split is adaptive.** The outreach loop holds a fixed split until a planned sample; a piece
  lives a few days for an audience that will not come back, so each day its audience goes to the
  variants by their probability of being the best (Thompson sampling, `content.allocation.p_best`,
  with the exploration the Upworthy replay calibrated, fading over the window so its last day goes
  almost all to the leader), from Beta posteriors whose prior comes from
  earlier pieces (`content.prior`: feature lifts, a channel's typical rate). The last day of the
  window is the experiment's final look (`decide(horizon_reached=True)`): a challenger that beats
  the writer's first variant at the rule's bar is promoted, otherwise the experiment is retired and
  the first variant kept. The sample-ratio check compares each variant's impressions with what the
  day's shares planned, so a scheduler that ignored the shares rolls the experiment back.

Counts: impressions and clicks for LinkedIn posts and headlines; deliveries and opens for e-mail
subject lines (`channel_metric`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from factory_dagster.content.allocation import (
    CrossPiecePrior,
    Engine,
    FlatPrior,
    batch_fractions,
    calibrate,
    centred_lifts,
    horizon_exploration,
    p_best,
    posterior_params,
)
from factory_dagster.content.features import feature_frame, shown_text
from factory_dagster.content.prior import DEFAULT_BASE_RATE, HeadlinePrior, empty_prior, fit_prior
from factory_dagster.content.spec import ContentSpec
from factory_dagster.improve import store
from factory_dagster.improve.decisions import decide_running, look_rows
from factory_dagster.improve.experiments import Experiment, conclude, propose, transition
from factory_dagster.improve.stats import ArmCounts, Count, Decision, StoppingRule, seed_for
from factory_dagster.models.ledger import utcnow
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import insert_rows, transaction

KIND = "content_variants"
PROPOSER = "content line"
STARTER = "content line (published)"
MDE = 0.2  # the relative difference a fixed test of the variants would be sized for (recorded with the design)
# Thompson draws are Beta(alpha / e, beta / e): e < 1 explores less than plain Thompson sampling. The Upworthy
# replay calibrated e between 1/32 and 1/4 on thousands of tests; until the line has `CALIBRATE_FROM_PIECES`
# finished pieces of its own it takes 1/4, the most exploratory of them, then it replays its finished pieces under
# each of `EXPLORATIONS` and keeps the best (`content.allocation.calibrate`), as the replay does.
EXPLORATION = 0.25
EXPLORATIONS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)
CALIBRATE_FROM_PIECES = 100
CALIBRATION_PIECES = 500  # the most recent finished pieces a calibration replays
DRAWS = 4000
BASE_WEIGHT = 1000.0  # impressions the channel's typical rate is worth against a piece's own pooled rate
# Per channel: (trials, events, primary metric). An e-mail subject line is judged on opens per delivery.
_METRICS = {"email_subject": ("delivered", "opened", "open_rate")}
_DEFAULT_METRICS = ("impressions", "clicks", "click_rate")
ALLOCATION_COLUMNS = [
    "day", "variant_id", "piece_id", "content_id", "experiment_id", "share",
    "impressions_before", "events_before", "prior_mean",
]  # fmt: skip


def channel_metric(channel: str) -> tuple[str, str, str]:
    """(trials metric, events metric, primary metric name) a channel's variants are judged on."""
    return _METRICS.get(channel, _DEFAULT_METRICS)


def rule_for(spec: ContentSpec) -> StoppingRule:
    """The outreach rule's thresholds, with the piece's window as its horizon."""
    return StoppingRule(max_days=spec.cadence.test_days)


# -- what the line knows -------------------------------------------------------------------------


def published_variants(frames: Sequence[tuple[date, pd.DataFrame]]) -> pd.DataFrame:
    """Every published variant with the day it was published (`publish.published_days`)."""
    parts = [frame.assign(day=day) for day, frame in frames if not frame.empty]
    if not parts:
        return pd.DataFrame(columns=["piece_id", "variant_id", "channel", "segment", "text", "day"])
    return pd.concat(parts, ignore_index=True)


def variant_counts(con: duckdb.DuckDBPyConnection, content_id: str, before: date) -> pd.DataFrame:
    """Per variant and day, its trials and events counted for days before `before` (the channel's metrics)."""
    rows = con.execute(
        """SELECT e.variant_id, e.day, e.channel, e.metric, sum(e.value) AS value
           FROM raw.content_engagement e JOIN raw.content_pieces p USING (variant_id)
           WHERE p.content_id = ? AND e.day < ? GROUP BY 1, 2, 3, 4""",
        [content_id, before],
    ).df()
    if rows.empty:
        return pd.DataFrame(columns=["variant_id", "day", "trials", "events"])
    metrics = rows["channel"].map(channel_metric)
    rows["role"] = np.select(
        [rows["metric"] == metrics.str[0], rows["metric"] == metrics.str[1]], ["trials", "events"], default=""
    )
    counted = rows[rows["role"] != ""].pivot_table(index=["variant_id", "day"], columns="role", values="value", aggfunc="sum")
    counted = counted.reindex(columns=["trials", "events"], fill_value=0.0).fillna(0.0).reset_index()
    counted["events"] = counted[["events", "trials"]].min(axis=1)  # two exports may disagree: never more events than trials
    counted["day"] = pd.to_datetime(counted["day"]).dt.date
    return counted


def _totals(counts: pd.DataFrame) -> pd.DataFrame:
    """Trials and events per variant over the days of `counts`."""
    if counts.empty:
        return pd.DataFrame(columns=["trials", "events"], dtype=float)
    return counts.groupby("variant_id")[["trials", "events"]].sum().astype(float)


@dataclass(frozen=True)
class Learned:
    """What finished pieces teach a new one: the cross-piece prior and each channel's typical rate."""

    prior: HeadlinePrior
    channel_rates: dict[str, float]
    pieces: int
    exploration: float = EXPLORATION  # how much the split explores (`calibrated_exploration`)

    def base_rate(self, channel: str) -> float:
        return self.channel_rates.get(channel, DEFAULT_BASE_RATE)

    def piece_prior(self, texts: Sequence[str], channel: str) -> CrossPiecePrior:
        """A one-piece prior for `texts` (its variants, in arm order) on `channel`."""
        shown = feature_frame([shown_text(t, channel) for t in texts])
        base = self.base_rate(channel)
        return CrossPiecePrior(
            lift=centred_lifts(self.prior.log_lift(shown)[None, :]),
            base_rate=np.array([base]),
            weight=np.array([float(self.prior.weight(base))]),
            base_weight=BASE_WEIGHT,
        )


def finished_pieces(published: pd.DataFrame, counts: pd.DataFrame, day: date, test_days: int) -> pd.DataFrame:
    """Variants of pieces whose window closed before `day`, with their text as the reader saw it and their counts."""
    if published.empty:
        return pd.DataFrame(columns=["piece_id", "variant_id", "channel", "text", "impressions", "clicks"])
    done = published[published["day"].map(lambda d: d + timedelta(days=test_days) <= day)]
    totals = _totals(counts)
    rows = done.join(totals, on="variant_id").dropna(subset=["trials"])
    rows = rows[rows["trials"] > 0]
    return pd.DataFrame(
        {
            "piece_id": rows["piece_id"].to_numpy(),
            "variant_id": rows["variant_id"].to_numpy(),
            "channel": rows["channel"].to_numpy(),
            "text": [shown_text(t, c) for t, c in zip(rows["text"], rows["channel"], strict=True)],
            "impressions": rows["trials"].to_numpy(dtype=float),
            "clicks": rows["events"].to_numpy(dtype=float),
        }
    )


def calibrated_exploration(finished: pd.DataFrame, test_days: int, seed: int = 0) -> float:
    """The exploration that would have earned the most clicks on the recent finished pieces, replayed with their
    measured rates as the truth and the window's days as batches (flat prior: the prior was fitted on the same
    pieces); `EXPLORATION` until `CALIBRATE_FROM_PIECES` pieces with two or more variants have finished."""
    shown = finished[finished.groupby("piece_id")["variant_id"].transform("count") >= 2]
    pieces = list(dict.fromkeys(shown["piece_id"]))[-CALIBRATION_PIECES:]
    if len(pieces) < CALIBRATE_FROM_PIECES:
        return EXPLORATION
    shown = shown[shown["piece_id"].isin(pieces)]
    groups = shown.groupby("piece_id", sort=False)  # publishing order
    sizes = groups.size().to_numpy()
    rates = np.full((len(sizes), int(sizes.max())), np.nan)
    for row, (_, piece) in enumerate(groups):
        rates[row, : len(piece)] = (piece["clicks"] / piece["impressions"]).to_numpy(float)
    totals = groups["impressions"].sum().to_numpy().astype(np.int64)
    (_, exploration), _ = calibrate(
        rates, totals, sizes, {"flat": FlatPrior()}, EXPLORATIONS, Engine(batches=test_days, draws=64), seed
    )
    return exploration


def learn(finished: pd.DataFrame, test_days: int = 1) -> Learned:
    """Fit the cross-piece prior on finished pieces (in publishing order), each channel's median piece rate and the
    split's exploration (`calibrated_exploration`)."""
    if finished.empty:
        return Learned(empty_prior(), {}, 0)
    prior = fit_prior(pd.concat([finished.reset_index(drop=True), feature_frame(finished["text"])], axis=1))
    pooled = finished.groupby(["channel", "piece_id"])[["clicks", "impressions"]].sum()
    rates = (pooled["clicks"] / pooled["impressions"]).groupby(level="channel").median()
    return Learned(
        prior,
        {c: float(min(max(r, 1e-4), 0.9)) for c, r in rates.items()},
        finished["piece_id"].nunique(),
        calibrated_exploration(finished, test_days),
    )


# -- opening a piece's experiment ------------------------------------------------------------------


def piece_design(spec: ContentSpec, piece: pd.DataFrame, learned: Learned, day: date, at: datetime) -> Experiment:
    """The proposed experiment of one published piece: its first variant is the control, the rest challengers."""
    piece = piece.sort_values("variant_id")
    arms = list(piece["variant_id"])
    channel, piece_id = str(piece["channel"].iloc[0]), str(piece["piece_id"].iloc[0])
    segment = piece["segment"].iloc[0] if "segment" in piece and pd.notna(piece["segment"].iloc[0]) else "general"
    means = learned.piece_prior(list(piece["text"]), channel).means(np.zeros((1, len(arms))), np.zeros((1, len(arms))))[0]
    _, _, metric = channel_metric(channel)
    return propose(
        campaign_id=spec.content_id,
        kind=KIND,
        hypothesis=(
            f"one of the {len(arms)} variants of piece {piece_id} ({channel}, {segment}) earns a higher {metric} than the first"
        ),
        control=arms[0],
        challengers=arms[1:],
        target_segments=(str(segment),),
        primary_metric=metric,
        base_rate=learned.base_rate(channel),
        mde=MDE,
        max_traffic_share=1.0,  # the adaptive split may give the whole audience to challengers
        motivating_figures={
            "piece_id": piece_id,
            "channel": channel,
            "first_day": day.isoformat(),
            "test_days": spec.cadence.test_days,
            "prior_means": {arm: round(float(m), 6) for arm, m in zip(arms, means, strict=True)},
            "prior_pieces": learned.pieces,
        },
        proposed_by=PROPOSER,
        at=at,
        stopping_rule=rule_for(spec),
    )


def open_piece_experiments(
    con: duckdb.DuckDBPyConnection, spec: ContentSpec, today: pd.DataFrame, learned: Learned, run: RunContext, at: datetime
) -> list[Experiment]:
    """Record an experiment for each piece published today with two or more variants, approved by the spec and started.

    A re-run of the day finds them recorded and changes nothing.
    """
    opened = []
    for _, piece in today.groupby("piece_id", sort=True):
        if len(piece) < 2:
            continue
        design = piece_design(spec, piece, learned, run.partition_day, at)
        with transaction(con):
            if not store.save_proposed(con, design, run):
                continue
            approved, event = transition(
                design,
                "approved",
                f"content spec {spec.spec_version}",
                "a piece's variant test is the design approved with the content spec (variants_per_piece, test_days)",
                {"variants_per_piece": spec.variants_per_piece, "test_days": spec.cadence.test_days},
                at,
            )
            store.write_transition(con, approved, event, run_id=run.run_id, partition_day=run.partition_day)
            running, event = transition(approved, "running", STARTER, "the piece's variants were published", {}, at)
            store.write_transition(con, running, event, run_id=run.run_id, partition_day=run.partition_day)
        opened.append(running)
    return opened


def piece_experiments(con: duckdb.DuckDBPyConnection, content_id: str) -> dict[str, Experiment]:
    """The content experiments of the spec, by piece id."""
    found = store.list_experiments(con, content_id)
    return {e.motivating_figures["piece_id"]: e for e in found if e.kind == KIND}


# -- the day's split ----------------------------------------------------------------------------------


def kept_variant(experiment: Experiment) -> str:
    """The variant a concluded piece keeps: the promoted winner, else the writer's first (the control)."""
    return experiment.winner or experiment.control


def day_shares(
    published: pd.DataFrame,
    counts: pd.DataFrame,
    experiments: dict[str, Experiment],
    learned: Learned,
    day: date,
    test_days: int,
    content_id: str,
) -> pd.DataFrame:
    """Each live piece's split of its audience on `day` (pieces published in the last `test_days` days).

    A running experiment's variants get their probability of being the best under the posteriors;
    a concluded one's kept variant gets everything; a piece with one variant gets all of its audience.
    Seeded by piece and day, so a re-run gives the same shares.
    """
    live = published[published["day"].map(lambda d: d <= day < d + timedelta(days=test_days))]
    totals = _totals(counts)
    rows = []
    for piece_id, piece in live.groupby("piece_id", sort=True):
        piece = piece.sort_values("variant_id")
        arms, channel = list(piece["variant_id"]), str(piece["channel"].iloc[0])
        seen = totals.reindex(arms).fillna(0.0)
        shown, clicked = seen["trials"].to_numpy(float)[None, :], seen["events"].to_numpy(float)[None, :]
        prior = learned.piece_prior(list(piece["text"]), channel)
        means = prior.means(shown, clicked)[0]
        experiment = experiments.get(str(piece_id))
        if experiment is not None and experiment.state == "running":
            alpha, beta = posterior_params(prior, shown, clicked)
            rng = np.random.default_rng(seed_for(experiment.experiment_id, day))
            window_day = (day - piece["day"].iloc[0]).days  # each day of the window is a batch
            exploration = horizon_exploration(learned.exploration, window_day, batch_fractions(test_days))
            shares = p_best(alpha, beta, np.array([len(arms)]), rng, DRAWS, exploration)[0]
        elif experiment is not None:
            shares = np.array([1.0 if arm == kept_variant(experiment) else 0.0 for arm in arms])
        else:
            shares = np.full(len(arms), 1.0 / len(arms))
        for index, arm in enumerate(arms):
            rows.append(
                {
                    "day": day,
                    "variant_id": arm,
                    "piece_id": str(piece_id),
                    "content_id": content_id,
                    "experiment_id": experiment.experiment_id if experiment is not None else None,
                    "share": float(shares[index]),
                    "impressions_before": float(shown[0, index]),
                    "events_before": float(clicked[0, index]),
                    "prior_mean": float(means[index]),
                }
            )
    return pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)


def recorded_shares(con: duckdb.DuckDBPyConnection, content_id: str, day: date) -> pd.DataFrame:
    """The split already given out for `day` (empty before the day's first run)."""
    return con.execute(
        f"""SELECT {", ".join(ALLOCATION_COLUMNS)} FROM raw.content_allocations
            WHERE day = ? AND content_id = ? ORDER BY piece_id, variant_id""",
        [day, content_id],
    ).df()


def allocate_day(
    con: duckdb.DuckDBPyConnection, spec: ContentSpec, published: pd.DataFrame, learned: Learned, run: RunContext
) -> pd.DataFrame:
    """The day's split of every live piece's audience, recorded in raw.content_allocations.

    Once given out, a day's split stands: a re-run of the day (after its looks concluded some pieces)
    returns the recorded one, so what was published and answered never changes behind the scheduler's back.
    """
    day = run.partition_day
    if not (recorded := recorded_shares(con, spec.content_id, day)).empty:
        recorded["day"] = pd.to_datetime(recorded["day"]).dt.date
        return recorded
    counts = variant_counts(con, spec.content_id, day)
    experiments = piece_experiments(con, spec.content_id)
    shares = day_shares(published, counts, experiments, learned, day, spec.cadence.test_days, spec.content_id)
    with transaction(con):
        insert_rows(con, "content_allocations", shares.assign(run_id=run.run_id, allocated_at=utcnow()))
    return shares


# -- the daily look -------------------------------------------------------------------------------------


def allocated_shares(con: duckdb.DuckDBPyConnection, experiment: Experiment, daily: pd.DataFrame) -> dict[str, float]:
    """Each arm's expected share of the trials so far: every day's shares weighted by that day's trials."""
    arms = [experiment.control, *experiment.challengers]
    shares = con.execute(
        "SELECT day, variant_id, share FROM raw.content_allocations WHERE experiment_id = ?", [experiment.experiment_id]
    ).df()
    if shares.empty:
        return dict.fromkeys(arms, 1.0 / len(arms))
    shares["day"] = pd.to_datetime(shares["day"]).dt.date
    per_day = daily[daily["variant_id"].isin(arms)].groupby("day")["trials"].sum().rename("day_trials")
    merged = shares.join(per_day, on="day").fillna({"day_trials": 0.0})
    expected = (merged["share"] * merged["day_trials"]).groupby(merged["variant_id"]).sum().reindex(arms).fillna(0.0)
    if expected.sum() <= 0:
        return dict.fromkeys(arms, 1.0 / len(arms))
    return {arm: float(value / expected.sum()) for arm, value in expected.items()}


@dataclass(frozen=True)
class PieceLook:
    experiment_id: str
    piece_id: str
    action: str
    winner: str | None
    reasons: str


def decide_pieces(con: duckdb.DuckDBPyConnection, content_id: str, run: RunContext, at: datetime) -> list[PieceLook]:
    """Look once at every running piece experiment with the counts through the run's day; conclude it when the rule says."""
    day = run.partition_day
    counts = variant_counts(con, content_id, day + timedelta(days=1))
    looks = []
    for piece_id, experiment in sorted(piece_experiments(con, content_id).items()):
        if experiment.state != "running" or store.latest_look_day(con, experiment.experiment_id) == day:
            continue
        arms = [experiment.control, *experiment.challengers]
        mine = counts[counts["variant_id"].isin(arms)]
        totals = _totals(mine).reindex(arms).fillna(0.0)
        counted = [
            ArmCounts(arm, int(totals.loc[arm, "trials"]), Count(int(totals.loc[arm, "events"]), int(totals.loc[arm, "trials"])))
            for arm in arms
        ]
        first = date.fromisoformat(experiment.motivating_figures["first_day"])
        days_running = (day - first).days + 1
        decision = decide_running(
            experiment,
            counted,
            days_running,
            day,
            shares=allocated_shares(con, experiment, mine),
            horizon_reached=days_running >= int(experiment.motivating_figures["test_days"]),
        )
        record_look(con, experiment, decision, run, at)
        looks.append(PieceLook(experiment.experiment_id, piece_id, decision.action, decision.winner, "; ".join(decision.reasons)))
    return looks


def record_look(
    con: duckdb.DuckDBPyConnection, experiment: Experiment, decision: Decision, run: RunContext, at: datetime
) -> None:
    """Write a content experiment's look and, when the decision concludes it, its move: together or not at all."""
    with transaction(con):
        store.save_look(con, look_rows(experiment, decision, day=run.partition_day, run_id=run.run_id, at=at))
        if (moved := conclude(experiment, decision, at)) is not None:
            store.write_transition(con, *moved, run_id=run.run_id, partition_day=run.partition_day)
