"""Segment splits and hook experiments: finding a split, and the assign stage's split and hook layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_logic import DAY, offline_plan
from test_improve_allocation import NO_DATA, SPEC, leads, loop_rows, running

from factory_dagster.improve.allocation import allocate, allocation_problems, assign_leads, split_rules
from factory_dagster.improve.decisions import promoted_state
from factory_dagster.improve.splits import (
    MIN_PART_SENDS,
    POOLED,
    SplitRule,
    find_split,
    part_performance,
    part_segment,
    size_band,
)
from factory_dagster.improve.versions import PLAN_HOOK, LoopState, initial_state

ANGLES = [a.name for a in SPEC.angles]
SENIOR = ("C-level", "Director", "VP")
RULE = SplitRule("seniority", SENIOR)


def planted_sends(n_per_cell: int, senior_best: str, junior_best: str, seed: int = 3) -> pd.DataFrame:
    """Mature sends of `general` where senior leads answer `senior_best` best and the others `junior_best`."""
    rng = np.random.default_rng(seed)
    rows = []
    for seniority in ("C-level", "VP", "Director", "Manager", "Individual Contributor"):
        best = senior_best if seniority in SENIOR else junior_best
        for angle in ANGLES:
            rate = 0.04 if angle == best else 0.01
            for positive in rng.random(n_per_cell) < rate:
                rows.append(
                    {"segment": "general", "angle": angle, "positive": bool(positive), "seniority": seniority}
                    | {"industry": "Software", "region": "DACH", "company_size": 150}
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def plan() -> pd.DataFrame:
    return offline_plan(SPEC)


def test_a_planted_difference_by_seniority_is_found_and_explained() -> None:
    finding = find_split(planted_sends(250, "close_speed", "team_time"), "general", ANGLES, 0.015, 20)
    assert finding is not None and finding.rule == RULE
    assert finding.figures["in"]["best_angle"] == "close_speed" and finding.figures["out"]["best_angle"] == "team_time"
    assert finding.p_different >= 0.95 and finding.gain >= 0.1


def test_no_split_without_a_difference_or_without_enough_sends() -> None:
    assert find_split(planted_sends(250, "team_time", "team_time"), "general", ANGLES, 0.015, 20) is None
    thin = planted_sends(MIN_PART_SENDS // 20, "close_speed", "team_time")
    assert find_split(thin, "general", ANGLES, 0.015, 20) is None


def test_split_rules_round_trip_and_put_every_lead_in_one_part() -> None:
    assert SplitRule.from_name(RULE.name) == RULE and RULE.name == "split:seniority=C-level|Director|VP"
    with pytest.raises(ValueError, match="not a split rule"):
        SplitRule.from_name("pooled")
    frame = pd.DataFrame({"seniority": ["VP", "Manager"], "company_size": [20, 5000]})
    assert list(RULE.parts(frame)) == ["in", "out"] and RULE.part({"seniority": "Manager"}) == "out"
    assert [size_band(s) for s in (1, 199, 200, 999, 1000)] == ["1-199", "1-199", "200-999", "200-999", "1000+"]
    assert list(SplitRule("size_band", ("1000+",)).parts(frame)) == ["out", "in"]


def split_experiment(share: float = 0.5):
    return running(challengers=(RULE.name,), control=POOLED, kind="segment_split", share=share)


def known(n: int = 400) -> pd.DataFrame:
    """Per-send known outcomes of general, as `known_send_outcomes` gives them: seniors answer close_speed."""
    sends = planted_sends(n, "close_speed", "team_time").rename(columns={"positive": "positive_replies"})
    return sends.assign(arm_id=[f"{a}|draft-v1|{SPEC.routing['draft']}" for a in sends.angle], replies=False, unsubscribes=False)


def test_a_running_split_gives_challenger_leads_their_parts_angles(plan: pd.DataFrame) -> None:
    experiment = split_experiment()
    rules = split_rules(initial_state(SPEC), [experiment])
    assert rules == {"general": RULE}
    parts = part_performance(known(), rules)
    assert set(parts.segment) == {part_segment("general", "in"), part_segment("general", "out")}
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY, part_performance=parts)
    assert allocation_problems(allocation, SPEC.allocation.exploration_floor, {experiment.experiment_id: experiment}) == []
    general = loop_rows(allocation, "general")
    for part, group in general.groupby("part"):
        assert group.share.sum() == pytest.approx(1.0)
        challenger = group[group.split_arm == RULE.name].groupby("angle").angle_share.first()
        control = group[group.split_arm == POOLED].groupby("angle").angle_share.first()
        assert control.max() - control.min() < 0.02  # pooled: no data on the whole segment, so every angle alike
        assert challenger.idxmax() == ("close_speed" if part == "in" else "team_time"), (part, challenger)
    # Leads draw from their own part's rows; the split arm is a layer of its own.
    people = leads(2000, "general").assign(seniority=np.resize(["VP", "Manager", "C-level", "Accountant"], 2000))
    people = people.assign(industry="Software", company_size=100, region="DACH")
    assigned = assign_leads(people, allocation, SPEC, DAY)
    loop = assigned[~assigned.holdout].merge(people[["lead_id", "seniority"]], on="lead_id")
    assert (loop.part == np.where(loop.seniority.isin(SENIOR), "in", "out")).all()
    shares = loop.split_arm.value_counts(normalize=True)
    assert shares[RULE.name] == pytest.approx(0.5, abs=0.05) and set(loop.split_experiment_id) == {experiment.experiment_id}
    senior_challengers = loop[(loop.split_arm == RULE.name) & (loop.part == "in")]
    assert senior_challengers.angle.value_counts().idxmax() == "close_speed"
    assert assigned[assigned.holdout].part.isna().all()


def test_a_promoted_split_applies_to_every_loop_lead_and_rolls_back_by_version(plan: pd.DataFrame) -> None:
    experiment = split_experiment()
    state = promoted_state(initial_state(SPEC), experiment, RULE.name)
    assert state.splits == {"general": RULE.name} and LoopState.from_json(state.to_json()) == state
    assert promoted_state(initial_state(SPEC), experiment, POOLED) is None  # the control won: nothing changes
    allocation = allocate(plan, NO_DATA, SPEC, state, [], DAY, part_performance=part_performance(known(), split_rules(state, [])))
    general = loop_rows(allocation, "general")
    assert set(general.part) == {"in", "out"} and general.split_experiment_id.isna().all()
    assert set(general.split_arm.dropna()) == set() and set(general.split_rule) == {RULE.name}
    assert loop_rows(allocation, "enterprise_finance").part.isna().all()


def test_a_hook_experiment_splits_only_its_angles_leads(plan: pd.DataFrame) -> None:
    figures = {"angle": "close_speed", "hook": "What would your team do with the hours close speed takes?"}
    experiment = running(challengers=("hook-0a1b2c3d",), control=PLAN_HOOK, kind="hook", share=0.5, figures=figures)
    allocation = allocate(plan, NO_DATA, SPEC, initial_state(SPEC), [experiment], DAY)
    assert allocation_problems(allocation, SPEC.allocation.exploration_floor, {experiment.experiment_id: experiment}) == []
    general = loop_rows(allocation, "general")
    assert set(general[general.angle == "close_speed"].hook_arm) == {PLAN_HOOK, "hook-0a1b2c3d"}
    assert general[general.angle != "close_speed"].hook_experiment_id.isna().all()
    assigned = assign_leads(leads(3000, "general"), allocation, SPEC, DAY)
    in_angle = assigned[~assigned.holdout & (assigned.angle == "close_speed")]
    assert in_angle.hook_version.eq("hook-0a1b2c3d").mean() == pytest.approx(0.5, abs=0.07)
    assert in_angle.hook_version.isna().sum() == (in_angle.hook_arm == PLAN_HOOK).sum()  # the plan's hook: no version
    assert assigned[assigned.angle != "close_speed"].hook_experiment_id.isna().all()
    # Promoted, the hook drafts every loop lead of its angle in the target segments; the others keep the plan's.
    state = promoted_state(initial_state(SPEC), experiment, "hook-0a1b2c3d")
    assert state.hook("general", "close_speed") == "hook-0a1b2c3d" and state.hook("general", "team_time") == PLAN_HOOK
    after = loop_rows(allocate(plan, NO_DATA, SPEC, state, [], DAY), "general")
    assert set(after[after.angle == "close_speed"].hook_version) == {"hook-0a1b2c3d"}
    assert promoted_state(state, experiment, PLAN_HOOK).hooks == {}
