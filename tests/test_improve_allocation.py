"""Policy loop-v2: angle shares on positive replies, running experiments' traffic, and the sticky holdout."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pandas as pd
import pytest
from helpers_logic import DAY, example_spec, offline_plan

from factory_dagster.assignment.policy import arm_id, arm_shares, candidate_arms
from factory_dagster.improve.allocation import (
    HOLDOUT_POLICY_VERSION,
    POLICY_VERSION,
    allocate,
    allocation_problems,
    angle_shares,
    assign_leads,
    holdout_problems,
    is_holdout,
    segment_traffic,
)
from factory_dagster.improve.experiments import Experiment, propose, transition
from factory_dagster.improve.versions import LoopState, initial_state

SPEC = example_spec()
MODEL = SPEC.routing["draft"]
SEGMENTS = tuple(s.name for s in SPEC.segments)
NO_DATA = pd.DataFrame(columns=["segment", "arm_id", "angle", "sends", "replies", "positive_replies"])


def running(
    challengers: tuple[str, ...] = ("draft-v2",),
    segments: tuple[str, ...] = ("general",),
    share: float = 0.2,
    kind: str = "prompt_version",
    control: str = "draft-v1",
    started: dt.datetime = dt.datetime(2026, 3, 1, 6),
    figures: dict | None = None,
) -> Experiment:
    proposed = propose(
        campaign_id=SPEC.campaign_id,
        kind=kind,
        hypothesis="the challenger earns more positive replies per send",
        control=control,
        challengers=challengers,
        target_segments=segments,
        primary_metric="positive_reply_rate",
        base_rate=0.015,
        mde=0.3,
        max_traffic_share=share,
        motivating_figures=figures if figures is not None else {},
        proposed_by="test",
        at=started - dt.timedelta(days=1),
    )
    approved, _ = transition(proposed, "approved", "ana", "looks right", {}, started)
    return transition(approved, "running", "decision step", "segment free", {}, started)[0]


@pytest.fixture(scope="module")
def plan() -> pd.DataFrame:
    return offline_plan(SPEC)


def leads(n: int, segment: str, prefix: str = "lead") -> pd.DataFrame:
    return pd.DataFrame({"lead_id": [f"{prefix}_{segment}_{i:05d}" for i in range(n)], "segment": segment})


def loop_rows(allocation: pd.DataFrame, segment: str) -> pd.DataFrame:
    return allocation[(allocation.segment == segment) & ~allocation.holdout]


def test_shares_sum_to_one_per_population_and_keep_the_floor(plan: pd.DataFrame) -> None:
    experiment = running()
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    floor = SPEC.allocation.exploration_floor
    for (_, holdout), group in allocation.groupby(["segment", "holdout"]):
        assert group.share.sum() == pytest.approx(1.0, abs=1e-9)
        assert set(group.policy_version) == {HOLDOUT_POLICY_VERSION if holdout else POLICY_VERSION}
        if not holdout:
            by_angle = group.groupby("angle").share.sum()
            assert (by_angle >= floor / len(by_angle) - 1e-12).all()
    assert allocation_problems(allocation, floor, {experiment.experiment_id: experiment}) == []


def test_positive_reply_thompson_prefers_the_positive_arm_over_the_trap(plan: pd.DataFrame) -> None:
    """The trap angle earns twice the replies but half the positive replies: loop-v2 backs the other
    angle, while the old policy on raw replies backs the trap."""
    segment = "scaleup_finance_leaders"
    counts = {"close_speed": (130, 28), "team_time": (80, 48), "fewer_errors": (70, 31)}  # replies, positive replies
    performance = pd.DataFrame(
        [
            {
                "segment": segment,
                "arm_id": arm_id(angle, pv, MODEL),
                "angle": angle,
                "sends": 1000,
                "replies": r // 2,
                "positive_replies": p // 2,
            }
            for angle, (r, p) in counts.items()
            for pv in SPEC.drafting.prompt_versions
        ]
    )
    shares = angle_shares(plan, performance, SPEC, DAY).set_index(["segment", "angle"]).loc[segment]
    assert shares.angle_share.idxmax() == "team_time" and shares.angle_share["team_time"] > 0.8
    assert shares.loc["team_time", ["sends", "positive_replies"]].tolist() == [2000, 48]  # pooled over prompt versions
    old = arm_shares(candidate_arms(plan, SPEC), performance, SPEC, DAY)
    assert old[old.segment == segment].set_index("arm_id").share.idxmax().startswith("close_speed|")


def test_unsubscribes_count_against_an_angle_with_the_specs_weight(plan: pd.DataFrame) -> None:
    """Two angles with the same positive replies: the one that loses three times the leads to
    unsubscribes gets less traffic; with the weight at 0 the two are judged on positives alone."""
    segment = "scaleup_finance_leaders"
    counts = {"close_speed": (30, 54), "team_time": (30, 18), "fewer_errors": (10, 18)}  # positives, unsubscribes
    performance = pd.DataFrame(
        [
            {"segment": segment, "arm_id": arm_id(angle, SPEC.drafting.prompt_versions[0], MODEL), "angle": angle}
            | {"sends": 1500, "replies": 2 * p, "positive_replies": p, "unsubscribes": u}
            for angle, (p, u) in counts.items()
        ]
    )

    def shares(weight: float) -> pd.Series:
        spec = SPEC.model_copy(update={"allocation": SPEC.allocation.model_copy(update={"unsubscribe_weight": weight})})
        return angle_shares(plan, performance, spec, DAY).set_index(["segment", "angle"]).loc[segment].angle_share

    weighted, unweighted = shares(1.0), shares(0.0)
    assert weighted["team_time"] > 0.75 > weighted["close_speed"]
    assert abs(unweighted["team_time"] - unweighted["close_speed"]) < 0.25  # a coin toss on positives alone
    assert weighted["close_speed"] < unweighted["close_speed"]


def test_no_data_gives_near_uniform_angles(plan: pd.DataFrame) -> None:
    shares = angle_shares(plan, NO_DATA, SPEC, DAY)
    assert (shares.angle_share - 1 / 3).abs().max() < 0.03
    assert shares.posterior_mean.to_numpy() == pytest.approx(SPEC.allocation.prior_positive_rate)
    pd.testing.assert_frame_equal(shares, angle_shares(plan, NO_DATA, SPEC, DAY))  # seeded per day


def test_challengers_get_the_planned_share_only_in_target_segments(plan: pd.DataFrame) -> None:
    experiment = running(challengers=("draft-v2", "draft-v3"), segments=("general", "operations_heavy"), share=0.2)
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    for segment in SEGMENTS:
        rows = loop_rows(allocation, segment)
        if segment in experiment.target_segments:
            assert set(rows.experiment_id) == {experiment.experiment_id}
            by_arm = rows.groupby("experiment_arm").share.sum()
            assert by_arm.to_dict() == pytest.approx({"draft-v1": 0.8, "draft-v2": 0.1, "draft-v3": 0.1})
            assert set(rows.prompt_version) == {"draft-v1", "draft-v2", "draft-v3"}
        else:
            assert rows.experiment_id.isna().all() and set(rows.prompt_version) == {"draft-v1"}
    assert allocation[allocation.holdout].experiment_id.isna().all()


def test_propensity_is_the_product_of_angle_and_arm_shares(plan: pd.DataFrame) -> None:
    experiment = running()
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    assigned = assign_leads(leads(1500, "general"), allocation, SPEC, DAY)
    lookup = allocation.set_index(["segment", "holdout", "arm_id"])
    for row in assigned.itertuples():
        source = lookup.loc[(row.segment, row.holdout, row.arm_id)]
        if row.holdout:
            assert row.propensity == pytest.approx(1 / 6) and row.policy_version == HOLDOUT_POLICY_VERSION
        else:
            assert row.propensity == pytest.approx(source.angle_share * source.arm_share)
            assert row.experiment_arm == row.prompt_version and row.experiment_id == experiment.experiment_id
        assert row.reason == source.reason


def test_experiment_arms_get_their_share_on_the_same_angle_mix(plan: pd.DataFrame) -> None:
    experiment = running(share=0.3)
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    loop = assign_leads(leads(6000, "general"), allocation, SPEC, DAY).query("not holdout")
    challenger = (loop.experiment_arm == "draft-v2").mean()
    assert abs(challenger - 0.3) < 4 * (0.3 * 0.7 / len(loop)) ** 0.5
    mix = pd.crosstab(loop.experiment_arm, loop.angle, normalize="index")
    assert (mix.loc["draft-v1"] - mix.loc["draft-v2"]).abs().max() < 0.05


def test_holdout_is_sticky_about_five_percent_and_never_in_experiments(plan: pd.DataFrame) -> None:
    experiment = running(segments=SEGMENTS)
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    frame = pd.concat([leads(2500, s) for s in SEGMENTS], ignore_index=True)
    first = assign_leads(frame, allocation, SPEC, DAY)
    share = SPEC.improve.holdout_share
    assert abs(first.holdout.mean() - share) < 4 * (share * (1 - share) / len(first)) ** 0.5
    held = first[first.holdout]
    assert held.experiment_id.isna().all() and set(held.policy_version) == {HOLDOUT_POLICY_VERSION}
    # Membership is a property of (campaign, lead): another day, or another loop state, keeps it.
    later = assign_leads(frame, allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [], DAY), SPEC, DAY + dt.timedelta(days=9))
    assert (later.holdout.to_numpy() == first.holdout.to_numpy()).all()
    assert is_holdout(SPEC.campaign_id, "lead_x", 1.0) and not is_holdout(SPEC.campaign_id, "lead_x", 0.0)
    assert holdout_problems(first, SPEC.campaign_id, share) == []


def test_a_lead_keeps_its_draw_on_re_run_and_the_day_reseeds(plan: pd.DataFrame) -> None:
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [running()], DAY)
    frame = leads(400, "general")
    first = assign_leads(frame, allocation, SPEC, DAY)
    pd.testing.assert_frame_equal(first, assign_leads(frame, allocation, SPEC, DAY))
    shuffled = assign_leads(frame.sample(frac=1, random_state=3), allocation, SPEC, DAY).set_index("lead_id")
    assert (shuffled.loc[first.lead_id, "arm_id"].to_numpy() == first.arm_id.to_numpy()).all()
    next_day = assign_leads(frame, allocation, SPEC, DAY + dt.timedelta(days=1))
    assert (next_day.arm_id != first.arm_id).mean() > 0.3


def test_the_loop_state_sets_champion_and_draft_model(plan: pd.DataFrame) -> None:
    state = LoopState(champions={**initial_state(SPEC).champions, "general": "draft-v2"}, routing={"draft": "gpt-4o-nano"})
    allocation = allocate(plan, NO_DATA, SPEC, state, [], DAY, serve=lambda name: f"served:{name}")
    general, other = loop_rows(allocation, "general"), loop_rows(allocation, "enterprise_finance")
    assert set(general.prompt_version) == {"draft-v2"} and set(other.prompt_version) == {"draft-v1"}
    assert set(allocation[~allocation.holdout].model) == {"served:gpt-4o-nano"}
    # The holdout keeps the spec's own arms whatever the loop decided.
    held = allocation[allocation.holdout]
    assert set(held.model) == {MODEL} and set(held.prompt_version) == set(SPEC.drafting.prompt_versions)


def test_routing_experiments_of_the_draft_stage_change_the_model() -> None:
    canary = running(kind="routing", control="gpt-4o-mini", challengers=("gpt-4o-nano",), share=0.1, figures={"stage": "draft"})
    traffic = segment_traffic("general", "draft-v1", "offline-cheap", [canary], serve=lambda name: f"served:{name}")
    assert traffic.routing.experiment_id == canary.experiment_id and traffic.message.experiment_id is None
    assert [(a.experiment_arm, a.serves, a.share) for a in traffic.routing.arms] == [
        ("gpt-4o-mini", "served:gpt-4o-mini", pytest.approx(0.9)),
        ("gpt-4o-nano", "served:gpt-4o-nano", pytest.approx(0.1)),
    ]
    assert [(a.experiment_arm, a.serves, a.share) for a in traffic.message.arms] == [(None, "draft-v1", 1.0)]
    audit = replace(canary, motivating_figures={"stage": "audit"})
    assert segment_traffic("general", "draft-v1", "offline-cheap", [audit]).routing.experiment_id is None


def test_a_prompt_experiment_and_a_routing_canary_split_the_same_leads_independently(plan: pd.DataFrame) -> None:
    prompt = running(share=0.2)
    canary = running(kind="routing", control=MODEL, challengers=("offline-nano",), share=0.1, figures={"stage": "draft"})
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [prompt, canary], DAY)
    assert (
        allocation_problems(allocation, SPEC.allocation.exploration_floor, {e.experiment_id: e for e in (prompt, canary)}) == []
    )
    assigned = assign_leads(leads(4000, "general"), allocation, SPEC, DAY)
    loop = assigned[~assigned.holdout]
    assert set(loop.experiment_id) == {prompt.experiment_id} and set(loop.routing_experiment_id) == {canary.experiment_id}
    assert set(loop.model) == {MODEL, "offline-nano"} and (loop.model == loop.routing_arm).all()
    table = pd.crosstab(loop.experiment_arm == "draft-v2", loop.routing_arm == "offline-nano", normalize="index")
    # Each prompt arm gets about 10% nano drafts: the layers are drawn independently.
    assert table[True].between(0.07, 0.13).all()
    assert loop.propensity.round(6).isin(allocation.share.round(6)).all()
    held = assigned[assigned.holdout]
    assert held.experiment_id.isna().all() and held.routing_experiment_id.isna().all()


def test_the_oldest_running_experiment_gets_the_segment() -> None:
    older = running(challengers=("draft-v2",), started=dt.datetime(2026, 2, 20, 6))
    newer = running(challengers=("draft-v3",), started=dt.datetime(2026, 2, 25, 6))
    traffic = segment_traffic("general", "draft-v1", MODEL, [newer, older]).message
    assert traffic.experiment_id == older.experiment_id
    assert newer.experiment_id in traffic.note and "waiting" in traffic.note
    concluded = replace(older, state="retired")
    assert segment_traffic("general", "draft-v1", MODEL, [newer, concluded]).message.experiment_id == newer.experiment_id


def test_allocation_problems_catch_broken_allocations(plan: pd.DataFrame) -> None:
    experiment = running()
    known = {experiment.experiment_id: experiment}
    floor = SPEC.allocation.exploration_floor
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    challenger = allocation.index[(allocation.experiment_arm == "draft-v2")]
    control = allocation.index[(allocation.experiment_arm == "draft-v1")]
    greedy = allocation.copy()
    greedy.loc[challenger, "share"] *= 2
    greedy.loc[control, "share"] -= allocation.loc[challenger, "share"].to_numpy()
    assert [p for p in allocation_problems(greedy, floor, known) if "over its maximum" in p]

    elsewhere = allocation.copy()
    elsewhere.loc[elsewhere.segment == "enterprise_finance", "experiment_id"] = experiment.experiment_id
    assert any("cannot run here" in p and "enterprise_finance" in p for p in allocation_problems(elsewhere, floor, known))
    assert any("does not exist" in p for p in allocation_problems(allocation, floor, {}))

    held = allocation.copy()
    held.loc[held.holdout, "experiment_id"] = experiment.experiment_id
    assert any("holdout rows are in an experiment" in p for p in allocation_problems(held, floor, known))
    wrong_layer = allocation.copy()
    wrong_layer["routing_experiment_id"] = wrong_layer["experiment_id"]
    wrong_layer["routing_arm"] = wrong_layer["experiment_arm"]
    assert any("cannot run here in the routing layer" in p for p in allocation_problems(wrong_layer, floor, known))

    starved = allocation.copy()
    rows = starved.index[(starved.segment == "general") & ~starved.holdout & (starved.angle == "close_speed")]
    others = starved.index[(starved.segment == "general") & ~starved.holdout & (starved.angle != "close_speed")]
    starved.loc[others, "share"] += starved.loc[rows, "share"].sum() / len(others)
    starved.loc[rows, "share"] = 0.0
    assert any("close_speed" in p and "under floor" in p for p in allocation_problems(starved, floor, known))


def test_holdout_problems_catch_a_wrong_flag_and_a_held_lead_in_an_experiment() -> None:
    frame = pd.DataFrame({"lead_id": [f"lead_{i}" for i in range(400)], "experiment_id": None})
    frame["holdout"] = [is_holdout(SPEC.campaign_id, lead, 0.05) for lead in frame.lead_id]
    assert holdout_problems(frame, SPEC.campaign_id, 0.05) == []
    flipped = frame.assign(holdout=~frame.holdout)
    problems = holdout_problems(flipped, SPEC.campaign_id, 0.05)
    assert any("differs from the hash" in p for p in problems) and any("implausible" in p for p in problems)
    in_experiment = frame.copy()
    in_experiment.loc[in_experiment.holdout, "experiment_id"] = "exp_x"
    assert holdout_problems(in_experiment, SPEC.campaign_id, 0.05) == ["holdout leads were put in an experiment"]
    in_canary = frame.assign(routing_experiment_id=None)
    in_canary.loc[in_canary.holdout, "routing_experiment_id"] = "exp_y"
    assert holdout_problems(in_canary, SPEC.campaign_id, 0.05) == ["holdout leads were put in an experiment"]
    assert holdout_problems(frame.assign(holdout=None), SPEC.campaign_id, 0.05) == []  # before loop-v2


def _day_of(held: int, others: int) -> pd.DataFrame:
    """A day's assignments whose hash puts `held` of its leads in the 5% holdout and `others` not."""
    ids = (f"lead_{i}" for i in range(100_000))
    chosen = {True: [], False: []}
    while len(chosen[True]) < held or len(chosen[False]) < others:
        lead = next(ids)
        flag = is_holdout(SPEC.campaign_id, lead, 0.05)
        if len(chosen[flag]) < (held if flag else others):
            chosen[flag].append(lead)
    return pd.DataFrame(
        {"lead_id": chosen[True] + chosen[False], "holdout": [True] * held + [False] * others, "experiment_id": None}
    )


def test_a_small_days_holdout_is_judged_by_the_exact_binomial_test() -> None:
    """Twenty leads a day: 5 in a 5% holdout happens (p = 0.0026), 7 does not (p = 6e-6). The chi-square test this
    replaced failed the first as implausible (p = 4e-5) and stopped the campaign's day."""
    assert holdout_problems(_day_of(5, 15), SPEC.campaign_id, 0.05) == []
    (problem,) = holdout_problems(_day_of(7, 13), SPEC.campaign_id, 0.05)
    assert "implausible" in problem
