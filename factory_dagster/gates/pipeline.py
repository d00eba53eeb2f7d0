"""The gate between drafting and sending: check, pick, repair, escalate, or quarantine.

For each lead: score every candidate by the rules, by consistency with what its company
already got (`gates.consistency`) and by agreement with the other candidates; the best
passing one becomes the message. Leads are settled one after another in work order, so each
message is checked against the ones accepted before it today. Leads with no passing draft go
through rounds together (so remote calls run concurrently): re-asked with their violations
(up to `max_repair_attempts` rounds), then drafted by the escalation model, both shown what
the company was already told when that was the problem; a lead still failing is quarantined
with the reasons. A lead the budget cannot cover is deferred to the next day, neither sent
nor quarantined; so is a lead whose only fault left is a near-duplicate of a colleague's
message today (tomorrow it is not). Every attempt is a draft row, a gate result and a
ledger row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import LEADS_PER_BATCH, draft_brief, draft_request, draft_row
from factory_dagster.gates import consistency
from factory_dagster.gates.consistency import ConsistencyGate
from factory_dagster.gates.rules import Violation, agreement, check_draft, key_facts
from factory_dagster.models.gateway import DEFERRED, ModelGateway
from factory_dagster.models.prompts import COLLEAGUE_TAG

REPAIR_PROMPT_VERSION = "repair-v3"


def send_id_for(campaign_id: str, lead_id: str) -> str:
    """One first-touch send per lead and campaign: the id that makes re-sending impossible."""
    return "snd_" + hashlib.sha256(f"{campaign_id}|{lead_id}|first-touch".encode()).hexdigest()[:20]


class Rows:
    """Rows of one shape kept as columns, a list per field: a large day's 440,000 verdicts without a dict each
    (which took about 600 bytes a row more). Iterating gives the rows as dicts again."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}

    def __iadd__(self, rows: Iterable[dict[str, Any]]) -> Rows:
        for row in rows:
            if not self.columns:
                self.columns = {name: [] for name in row}
            for name, value in row.items():
                self.columns[name].append(value)
        return self

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = list(self.columns)
        return (dict(zip(names, values, strict=True)) for values in zip(*self.columns.values(), strict=True))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)


@dataclass
class GateOutput:
    drafts: Rows = field(default_factory=Rows)
    results: Rows = field(default_factory=Rows)
    messages: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {table: self._frame(table) for table in GATE_TABLES}

    def take(self, table: str) -> pd.DataFrame:
        """`table`'s frame, its rows let go here: a writer taking one table at a time holds one table's copy."""
        frame = self._frame(table)
        setattr(self, GATE_TABLES[table], Rows() if isinstance(getattr(self, GATE_TABLES[table]), Rows) else [])
        return frame

    def _frame(self, table: str) -> pd.DataFrame:
        rows = getattr(self, GATE_TABLES[table])
        return rows.frame() if isinstance(rows, Rows) else pd.DataFrame(rows)


# The `raw` table of each of GateOutput's row lists.
GATE_TABLES = {"drafts": "drafts", "gate_results": "results", "messages": "messages", "messages_quarantine": "quarantine"}


def _evaluate(drafts: list[dict[str, Any]], lead: Any, spec: CampaignSpec, history: ConsistencyGate) -> list[dict[str, Any]]:
    angle = spec.angle(lead.angle)
    lead_fields = {f: getattr(lead, f, None) for f in ("first_name", "last_name", "company", "role", "industry", "note")}
    scores = agreement([key_facts(d["subject"], d["body"]) for d in drafts])
    results = []
    for d, score in zip(drafts, scores, strict=True):
        violations = (
            [Violation("parse_error", d["parse_error"])]
            if d["parse_error"]
            else check_draft(d["subject"], d["body"], lead_fields, spec, angle)
            + history.violations(lead, d["subject"], d["body"])
        )
        results.append(
            {
                "draft_id": d["draft_id"],
                "lead_id": d["lead_id"],
                "arm_id": d["arm_id"],
                "attempt": d["attempt"],
                "model": d["model"],
                "prompt_version": d["prompt_version"],
                "passed": not violations,
                "violation_codes": [v.code for v in violations],
                "violation_details": [v.detail for v in violations],
                "agreement": score,
                "selected": False,
            }
        )
    return results


