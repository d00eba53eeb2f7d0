"""Consistency with earlier output: no near-duplicates to one company on one day, no contradicting what was sent."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from helpers_db import LEADS, Lead, add_leads, add_message, add_send
from helpers_logic import DAY, example_spec, gateway, offline_plan, registry, work_frame

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import draft_id
from factory_dagster.gates.consistency import (
    CONTRADICTS_EARLIER,
    NEAR_DUPLICATE,
    ConsistencyGate,
    SentMessage,
    company_key,
    email_domain,
    load_earlier,
    message_for,
    stored_inconsistencies,
)
from factory_dagster.gates.pipeline import run_gates
from factory_dagster.models.prompts import COLLEAGUE_TAG, parse_tagged_json
from factory_dagster.warehouse.store import connect

SPEC = example_spec()
YESTERDAY = DAY - dt.timedelta(days=1)
CLAIM = "Teams using Brightwave close the month up to 4 days faster."


def lead(lead_id: str, first: str, company: str = "Northwind Labs AB", domain: str = "northwind-labs.example") -> Any:
    return SimpleNamespace(
        lead_id=lead_id, email=f"{first.lower()}@{domain}", company=company, first_name=first, last_name="Berg"
    )


def body(first: str, company: str, opener: str | None = None, claim: str = CLAIM) -> str:
    opener = opener or f"Month-end at {company} probably still means late nights for the finance team."
    return (
        f"Hi {first},\n\n{opener} Many finance teams we speak with rank close speed above any new dashboard. "
        f"{claim} Reconciliations run automatically every night.\n\n{SPEC.required.call_to_action}\n\n"
        f"Best,\n{SPEC.sender.name}\n{SPEC.sender.company}\n\n{SPEC.required.unsubscribe_footer}\n{SPEC.sender.postal_address}"
    )


def sent(
    who: Any, text: str, day: dt.date = DAY, sent_day: dt.date | None = None, subject: str = "A calmer close"
) -> SentMessage:
    return message_for(who, subject, text, day, sent_day)


def codes(gate: ConsistencyGate, who: Any, text: str, subject: str = "A calmer close") -> list[str]:
    return [v.code for v in gate.violations(who, subject, text)]


ANNA, BEN = lead("l-anna", "Anna"), lead("l-ben", "Ben")


# -- who counts as the same company --------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ACME Ltd", "Acme Limited"),
        ("Müller & Söhne GmbH", "müller and söhne"),
        ("Fabrikam Inc.", "FABRIKAM"),
        ("Gracht Logistics B.V.", "Gracht Logistics BV"),
        ("Fjord Retail A/S", "Fjord Retail"),
    ],
)
def test_company_names_match_whatever_their_spelling(a: str, b: str) -> None:
    assert company_key(a) == company_key(b)


def test_different_companies_and_free_mail_do_not_match() -> None:
    assert company_key("Northwind Labs") != company_key("Northwind Capital")
    assert company_key("Co") == "co"  # a name made only of a suffix keeps it
    assert email_domain("anna@gmail.com") is None and email_domain("Anna@Northwind.Example") == "northwind.example"
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company))])
    stranger = lead("l-x", "Ben", company="Tallyfield Ltd", domain="gmail.com")
    also_gmail = SimpleNamespace(**{**ANNA.__dict__, "lead_id": "l-y", "email": "anna.b@gmail.com", "company": "Cedarpay"})
    assert codes(gate, stranger, body("Ben", stranger.company)) == []
    assert (
        codes(ConsistencyGate(SPEC, DAY, [sent(also_gmail, body("Anna", "Cedarpay"))]), stranger, body("Ben", "Cedarpay")) == []
    )


def test_same_domain_is_the_same_company_even_under_another_name() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company))])
    ben = lead("l-ben", "Ben", company="Northwind")  # the CRM spelled it differently
    assert codes(gate, ben, body("Ben", "Northwind")) == [NEAR_DUPLICATE]


# -- near-duplicates ------------------------------------------------------------------------------


def test_names_swapped_is_a_near_duplicate_and_says_how_close() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company))])
    [violation] = gate.violations(BEN, "Another subject", body("Ben", BEN.company))
    assert violation.code == NEAR_DUPLICATE
    assert "100%" in violation.detail and "l-anna" in violation.detail and "80%" in violation.detail


def test_own_wording_counts_not_the_spec_boilerplate() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company))])
    other = "For the finance team at Northwind Labs AB, the last days of the month are probably still the longest."
    assert codes(gate, BEN, body("Ben", BEN.company, opener=other)) == []
    # Everything but the fixed texts rewritten: nothing in common although a third of the text is the same.
    rewritten = (
        f"Hi Ben,\n\nQuick one about reporting at Northwind Labs AB. Our ledger links approvals to evidence.\n\n"
        f"{SPEC.required.call_to_action}\n\nBest,\n{SPEC.sender.name}\n{SPEC.sender.company}\n\n"
        f"{SPEC.required.unsubscribe_footer}\n{SPEC.sender.postal_address}"
    )
    assert codes(gate, BEN, rewritten) == []


def test_only_messages_going_out_the_same_day_count_as_near_duplicates() -> None:
    text = body("Anna", ANNA.company)
    sent_yesterday = ConsistencyGate(SPEC, DAY, [sent(ANNA, text, day=YESTERDAY, sent_day=YESTERDAY)])
    waiting_in_outbox = ConsistencyGate(SPEC, DAY, [sent(ANNA, text, day=YESTERDAY, sent_day=None)])
    sent_today = ConsistencyGate(SPEC, DAY, [sent(ANNA, text, day=YESTERDAY, sent_day=DAY)])
    assert codes(sent_yesterday, BEN, body("Ben", BEN.company)) == []
    assert codes(waiting_in_outbox, BEN, body("Ben", BEN.company)) == [NEAR_DUPLICATE]
    assert codes(sent_today, BEN, body("Ben", BEN.company)) == [NEAR_DUPLICATE]


def test_accepted_messages_join_the_history_and_the_limit_is_the_specs() -> None:
    gate = ConsistencyGate(SPEC, DAY)
    assert codes(gate, BEN, body("Ben", BEN.company)) == []
    gate.accept(ANNA, "A calmer close", body("Anna", ANNA.company))
    assert codes(gate, BEN, body("Ben", BEN.company)) == [NEAR_DUPLICATE]
    off = SPEC.model_copy(update={"consistency": SPEC.consistency.model_copy(update={"max_similarity": 1.0})})
    gate = ConsistencyGate(off, DAY, [sent(ANNA, body("Anna", ANNA.company))])
    assert codes(gate, BEN, body("Ben", BEN.company)) == []


# -- contradictions -------------------------------------------------------------------------------


def test_the_same_claim_with_other_figures_contradicts_what_was_sent() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company), day=YESTERDAY, sent_day=YESTERDAY)])
    edited = CLAIM.replace("4 days", "3 days")
    [violation] = gate.violations(BEN, "A calmer close", body("Ben", BEN.company, claim=edited))
    assert violation.code == CONTRADICTS_EARLIER
    assert "3 days faster" in violation.detail and "4 days faster" in violation.detail
    assert str(YESTERDAY) in violation.detail and "a colleague at Northwind Labs AB" in violation.detail
    # Another unit is another figure, too.
    weeks = CLAIM.replace("4 days", "4 weeks")
    assert codes(gate, BEN, body("Ben", BEN.company, claim=weeks)) == [CONTRADICTS_EARLIER]


def test_other_claims_and_the_same_figures_reworded_are_consistent() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company), day=YESTERDAY, sent_day=YESTERDAY)])
    assert codes(gate, BEN, body("Ben", BEN.company, claim="Most teams are set up within 2 weeks.")) == []
    reworded = "With Brightwave, teams close the month up to 4 days faster."
    assert codes(gate, BEN, body("Ben", BEN.company, claim=reworded)) == []
    # The spec's own texts carry figures ("20-minute call", the postal address): they never contradict.
    cta = SPEC.required.call_to_action
    gate = ConsistencyGate(
        SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company).replace(cta, cta.replace("20", "30")), YESTERDAY, YESTERDAY)]
    )
    assert codes(gate, BEN, body("Ben", BEN.company)) == []


def test_a_contradiction_with_what_the_same_person_got_in_another_campaign() -> None:
    anna_again = SimpleNamespace(**{**ANNA.__dict__, "lead_id": "l-anna-other-campaign"})
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company), day=YESTERDAY, sent_day=YESTERDAY)])
    [violation] = gate.violations(anna_again, "A calmer close", body("Anna", ANNA.company, claim=CLAIM.replace("4", "6")))
    assert violation.code == CONTRADICTS_EARLIER and "to this person" in violation.detail


def test_the_reference_block_shows_what_was_sent_without_the_colleagues_name() -> None:
    gate = ConsistencyGate(SPEC, DAY, [sent(ANNA, body("Anna", ANNA.company), day=YESTERDAY, sent_day=YESTERDAY)])
    [shown] = gate.reference(BEN)["messages"]
    assert shown["day"] == str(YESTERDAY) and CLAIM in shown["text"]
    assert "Anna" not in shown["text"] and "Berg" not in shown["text"] and "Hi (name)," in shown["text"]
    assert gate.reference(lead("l-z", "Zoe", company="Cedarpay", domain="cedarpay.example")) is None


# -- in the gate pipeline -------------------------------------------------------------------------


def _colleagues(n: int, spec: CampaignSpec = SPEC) -> pd.DataFrame:
    """n people at one company, all on the same arm (same angle, prompt version and segment)."""
    people = [
        {
            "lead_id": f"lead_c{i}",
            "email": f"p{i}@northwind-labs.example",
            "first_name": name,
            "last_name": "Berg",
            "company": "Northwind Labs AB",
            "role": "Finance Director",
            "industry": "Software",
            "seniority": "Director",
            "company_size": 250,
            "region": "Nordics",
            "note": "",
        }
        for i, name in enumerate(["Anna", "Ben", "Carla", "Dario", "Emil"][:n])
    ]
    for p in people:
        p["segment"] = spec.segment_for(p)
    work = work_frame(spec, people, offline_plan(spec))
    first = work.iloc[0]
    return work.assign(angle=first.angle, prompt_version=first.prompt_version, arm_id=first.arm_id)


def _copies(work: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """One candidate per lead: `texts[i]` addressed to lead i (a cheap model that wrote the same email for all)."""
    rows = []
    for row, text in zip(work.itertuples(), texts, strict=True):
        rows.append(
            {
                "draft_id": draft_id(SPEC.campaign_id, DAY, row.lead_id, 0, 0),
                "lead_id": row.lead_id,
                "arm_id": row.arm_id,
                "candidate_index": 0,
                "attempt": 0,
                "model": "offline-cheap",
                "prompt_version": row.prompt_version,
                "llm_call_id": f"call-{row.lead_id}",
                "subject": f"{row.company}'s month-end close",
                "body": text.replace("Anna", row.first_name),
                "parse_error": None,
            }
        )
    return pd.DataFrame(rows)


class Recording:
    """The real gateway, keeping the requests it was sent (to see what each repair was shown)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.requests = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def complete_many(self, requests: list[Any]) -> list[Any]:
        self.requests += requests
        return self.inner.complete_many(requests)


