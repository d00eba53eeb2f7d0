"""Assignment: the old policy (thompson-floor-v1, kept for the benchmark) and the assign stage itself,
which runs policy loop-v2 (improve.allocation) on a real warehouse."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from helpers_db import CAMPAIGN, LEADS, add_leads, add_plan, run_for
from helpers_db import DAY as DB_DAY
from helpers_logic import DAY, example_spec, offline_plan

from factory_dagster.assignment.assets import assignments
from factory_dagster.assignment.policy import (
    POLICY_VERSION,
    allocation_problems,
    arm_id,
    arm_shares,
    assign_leads,
    candidate_arms,
)
from factory_dagster.campaign.runs import register_campaigns
from factory_dagster.campaign.spec import load_spec
from factory_dagster.improve.allocation import HOLDOUT_POLICY_VERSION, is_holdout
from factory_dagster.improve.allocation import POLICY_VERSION as LOOP_POLICY
from factory_dagster.improve.experiments import propose
from factory_dagster.improve.store import move_experiment, save_proposed
from factory_dagster.partitions import line_key
from factory_dagster.resources import FactoryResource
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

NO_DATA = pd.DataFrame(columns=["segment", "arm_id", "sends", "replies"])


@pytest.fixture(scope="module")
def arms() -> pd.DataFrame:
    return candidate_arms(offline_plan(example_spec()), example_spec())


@pytest.fixture(scope="module")
def uniform(arms: pd.DataFrame) -> pd.DataFrame:
    return arm_shares(arms, NO_DATA, example_spec(), DAY)


def _k() -> int:
    spec = example_spec()
    return len(spec.angles) * len(spec.drafting.prompt_versions)


def _performance(arms: pd.DataFrame, segment: str, best: str, best_replies: int = 100, sends: int = 1000) -> pd.DataFrame:
    rows = arms[arms.segment == segment]
    return pd.DataFrame(
        [
            {"segment": segment, "arm_id": a, "sends": sends, "replies": best_replies if a == best else sends // 50}
            for a in rows.arm_id
        ]
    )


def test_candidate_arms_cross_angles_versions_and_draft_model(arms: pd.DataFrame) -> None:
    spec = example_spec()
    assert len(arms) == len(spec.segments) * _k()
    assert arms.groupby("segment").arm_id.nunique().eq(_k()).all()
    assert set(arms.model) == {spec.routing["draft"]}
    assert set(arms.prompt_version) == set(spec.drafting.prompt_versions)
    row = arms.iloc[0]
    assert row.arm_id == arm_id(row.angle, row.prompt_version, row.model) == f"{row.angle}|{row.prompt_version}|{row.model}"


def test_shares_sum_to_one_and_respect_the_floor(uniform: pd.DataFrame) -> None:
    floor = example_spec().allocation.exploration_floor
    for _, group in uniform.groupby("segment"):
        assert group.share.sum() == pytest.approx(1.0, abs=1e-9)
        assert (group.share >= floor / len(group) - 1e-12).all()
        assert group.p_best.sum() == pytest.approx(1.0, abs=1e-9)
    assert allocation_problems(uniform, floor) == []


def test_no_data_gives_near_uniform_shares(uniform: pd.DataFrame) -> None:
    assert (uniform.share - 1 / _k()).abs().max() < 0.03
    prior = example_spec().allocation.prior_reply_rate
    assert uniform.posterior_mean.to_numpy() == pytest.approx(prior)
    assert (uniform.sends == 0).all() and (uniform.replies == 0).all()


def test_clearly_better_arm_gets_the_largest_share(arms: pd.DataFrame) -> None:
    spec = example_spec()
    best = arms[arms.segment == "general"].arm_id.iloc[3]
    shares = arm_shares(arms, _performance(arms, "general", best), spec, DAY)
    general = shares[shares.segment == "general"].set_index("arm_id")
    assert general.share.idxmax() == best
    floor = spec.allocation.exploration_floor
    # P(best) is about 1, so the arm gets nearly all the traffic the floor leaves over ...
    assert general.share[best] == pytest.approx(floor / _k() + (1 - floor), abs=0.01)
    # ... and the others keep exactly the floor.
    assert general.drop(best).share.to_numpy() == pytest.approx(floor / _k(), abs=0.005)
    assert general.loc[best, "replies"] == 100 and general.loc[best, "sends"] == 1000
    assert "100 replies in 1000 sends" in general.loc[best, "reason"] and POLICY_VERSION in general.loc[best, "reason"]
    assert allocation_problems(shares, floor) == []
    # Other segments have no data and stay near uniform.
    others = shares[shares.segment != "general"]
    assert (others.share - 1 / _k()).abs().max() < 0.03


def test_weaker_evidence_moves_shares_less(arms: pd.DataFrame) -> None:
    spec = example_spec()
    best = arms[arms.segment == "general"].arm_id.iloc[0]
    strong = arm_shares(arms, _performance(arms, "general", best, best_replies=100), spec, DAY)
    weak = arm_shares(arms, _performance(arms, "general", best, best_replies=5, sends=100), spec, DAY)
    share = {
        name: s[(s.segment == "general") & (s.arm_id == best)].share.iloc[0] for name, s in (("strong", strong), ("weak", weak))
    }
    assert 1 / _k() < share["weak"] < share["strong"]


def test_more_replies_more_share(arms: pd.DataFrame) -> None:
    """Shares are ordered like the reply rates when the evidence is large."""
    spec = example_spec()
    general = arms[arms.segment == "general"].arm_id.tolist()
    perf = pd.DataFrame(
        [{"segment": "general", "arm_id": a, "sends": 2000, "replies": 40 + 12 * i} for i, a in enumerate(general)]
    )
    shares = arm_shares(arms, perf, spec, DAY)
    ordered = shares[shares.segment == "general"].set_index("arm_id").loc[general]
    assert ordered.posterior_mean.is_monotonic_increasing
    assert ordered.share.idxmax() == general[-1]


def test_shares_are_deterministic_per_day(arms: pd.DataFrame, uniform: pd.DataFrame) -> None:
    again = arm_shares(arms, NO_DATA, example_spec(), DAY)
    pd.testing.assert_frame_equal(uniform, again)


def test_allocation_problems_detects_bad_allocations(uniform: pd.DataFrame) -> None:
    floor = example_spec().allocation.exploration_floor
    too_much = uniform.copy()
    too_much.loc[0, "share"] += 0.05
    problems = allocation_problems(too_much, floor)
    assert len(problems) == 1 and "sum to 1.05" in problems[0] and too_much.segment[0] in problems[0]

    starved = uniform.copy()
    segment = starved.segment[0]
    rows = starved.index[starved.segment == segment]
    starved.loc[rows, "share"] = [0.0, *([1 / (len(rows) - 1)] * (len(rows) - 1))]
    problems = allocation_problems(starved, floor)
    assert len(problems) == 1 and "under floor" in problems[0] and starved.arm_id[rows[0]] in problems[0]

    both = starved.copy()
    both.loc[rows[1], "share"] = 0.5
    assert len(allocation_problems(both, floor)) == 2
    # A zero floor allows a zero share.
    assert allocation_problems(starved, 0.0) == []


def _leads(n: int, segment: str, prefix: str = "lead") -> pd.DataFrame:
    return pd.DataFrame({"lead_id": [f"{prefix}_{i:05d}" for i in range(n)], "segment": segment})


def test_assignment_is_deterministic_per_lead_and_day(uniform: pd.DataFrame) -> None:
    leads = pd.concat([_leads(200, s.name, s.name) for s in example_spec().segments], ignore_index=True)
    first = assign_leads(leads, uniform, DAY)
    pd.testing.assert_frame_equal(first, assign_leads(leads, uniform, DAY))
    # Order of the input does not change any lead's arm.
    shuffled = assign_leads(leads.sample(frac=1, random_state=3), uniform, DAY).set_index("lead_id")
    assert (shuffled.loc[first.lead_id, "arm_id"].to_numpy() == first.arm_id.to_numpy()).all()
    # Another day is another draw.
    next_day = assign_leads(leads, uniform, DAY + dt.timedelta(days=1))
    assert (next_day.arm_id != first.arm_id).mean() > 0.5
    assert len(first) == len(leads) and first.lead_id.is_unique
    assert (first.segment == leads.segment).all()
    assert set(first.policy_version) == {POLICY_VERSION}


def test_propensity_is_the_drawn_arms_share(arms: pd.DataFrame) -> None:
    spec = example_spec()
    best = arms[arms.segment == "general"].arm_id.iloc[2]
    shares = arm_shares(arms, _performance(arms, "general", best), spec, DAY)
    assigned = assign_leads(_leads(500, "general"), shares, DAY)
    lookup = shares.set_index(["segment", "arm_id"])
    for row in assigned.itertuples():
        arm = lookup.loc[(row.segment, row.arm_id)]
        assert row.propensity == arm.share
        assert (row.angle, row.prompt_version, row.model) == (arm.angle, arm.prompt_version, arm.model)
        assert row.reason == arm.reason


@pytest.mark.parametrize("skewed", [False, True])
def test_empirical_arm_frequencies_match_shares(arms: pd.DataFrame, uniform: pd.DataFrame, skewed: bool) -> None:
    spec = example_spec()
    if skewed:
        best = arms[arms.segment == "general"].arm_id.iloc[4]
        shares = arm_shares(arms, _performance(arms, "general", best), spec, DAY)
    else:
        shares = uniform
    n = 5000
    assigned = assign_leads(_leads(n, "general"), shares, DAY)
    freq = assigned.arm_id.value_counts(normalize=True)
    expected = shares[shares.segment == "general"].set_index("arm_id").share
    observed = freq.reindex(expected.index, fill_value=0.0)
    # Within about 3.5 standard errors of a 5000-lead multinomial.
    assert (observed - expected).abs().max() < 0.025, pd.DataFrame({"expected": expected, "observed": observed})
    # Every arm, even one held at the floor, is still drawn.
    assert (observed > 0).all()


# --- the assign stage on a temporary warehouse (policy loop-v2) ----------------------------------


def _materialize_assignments(paths) -> dg.MaterializeResult:
    instance = dg.DagsterInstance.ephemeral()
    register_campaigns(instance, [paths.default_campaign])
    return dg.materialize(
        [assignments],
        partition_key=line_key(paths.default_campaign, DB_DAY),
        resources={"factory": FactoryResource.from_paths(paths)},
        instance=instance,
    )


def test_the_assign_stage_runs_the_experiment_and_keeps_each_lead_on_re_run(tmp_path) -> None:
    paths = Paths.under(tmp_path)
    spec = load_spec(paths.spec)
    segments = tuple(s.name for s in spec.segments)
    experiment = propose(
        campaign_id=CAMPAIGN,
        kind="prompt_version",
        hypothesis="draft-v2 earns more positive replies per send",
        control="draft-v1",
        challengers=("draft-v2",),
        target_segments=segments,
        primary_metric="positive_reply_rate",
        base_rate=0.015,
        mde=0.3,
        max_traffic_share=0.2,
        motivating_figures={},
        proposed_by="test",
        at=dt.datetime(2026, 3, 1, 6),
    )
    with connect(paths.warehouse) as con:
        add_leads(con, LEADS, DB_DAY)
        for segment in segments:
            for angle in spec.angles:
                add_plan(con, segment, angle.name, angle.hypothesis, DB_DAY)
        assert save_proposed(con, experiment, run_for(dt.date(2026, 3, 1)))
        for state in ("approved", "running"):
            move_experiment(con, experiment.experiment_id, state, "test", "start it", {}, dt.datetime(2026, 3, 2, 5))

    result = _materialize_assignments(paths)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.metadata
    with connect(paths.warehouse) as con:
        first = con.execute("SELECT * FROM raw.assignments ORDER BY lead_id").df()
        allocation = con.execute("SELECT * FROM raw.allocations").df()
        # The experiment ends; a re-run of the day must not move anyone.
        move_experiment(con, experiment.experiment_id, "retired", "test", "stop it", {}, dt.datetime(2026, 3, 2, 7))
    assert len(first) == len(LEADS)
    held = first[first.holdout]
    loop = first[~first.holdout]
    assert (first.holdout == [is_holdout(CAMPAIGN, lead, spec.improve.holdout_share) for lead in first.lead_id]).all()
    assert (
        len(loop) >= 5
        and (loop.experiment_id == experiment.experiment_id).all()
        and set(loop.experiment_arm) <= {"draft-v1", "draft-v2"}
    )
    assert (loop.prompt_version == loop.experiment_arm).all() and set(loop.policy_version) == {LOOP_POLICY}
    assert held.experiment_id.isna().all()
    shares = allocation.set_index(["segment", "holdout", "arm_id"]).share
    assert [shares[(r.segment, r.holdout, r.arm_id)] for r in first.itertuples()] == pytest.approx(first.propensity.tolist())
    assert set(allocation.policy_version) == {LOOP_POLICY, HOLDOUT_POLICY_VERSION}

    assert _materialize_assignments(paths).success
    with connect(paths.warehouse) as con:
        again = con.execute("SELECT * FROM raw.assignments ORDER BY lead_id").df()
    pd.testing.assert_frame_equal(first, again)