def _settle(
    lead: Any,
    drafts: list[dict[str, Any]],
    gateway: ModelGateway,
    spec: CampaignSpec,
    history: ConsistencyGate,
    out: GateOutput,
) -> list[dict[str, Any]] | None:
    """Record one round's drafts of a lead; the message if one passes, else the results to repair from."""
    results = _evaluate(drafts, lead, spec, history)
    passing = [(r, d) for r, d in zip(results, drafts, strict=True) if r["passed"]]
    best = None
    if passing:
        best_result, best = max(passing, key=lambda pair: (pair[0]["agreement"], -pair[1]["candidate_index"]))
        best_result["selected"] = True
    out.results += results  # after the selection: `Rows` copies the values
    if best is None:
        return results
    out.messages.append(_message(gateway, lead, best))
    history.accept(lead, best["subject"], best["body"])
    return None


class _Failing(NamedTuple):
    """What the next round needs of a failing lead's last one: not its drafts and verdicts (a large day has tens of
    thousands of failing leads, and their candidates and verdicts held hundreds of megabytes)."""

    lead: Any
    draft_to_fix: dict[str, Any]
    inconsistent: bool  # a consistency rule is among what went wrong
    codes: list[str]  # the drafts' distinct violation codes, sorted
    details: tuple[str, ...]  # their distinct violation details, in order


def _failing(lead: Any, results: list[dict[str, Any]], drafts: list[dict[str, Any]]) -> _Failing:
    return _Failing(
        lead,
        _draft_to_fix(results, drafts),
        any(set(r["violation_codes"]) & consistency.CODES for r in results),
        sorted({c for r in results for c in r["violation_codes"]}),
        tuple(dict.fromkeys(d for r in results for d in r["violation_details"])),
    )