def _opener(text: str) -> str:
    return text.split("\n\n")[1].split(". ")[0].split("? ")[0]


def test_a_copy_for_a_colleague_is_repaired_with_the_colleagues_message_shown() -> None:
    work = _colleagues(2)
    template = body("Anna", "Northwind Labs AB")
    gw = Recording(gateway(registry(cheap=0.0, premium=0.0)))
    out = run_gates(gw, SPEC, work, _copies(work, [template, template]))
    assert [m["lead_id"] for m in out.messages] == ["lead_c0", "lead_c1"] and out.quarantine == [] and out.postponed == []
    ben = [r for r in out.results if r["lead_id"] == "lead_c1"]
    assert NEAR_DUPLICATE in ben[0]["violation_codes"] and ben[-1]["passed"] and ben[-1]["attempt"] == 1
    [repair] = gw.requests
    shown = parse_tagged_json(repair.messages[-1]["content"], COLLEAGUE_TAG)
    assert repair.stage == "repair" and "Anna" not in shown["messages"][0]["text"]
    anna, ben_message = out.messages
    assert _opener(anna["body"]) != _opener(ben_message["body"])


def test_a_lead_that_cannot_be_worded_apart_waits_for_tomorrow() -> None:
    """Four colleagues on one arm, three ways to open: the fourth's every attempt repeats one of the others."""
    work = _colleagues(4)
    company = "Northwind Labs AB"
    openers = [
        f"Month-end at {company} probably still means late nights for the finance team.",
        f"For the finance team at {company}, the last days of the month are probably still the longest.",
        f"Closing the books at {company} likely still takes over the first week of every month.",
    ]
    texts = [body("Anna", company, opener=o) for o in openers] + [body("Anna", company, opener=openers[0])]
    out = run_gates(gateway(registry(cheap=0.0, premium=0.0)), SPEC, work, _copies(work, texts))
    assert sorted(m["lead_id"] for m in out.messages) == ["lead_c0", "lead_c1", "lead_c2"]
    assert out.postponed == ["lead_c3"] and out.quarantine == []
    attempts = [r for r in out.results if r["lead_id"] == "lead_c3"]
    assert [r["attempt"] for r in attempts] == [0, 1, 2]  # re-asked, escalated, then postponed
    assert all(r["violation_codes"] == [NEAR_DUPLICATE] for r in attempts)


