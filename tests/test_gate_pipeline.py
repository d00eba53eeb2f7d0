"""The gate: pick the best passing candidate, repair, escalate, quarantine — and account for every draft."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from functools import cache

import pandas as pd
import pytest
from helpers_logic import DAY, example_spec, gateway, make_leads, offline_plan, registry, work_frame

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import draft_candidates
from factory_dagster.gates.pipeline import GateOutput, run_gates, send_id_for
from factory_dagster.gates.schemas import message_failures, message_schema

N_LEADS = 40


def spec_with(repairs: int = 1, candidates: int = 3) -> CampaignSpec:
    spec = example_spec()
    drafting = spec.drafting.model_copy(update={"max_repair_attempts": repairs, "candidates": candidates})
    return spec.model_copy(update={"drafting": drafting})


@cache
def _plan() -> pd.DataFrame:
    return offline_plan(example_spec())


class Run:
    """One gate run over fresh candidates, with everything it produced."""

    def __init__(
        self,
        cheap: float,
        premium: float,
        repairs: int = 1,
        candidates: int = 3,
        n: int = N_LEADS,
        run_id: str = "run-1",
        day: dt.date = DAY,
        campaign_id: str | None = None,
    ) -> None:
        self.spec = spec_with(repairs, candidates)
        self.gateway = gateway(registry(cheap, premium), run_id=run_id, day=day, campaign_id=campaign_id)
        self.work = work_frame(self.spec, make_leads(n, self.spec), _plan())
        self.candidates, deferred = draft_candidates(self.gateway, self.spec, self.work)
        assert deferred == []  # no budget in these runs
        self.out: GateOutput = run_gates(self.gateway, self.spec, self.work, self.candidates)
        frames = self.out.frames()
        self.extra_drafts, self.results = frames["drafts"], frames["gate_results"]
        self.messages, self.quarantine = frames["messages"], frames["messages_quarantine"]
        self.all_drafts = pd.concat([self.candidates, self.extra_drafts], ignore_index=True)

    def drafts_of(self, lead_id: str) -> pd.DataFrame:
        return self.all_drafts[self.all_drafts.lead_id == lead_id]

    def results_of(self, lead_id: str) -> pd.DataFrame:
        return self.results[self.results.lead_id == lead_id]


@cache
def run(cheap: float, premium: float, repairs: int = 1, candidates: int = 3) -> Run:
    return Run(cheap, premium, repairs, candidates)


def check_accounting(r: Run) -> None:
    """Invariants of every gate run."""
    lead_ids = set(r.work.lead_id)
    messaged = list(r.messages.lead_id) if not r.messages.empty else []
    quarantined = list(r.quarantine.lead_id) if not r.quarantine.empty else []
    # Every lead ends exactly once: a message or a quarantine row.
    assert len(messaged) == len(set(messaged)) and len(quarantined) == len(set(quarantined))
    assert set(messaged) | set(quarantined) == lead_ids and not set(messaged) & set(quarantined)
    # Every produced draft has exactly one gate result, and every result is of a produced draft.
    assert r.all_drafts.draft_id.is_unique
    assert sorted(r.results.draft_id) == sorted(r.all_drafts.draft_id)
    # Every draft is one model call in the ledger, and carries that call's stage and cost.
    ledger = r.gateway.ledger()
    assert sorted(ledger.call_id) == sorted(r.all_drafts.llm_call_id)
    calls = ledger.set_index("call_id").loc[r.all_drafts.llm_call_id]
    assert list(r.all_drafts.stage) == list(calls.stage) and list(r.all_drafts.cost_usd) == list(calls.cost_usd)
    assert set(r.all_drafts.stage) <= {"draft", "repair", "escalate"}
    # Exactly one selected result per messaged lead, none for quarantined ones; the message is that draft.
    selected = r.results[r.results.selected]
    assert sorted(selected.lead_id) == sorted(messaged)
    assert selected.passed.all()
    for m in r.messages.itertuples():
        chosen = r.all_drafts.set_index("draft_id").loc[m.draft_id]
        assert chosen.lead_id == m.lead_id
        assert (chosen.subject, chosen.body, chosen.model) == (m.subject, m.body, m.model)
        assert selected.set_index("lead_id").loc[m.lead_id, "draft_id"] == m.draft_id
    # Result rows mirror their draft's attempt and model.
    merged = r.results.merge(r.all_drafts, on="draft_id", suffixes=("", "_draft"))
    assert (merged.attempt == merged.attempt_draft).all() and (merged.model == merged.model_draft).all()
    # The stored messages pass the Pandera schema built from the spec.
    assert message_failures(r.messages, r.spec).empty


@pytest.mark.parametrize(
    ("cheap", "premium", "repairs"), [(0.0, 0.0, 1), (0.15, 0.01, 1), (0.5, 0.0, 1), (1.0, 0.0, 0), (1.0, 1.0, 2)]
)
def test_every_run_accounts_for_every_lead_and_draft(cheap: float, premium: float, repairs: int) -> None:
    check_accounting(run(cheap, premium, repairs))


def test_clean_candidates_first_one_wins_without_extra_calls() -> None:
    r = run(0.0, 0.0)
    assert len(r.messages) == N_LEADS and r.quarantine.empty
    assert r.extra_drafts.empty
    assert r.results.passed.all() and (r.results.attempt == 0).all()
    # All candidates agree perfectly, so the tie goes to the first candidate.
    assert (r.results.agreement == 1.0).all()
    chosen = r.candidates.set_index("draft_id").loc[r.messages.draft_id]
    assert (chosen.candidate_index == 0).all()
    assert set(r.messages.model) == {"offline-cheap"}
    assert len(r.gateway.ledger()) == N_LEADS * 3


def test_selected_draft_has_the_highest_agreement_among_passing_candidates() -> None:
    r = run(0.5, 0.0)
    candidates = r.candidates.set_index("draft_id")
    for _, group in r.results.groupby("lead_id"):
        chosen = group[group.selected]
        if chosen.empty:
            continue
        chosen = chosen.iloc[0]
        same_round = group[(group.attempt == chosen.attempt) & group.passed]
        assert chosen.agreement == same_round.agreement.max()
        if chosen.attempt == 0:
            best = same_round[same_round.agreement == chosen.agreement]
            # Ties go to the lowest candidate index.
            assert candidates.loc[chosen.draft_id, "candidate_index"] == min(candidates.loc[best.draft_id, "candidate_index"])


def _hand_made(r: Run, lead_id: str, bodies: list[str | None]) -> pd.DataFrame:
    """Candidate rows for one lead with the given bodies (None: an answer that did not parse)."""
    base = r.candidates[(r.candidates.lead_id == lead_id) & (r.candidates.candidate_index == 0)].iloc[0]
    rows = []
    for i, text in enumerate(bodies):
        rows.append(
            {
                **base.to_dict(),
                "draft_id": f"hand_{lead_id}_{i}",
                "candidate_index": i,
                "body": text,
                "subject": None if text is None else base.subject,
                "parse_error": "not JSON: Expecting value" if text is None else None,
            }
        )
    return pd.DataFrame(rows)


def test_agreement_decides_between_passing_candidates() -> None:
    r = run(0.0, 0.0)
    row = r.work[r.work.angle == "close_speed"].iloc[0]
    clean = r.candidates[(r.candidates.lead_id == row.lead_id) & (r.candidates.candidate_index == 0)].iloc[0].body
    claim = "Teams using Brightwave close the month up to 4 days faster."
    assert claim in clean
    without_number = clean.replace(claim + " ", "")  # still passes, but commits to fewer facts
    work = r.work[r.work.lead_id == row.lead_id]
    gw = gateway(registry(0.0, 0.0), run_id="hand")
    out = run_gates(gw, r.spec, work, _hand_made(r, row.lead_id, [without_number, None, clean, clean]))
    results = pd.DataFrame(out.results)
    assert results.passed.tolist() == [True, False, True, True]
    assert results.violation_codes[1] == ["parse_error"]
    assert results.agreement[0] < results.agreement[2] == results.agreement[3]
    # The odd one out loses although it is first; of the tied best, the lower index wins.
    assert results.selected.tolist() == [False, False, True, False]
    assert out.messages[0]["draft_id"] == f"hand_{row.lead_id}_2"
    assert gw.ledger().empty  # a passing candidate needs no further model call


def test_unparseable_candidates_are_repaired() -> None:
    r = run(0.0, 0.0)
    lead_id = r.work.lead_id.iloc[0]
    gw = gateway(registry(0.0, 0.0), run_id="hand")
    out = run_gates(gw, r.spec, r.work[r.work.lead_id == lead_id], _hand_made(r, lead_id, [None, None]))
    assert [res["violation_codes"] for res in list(out.results)[:2]] == [["parse_error"], ["parse_error"]]
    [repair] = out.drafts
    assert repair["attempt"] == 1 and out.messages[0]["draft_id"] == repair["draft_id"]
    assert gw.ledger().stage.tolist() == ["repair"]


def test_agreement_is_lower_for_the_odd_candidate() -> None:
    r = run(0.5, 0.0)
    lowered = 0
    for _, group in r.results[r.results.attempt == 0].groupby("lead_id"):
        failing = group[~group.passed & group.violation_codes.map(lambda c: "wrong_name" in c)]
        passing = group[group.passed]
        if not failing.empty and len(passing) >= 2:
            assert failing.agreement.max() < passing.agreement.min()
            lowered += 1
    assert lowered >= 1


def test_cheap_always_wrong_premium_right_every_lead_escalates() -> None:
    r = run(1.0, 0.0, repairs=0)
    assert r.quarantine.empty and len(r.messages) == N_LEADS
    assert set(r.messages.model) == {"offline-premium"}
    assert not r.results[r.results.attempt == 0].passed.any()
    for lead_id in r.work.lead_id:
        drafts = r.drafts_of(lead_id)
        assert len(drafts) == 3 + 1 and len(r.results_of(lead_id)) == 3 + 1
        escalation = drafts[drafts.attempt == 1]
        assert escalation.model.tolist() == ["offline-premium"]
    calls = r.gateway.ledger()
    assert Counter(calls.stage) == {"draft": 3 * N_LEADS, "escalate": N_LEADS}


def test_cheap_always_wrong_with_repair_then_escalation() -> None:
    r = run(1.0, 0.0, repairs=1)
    assert r.quarantine.empty and len(r.messages) == N_LEADS
    by_model = Counter(r.messages.model)
    # A repair lists the violations, so the cheap model slips half as often: some leads are fixed by the repair.
    assert by_model["offline-cheap"] > 0 and by_model["offline-premium"] > 0
    for m in r.messages.itertuples():
        drafts = r.drafts_of(m.lead_id)
        last = drafts.attempt.max()
        assert (last, m.model) in {(1, "offline-cheap"), (2, "offline-premium")}
        assert len(drafts) == 3 + last
    stages = Counter(r.gateway.ledger().stage)
    assert stages["repair"] == N_LEADS and stages["escalate"] == by_model["offline-premium"]


@pytest.mark.parametrize("repairs", [0, 1, 2])
def test_everything_wrong_leads_are_quarantined_after_repairs_and_escalation(repairs: int) -> None:
    r = run(1.0, 1.0, repairs=repairs)
    if repairs == 0:
        assert r.messages.empty and len(r.quarantine) == N_LEADS
    # Leads only get a message from a (half as sloppy) cheap repair, never from the always-wrong premium model.
    assert r.messages.empty or set(r.messages.model) == {"offline-cheap"}
    assert not r.quarantine.empty
    for q in r.quarantine.itertuples():
        assert q.attempts == repairs + 1
        drafts, results = r.drafts_of(q.lead_id), r.results_of(q.lead_id)
        assert len(drafts) == 3 + repairs + 1 and len(results) == 3 + repairs + 1
        assert sorted(drafts.attempt) == [0, 0, 0, *range(1, repairs + 2)]
        assert not results.passed.any() and not results.selected.any()
        escalation = drafts[drafts.attempt == repairs + 1]
        assert escalation.model.tolist() == ["offline-premium"]
        # The reasons are the last attempt's violations.
        last = results[results.attempt == repairs + 1].iloc[0]
        assert q.reason_codes == sorted(set(last.violation_codes)) and q.reason_codes
        assert q.reason.strip()
        assert q.arm_id == r.work.set_index("lead_id").loc[q.lead_id, "arm_id"]


def test_lead_without_candidates_is_deferred_not_escalated_or_quarantined() -> None:
    # Drafting leaves a lead without candidates only when the budget deferred it: the gate
    # must not spend premium money on it, nor judge it; it waits for another day.
    r = run(0.0, 0.0)
    missing = r.work.lead_id.iloc[0]
    out = run_gates(r.gateway, r.spec, r.work, r.candidates[r.candidates.lead_id != missing])
    assert out.deferred == [missing]
    assert len(out.messages) + len(out.quarantine) == N_LEADS - 1
    assert missing not in {m["lead_id"] for m in out.messages} | {q["lead_id"] for q in out.quarantine}
    assert not [d for d in out.drafts if d["lead_id"] == missing]


def test_send_id_is_stable_per_campaign_and_lead() -> None:
    first = Run(0.15, 0.01, n=12, run_id="run-a", day=DAY)
    rerun = Run(0.15, 0.01, n=12, run_id="run-b", day=DAY + dt.timedelta(days=1))
    a = first.messages.set_index("lead_id")
    b = rerun.messages.set_index("lead_id")
    both = a.index.intersection(b.index)
    assert len(both) >= 8
    assert (a.loc[both, "send_id"] == b.loc[both, "send_id"]).all()
    assert (a.loc[both, "message_id"] != b.loc[both, "message_id"]).all()  # a message id is per day
    assert a.send_id.is_unique
    for lead_id, send_id in a.send_id.items():
        assert send_id == send_id_for(first.spec.campaign_id, lead_id)
    other = Run(0.15, 0.01, n=12, campaign_id="other-campaign")
    assert set(other.messages.send_id).isdisjoint(set(a.send_id))
    assert send_id_for("c", "lead_1") == send_id_for("c", "lead_1") != send_id_for("c", "lead_2")
    assert send_id_for("c", "lead_1").startswith("snd_") and len(send_id_for("c", "lead_1")) == 24


def test_gate_is_deterministic() -> None:
    again = Run(0.5, 0.0)
    first = run(0.5, 0.0)
    cols = ["lead_id", "draft_id", "subject", "body", "send_id"]
    pd.testing.assert_frame_equal(first.messages[cols], again.messages[cols])


# --- the Pandera message schema ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_messages() -> pd.DataFrame:
    messages = run(0.15, 0.01).messages
    assert message_failures(messages, example_spec()).empty
    return messages.head(5).reset_index(drop=True)


def _broken(messages: pd.DataFrame, column: str, change) -> pd.DataFrame:
    broken = messages.copy()
    broken.loc[0, column] = change(broken.loc[0, column])
    return broken


@pytest.mark.parametrize(
    ("column", "change", "check"),
    [
        ("body", lambda b: b.replace("Month-end", "Month-end is a game-changer and"), "no banned phrase"),
        ("body", lambda b: b.replace("Best,", "Honestly, this is REVOLUTIONARY.\n\nBest,"), "no banned phrase"),
        ("body", lambda b: b.replace('Reply "unsubscribe"', "Reply"), "contains 'Not relevant"),
        ("body", lambda b: b.replace("Would a 20-minute call", "Would a call"), "contains 'Would a 20-minute"),
        ("body", lambda b: b.replace("41 Harbour Street, ", ""), "contains 'Brightwave Ledger Ltd"),
        ("body", lambda b: b + (" more" * 150), "words"),
        ("body", lambda b: "Hi.\n\n" + example_spec().required.call_to_action, "words"),
        ("body", lambda b: b.replace("Hi ", "Hi {first_name} "), "no unfilled placeholder"),
        ("body", lambda b: b + " [Company]", "no unfilled placeholder"),
        ("to_email", lambda e: "not-an-email", "str_matches"),
        ("to_email", lambda e: "a b@example.com", "str_matches"),
        ("subject", lambda s: "x" * 71, "str_length"),
        ("subject", lambda s: "", "str_length"),
    ],
)
def test_schema_rejects_bad_messages(good_messages: pd.DataFrame, column: str, change, check: str) -> None:
    broken = _broken(good_messages, column, change)
    assert broken.loc[0, column] != good_messages.loc[0, column]
    failures = message_failures(broken, example_spec())
    assert not failures.empty
    assert set(failures.column) == {column}
    assert any(check in str(c) for c in failures.check), failures.check.tolist()
    # Only the broken row fails.
    assert set(failures["index"].dropna()) <= {0}


@pytest.mark.parametrize("column", ["send_id", "message_id", "lead_id"])
def test_schema_rejects_duplicate_ids(good_messages: pd.DataFrame, column: str) -> None:
    broken = good_messages.copy()
    broken.loc[1, column] = broken.loc[0, column]
    failures = message_failures(broken, example_spec())
    assert "field_uniqueness" in set(failures.check) and set(failures.column) == {column}


def test_schema_on_empty_frame_and_missing_column(good_messages: pd.DataFrame) -> None:
    assert message_failures(pd.DataFrame(), example_spec()).empty
    assert not message_failures(good_messages.drop(columns=["to_email"]), example_spec()).empty
    assert set(message_schema(example_spec()).columns) >= {"message_id", "send_id", "lead_id", "to_email", "subject", "body"}


@pytest.mark.parametrize(("token_budget", "re_asks"), [(0, 0), (1, 1)])
def test_the_repair_token_budget_stops_re_asking_and_quarantines_with_the_reason(token_budget: int, re_asks: int) -> None:
    spec = spec_with(repairs=2)
    spec = spec.model_copy(update={"drafting": spec.drafting.model_copy(update={"max_repair_tokens": token_budget})})
    gw = gateway(registry(cheap=1.0, premium=1.0))
    work = work_frame(spec, make_leads(6, spec), _plan())
    candidates, _ = draft_candidates(gw, spec, work)
    out = run_gates(gw, spec, work, candidates)
    assert not out.messages or all(m["model"] for m in out.messages)
    budget_stops = [q for q in out.quarantine if "repair_budget_spent" in q["reason_codes"]]
    assert budget_stops, "with every draft defective some lead must hit the token budget"
    for q in budget_stops:
        assert q["attempts"] == re_asks
        assert f"of {token_budget} tokens" in q["reason"]
        assert len([d for d in out.drafts if d["lead_id"] == q["lead_id"]]) == re_asks
    # Every lead still ends messaged or quarantined: the budget stops re-asks, it loses no lead.
    done = {m["lead_id"] for m in out.messages} | {q["lead_id"] for q in out.quarantine}
    assert done == set(work.lead_id)


@pytest.mark.parametrize("leads_per_batch", [1, 7])
def test_a_day_gated_in_batches_gets_the_verdicts_of_one_batch(leads_per_batch: int) -> None:
    """The first round reads candidates a batch of leads at a time, repairs go out in batches: the same calls,
    verdicts, messages and quarantines as one batch (tests/test_consistency.py: with colleagues' messages)."""
    whole = Run(0.8, 0.8, repairs=2)
    assert set(whole.extra_drafts.attempt) == {1, 2, 3} and not whole.quarantine.empty  # repairs, escalations, quarantines
    gw = gateway(registry(0.8, 0.8), run_id="run-1")
    candidates, _ = draft_candidates(gw, whole.spec, whole.work)  # the same calls before the gate's: the same call ids
    batched = run_gates(gw, whole.spec, whole.work, candidates, leads_per_batch=leads_per_batch)
    for name, frame in batched.frames().items():
        expected = {"drafts": whole.extra_drafts, "gate_results": whole.results}.get(name)
        expected = {"messages": whole.messages, "messages_quarantine": whole.quarantine}.get(name, expected)
        pd.testing.assert_frame_equal(frame, expected)
    assert (batched.deferred, batched.postponed) == (whole.out.deferred, whole.out.postponed)