def _context(failing: _Failing, history: ConsistencyGate, as_of: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The colleague-messages block, when a consistency rule is among what went wrong (as of the round's start)."""
    if not failing.inconsistent:
        return {}
    reference = history.reference(failing.lead, as_of)
    return {COLLEAGUE_TAG: reference} if reference else {}


def _draft_to_fix(results: list[dict[str, Any]], drafts: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate closest to passing (a parsed one before an unparseable one) and what was wrong.

    It goes to the repair model as a delimited data block, not inside the brief: the draft may
    carry text planted in the lead's fields, which must never become instructions.
    """
    closest, closest_draft = min(
        zip(results, drafts, strict=True),
        key=lambda pair: (pair[1]["parse_error"] is not None, len(pair[0]["violation_codes"])),
    )
    return {
        "subject": closest_draft["subject"],
        "body": closest_draft["body"],
        "violations": closest["violation_details"],
    }


def _candidates_by_lead(drafts: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each lead's candidate drafts in candidate order, from one pass over the frame (not one frame per lead)."""
    by_lead: dict[str, list[dict[str, Any]]] = {}
    for row in drafts.sort_values(["lead_id", "candidate_index"]).to_dict("records"):
        by_lead.setdefault(row["lead_id"], []).append(row)
    return by_lead


# The candidate drafts (attempt 0) of the given leads, e.g. read from the warehouse.
CandidateReader = Callable[[list[str]], pd.DataFrame]


def _frame_reader(drafts: pd.DataFrame) -> CandidateReader:
    return lambda lead_ids: drafts[drafts.lead_id.isin(lead_ids)]


def run_gates(
    gateway: ModelGateway,
    spec: CampaignSpec,
    work: pd.DataFrame,
    drafts: pd.DataFrame | CandidateReader,
    history: ConsistencyGate | None = None,
    after_calls: Callable[[ModelGateway], None] | None = None,
    leads_per_batch: int = LEADS_PER_BATCH,
) -> GateOutput:
    """Gate every lead of `work` given its candidate drafts (a frame, or a reader of some leads' drafts), in rounds
    of repair and escalation.

    `history` holds what the leads' companies were already told (none: a first day). `after_calls` runs after
    each batch of calls (the stage writes the gateway's ledger there, so a large day's calls are not all held).
    The first round reads the candidates `leads_per_batch` leads at a time and keeps only the failing leads': a
    large day's 300,000 candidates are never all in memory. Leads are still settled one after another in work
    order, so the batch size changes no verdict.
    """
    history = ConsistencyGate(spec, gateway.run.partition_day) if history is None else history
    read = _frame_reader(drafts) if isinstance(drafts, pd.DataFrame) else drafts
    out = GateOutput()
    failing: dict[str, _Failing] = {}
    for start in range(0, len(work), leads_per_batch):
        batch = list(work.iloc[start : start + leads_per_batch].itertuples())
        by_lead = _candidates_by_lead(read([lead.lead_id for lead in batch]))
        for lead in batch:
            candidates = by_lead.get(lead.lead_id)
            if not candidates:
                out.deferred.append(lead.lead_id)  # drafting deferred it (budget): it waits for another day
                continue
            results = _settle(lead, candidates, gateway, spec, history, out)
            if results is not None:
                failing[lead.lead_id] = _failing(lead, results, candidates)
    last_attempt = spec.drafting.max_repair_attempts + 1
    repair_tokens: dict[str, int] = {}
    attempts: dict[str, int] = {}
    over_budget: dict[str, _Failing] = {}
    for attempt in range(1, last_attempt + 1):
        # A lead whose re-asks have used up its token budget is not asked again.
        for lead_id in [i for i in failing if repair_tokens.get(i, 0) >= spec.drafting.max_repair_tokens]:
            over_budget[lead_id] = failing.pop(lead_id)
        if not failing:
            break
        round_leads = list(failing.values())
        # Every request of a round shows what the companies were told when the round began; the round goes to the
        # gateway in batches, so that a large day's prompts are not all in memory at once.
        as_of = history.mark()
        for start in range(0, len(round_leads), leads_per_batch):
            leads = round_leads[start : start + leads_per_batch]
            if attempt < last_attempt:
                requests = [
                    draft_request(
                        "repair",
                        REPAIR_PROMPT_VERSION,
                        {**_brief(spec, f.lead), "task": "repair"},
                        f.lead,
                        attempt,
                        0,
                        data={"draft_to_fix": f.draft_to_fix, **_context(f, history, as_of)},
                    )
                    for f in leads
                ]
            else:
                requests = [
                    draft_request(
                        "escalate",
                        f.lead.prompt_version,
                        _brief(spec, f.lead),
                        f.lead,
                        attempt,
                        0,
                        data=_context(f, history, as_of) or None,
                    )
                    for f in leads
                ]
            answers = gateway.complete_many(requests)
            if after_calls is not None:
                after_calls(gateway)
            for lead, request, answer in zip((f.lead for f in leads), requests, answers, strict=True):
                if answer.status == DEFERRED:
                    out.deferred.append(lead.lead_id)
                    del failing[lead.lead_id]
                    continue
                repair_tokens[lead.lead_id] = repair_tokens.get(lead.lead_id, 0) + answer.tokens
                attempts[lead.lead_id] = attempt
                drafts_now = [draft_row(gateway, lead, request, answer, attempt, 0)]
                out.drafts += drafts_now
                results = _settle(lead, drafts_now, gateway, spec, history, out)
                if results is None:
                    del failing[lead.lead_id]
                else:
                    failing[lead.lead_id] = _failing(lead, results, drafts_now)
    for lead_id, (lead, _, _, codes, details) in [*failing.items(), *over_budget.items()]:
        if codes == [consistency.NEAR_DUPLICATE]:
            out.postponed.append(lead_id)  # tomorrow no colleague's message goes out with it
            continue
        reason = "; ".join(details)
        if lead_id in over_budget:
            codes = ["repair_budget_spent", *codes]
            reason = f"re-asks used {repair_tokens.get(lead_id, 0)} of {spec.drafting.max_repair_tokens} tokens; " + reason
        out.quarantine.append(
            {
                "lead_id": lead.lead_id,
                "arm_id": lead.arm_id,
                "attempts": attempts.get(lead_id, 0),
                "reason_codes": codes,
                "reason": reason,
            }
        )
    return out


def _brief(spec: CampaignSpec, lead: Any) -> dict[str, Any]:
    """The lead's drafting brief, made when a repair or an escalation needs it (not kept for every lead of a day)."""
    return draft_brief(spec, lead.angle, lead.hook, list(lead.claims), lead.prompt_version)


def _message(gateway: ModelGateway, lead: Any, draft: dict[str, Any]) -> dict[str, Any]:
    campaign_id = gateway.run.campaign_id
    return {
        "message_id": "msg_"
        + hashlib.sha256(f"{campaign_id}|{lead.lead_id}|{gateway.run.partition_day}".encode()).hexdigest()[:20],
        "send_id": send_id_for(campaign_id, lead.lead_id),
        "lead_id": lead.lead_id,
        "to_email": lead.email,
        "arm_id": lead.arm_id,
        "angle": lead.angle,
        "prompt_version": draft["prompt_version"],
        "model": draft["model"],
        "draft_id": draft["draft_id"],
        "subject": draft["subject"],
        "body": draft["body"],
    }