def test_a_contradicted_claim_is_left_out_on_repair() -> None:
    """The spec's claim was edited after a colleague was told otherwise: the repair drops the claim."""
    work = _colleagues(1)
    told = body("Ben", "Northwind Labs AB", claim=CLAIM.replace("4 days", "5 days"))
    ben = lead("l-ben-earlier", "Ben")
    history = ConsistencyGate(SPEC, DAY, [sent(ben, told, day=YESTERDAY, sent_day=YESTERDAY)])
    gw = gateway(registry(cheap=0.0, premium=0.0))
    work = work.assign(claims=[[CLAIM, "Reconciliations run automatically every night."]])
    out = run_gates(gw, SPEC, work, _copies(work, [body("Anna", "Northwind Labs AB")]), history)
    [message] = out.messages
    first, repaired = [r for r in out.results if r["lead_id"] == "lead_c0"]
    assert first["violation_codes"] == [CONTRADICTS_EARLIER] and repaired["passed"]
    assert "4 days" not in message["body"] and "5 days" not in message["body"]


# -- over the warehouse ---------------------------------------------------------------------------


def _colleague_of(base: Lead, email: str, first: str) -> Lead:
    return Lead(
        email, first, base.last_name, base.company, base.industry, base.company_size, base.role, base.seniority, base.region
    )


def test_load_earlier_reads_what_was_sent_and_leaves_out_what_is_rewritten(tmp_path, engine_url) -> None:
    anna = LEADS[0]
    ben, carla, dora, emil = (
        _colleague_of(anna, f"{n.lower()}@northwind-labs.example", n) for n in ("Ben", "Carla", "Dora", "Emil")
    )
    stranger = LEADS[1]
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as con:
        add_leads(con, [anna, stranger], YESTERDAY)
        add_leads(con, [ben, carla, dora], DAY)
        add_leads(con, [emil], DAY, campaign_id="harbour-payroll")  # a lead of another campaign
        add_send(con, add_message(con, anna, YESTERDAY), YESTERDAY)  # sent yesterday: history
        add_message(con, stranger, YESTERDAY)  # another company: not read
        add_send(con, add_message(con, ben, DAY), DAY)  # today's, already sent (a re-run): history
        add_message(con, carla, DAY)  # today's, unsent: the gate rewrites it, not history
        add_message(con, dora, DAY + dt.timedelta(days=1))  # a later day: not read by a backfill of DAY
        add_message(con, emil, DAY, campaign_id="harbour-payroll")  # another campaign's, today: history
        work = pd.DataFrame([{"lead_id": "new", "email": "new@northwind-labs.example", "company": "Northwind Labs"}])
        gate = load_earlier(con, SPEC, DAY, work)
        seen = {m["text"].split(",")[0] for m in gate.reference(SimpleNamespace(**work.iloc[0].to_dict()))["messages"]}
        assert seen == {"Northwind Labs AB: closing the month in fewer days\nHi (name)"}  # names redacted
        assert len(gate.reference(SimpleNamespace(**work.iloc[0].to_dict()))["messages"]) == 3  # anna, ben, emil
        nothing = SPEC.model_copy(update={"consistency": SPEC.consistency.model_copy(update={"lookback_days": 0})})
        assert len(load_earlier(con, nothing, DAY, work).reference(SimpleNamespace(**work.iloc[0].to_dict()))["messages"]) == 2


def test_the_stored_messages_check_finds_a_duplicate_pair(tmp_path, engine_url) -> None:
    anna = LEADS[0]
    ben = _colleague_of(anna, "ben@northwind-labs.example", "Ben")
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as con:
        add_leads(con, [anna, ben, LEADS[1]], DAY)
        for person in (anna, LEADS[1]):
            add_message(con, person, DAY)
        assert stored_inconsistencies(con, SPEC, DAY).empty
        add_message(con, ben, DAY)  # the same text as Anna's with the names swapped
        findings = stored_inconsistencies(con, SPEC, DAY)
        assert findings.code.tolist() == [NEAR_DUPLICATE]


@pytest.mark.parametrize("leads_per_batch", [1, 3])
def test_colleagues_gated_in_batches_get_the_verdicts_of_one_batch(leads_per_batch: int) -> None:
    """Each colleague is checked against the messages accepted before it, whichever batch of leads it came in."""
    work = _colleagues(4)
    company = "Northwind Labs AB"
    texts = [body("Anna", company), body("Anna", company, claim=CLAIM.replace("4 days", "5 days"))] * 2
    whole = run_gates(gateway(registry(cheap=0.0, premium=0.0)), SPEC, work, _copies(work, texts))
    codes = {code for r in whole.results for code in r["violation_codes"]}
    assert {NEAR_DUPLICATE, CONTRADICTS_EARLIER} <= codes and whole.drafts  # both rules fired, repairs went out
    batched = run_gates(
        gateway(registry(cheap=0.0, premium=0.0)), SPEC, work, _copies(work, texts), leads_per_batch=leads_per_batch
    )
    for name, frame in batched.frames().items():
        pd.testing.assert_frame_equal(frame, whole.frames()[name])
    assert (batched.deferred, batched.postponed) == (whole.deferred, whole.postponed)
