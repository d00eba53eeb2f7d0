"""Consistency with earlier output: near-duplicates between colleagues, contradictions with what was sent.

Part of the `gates` benchmark (its `consistency` figures). Colleagues are the people of the
benchmark's leads who share a company (same normalised name or e-mail domain); every message
is a clean rendering of the offline cheap model, so only consistency is at stake.

1. Near-duplicates: for every colleague of a company's first person, a message on the first
   person's arm, drafted with its own random state. Ground truth: a copy when its body, with
   the two people's names taken out, equals the first person's; otherwise the model worded it
   differently (another opener). Copies must be flagged, the others must not.
2. Contradictions: the first person was sent a message yesterday; the colleague's message
   today states a claim of the same angle with an edited figure (another number, another
   unit), as after an edit of the spec. Each must be flagged. Controls: the colleague's
   message under the unedited claims, on the same angle and on every other angle, must not be.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import draft_brief, lead_payload
from factory_dagster.gates.consistency import (
    CONTRADICTS_EARLIER,
    NEAR_DUPLICATE,
    ConsistencyGate,
    message_for,
    recipient_keys,
)
from factory_dagster.models import offline

_FIGURE = re.compile(r"\d+")
_UNITS = {"days": "weeks", "weeks": "days", "day": "week", "week": "day", "hours": "days", "%": " points"}


def _edits(claim: str) -> list[tuple[str, str]]:
    """(kind, edited claim) for a claim with a figure: the number one up, one down, and the unit swapped."""
    match = _FIGURE.search(claim)
    if match is None:
        return []
    number = int(match.group(0))
    start, end = match.span()
    edits = [("number_up", f"{claim[:start]}{number + 1}{claim[end:]}")]
    if number > 1:
        edits.append(("number_down", f"{claim[:start]}{number - 1}{claim[end:]}"))
    unit = re.match(r"\s*(%|[a-z]+)", claim[end:])
    if unit and unit.group(1) in _UNITS:
        edits.append(("unit", f"{claim[:end]}{claim[end:].replace(unit.group(1), _UNITS[unit.group(1)], 1)}"))
    return edits


def _own(body: str, *names: str) -> str:
    for name in names:
        body = body.replace(name, "")
    return body


def _render(spec: CampaignSpec, person: Any, arm: Any, seed: str, claims: list[str] | None = None) -> dict[str, str]:
    brief = draft_brief(spec, arm.angle, arm.hook, claims if claims is not None else list(arm.claims), arm.prompt_version)
    return offline._draft(brief, lead_payload(person), random.Random(seed), None)


def _teams(work: pd.DataFrame) -> list[list[Any]]:
    """The benchmark's people grouped by company (2+ people each), first come first."""
    by_key: dict[frozenset[str], list[Any]] = {}
    for person in work.itertuples():
        keys = frozenset(k for k in recipient_keys(person.company, person.email) if not k.startswith("email:"))
        by_key.setdefault(keys, []).append(person)
    return [team for team in by_key.values() if len(team) > 1]


def run(spec: CampaignSpec, work: pd.DataFrame, plan: pd.DataFrame, day: Any) -> dict[str, Any]:
    started = time.perf_counter()
    teams = _teams(work)
    planned = {(r.segment, r.angle): r for r in plan.itertuples()}
    near: Counter = Counter()
    contradiction: Counter = Counter()
    missed: list[dict[str, str]] = []
    yesterday = day - timedelta(days=1)
    for t, team in enumerate(teams):
        first = team[0]
        first_draft = _render(spec, first, first, f"first|{t}")
        today = ConsistencyGate(spec, day, [message_for(first, first_draft["subject"], first_draft["body"], day)])
        sent = message_for(first, first_draft["subject"], first_draft["body"], yesterday, yesterday)
        sent_before = ConsistencyGate(spec, day, [sent])
        for k, colleague in enumerate(team[1:]):
            # The colleague on the first person's arm (angle and prompt version), with its own segment's hook.
            own_plan = planned[(colleague.segment, first.angle)]
            arm = first._replace(hook=own_plan.hook, claims=own_plan.claims)
            draft = _render(spec, colleague, arm, f"colleague|{t}|{k}")
            copy = _own(draft["body"], colleague.first_name, colleague.company) == _own(
                first_draft["body"], first.first_name, first.company
            )
            flagged = NEAR_DUPLICATE in [v.code for v in today.violations(colleague, draft["subject"], draft["body"])]
            near["copies" if copy else "distinct"] += 1
            near["copies_flagged" if copy else "distinct_flagged"] += flagged
            # Contradictions: the same angle's claims with an edited figure, against what was sent yesterday.
            for i, claim in enumerate(arm.claims):
                for kind, edited in _edits(claim):
                    claims = [*arm.claims[:i], edited, *arm.claims[i + 1 :]]
                    edited_draft = _render(spec, colleague, arm, f"edited|{t}|{k}|{i}|{kind}", claims)
                    found = CONTRADICTS_EARLIER in [
                        v.code for v in sent_before.violations(colleague, edited_draft["subject"], edited_draft["body"])
                    ]
                    contradiction[f"edited_{kind}"] += 1
                    contradiction[f"edited_{kind}_flagged"] += found
                    if not found and len(missed) < 3:
                        missed.append({"sent": claim, "edited": edited})
            # Controls: unedited claims, on every angle the colleague's segment has.
            for angle in spec.angles:
                other = planned[(colleague.segment, angle.name)]
                arm = first._replace(angle=angle.name, hook=other.hook, claims=other.claims)
                control = _render(spec, colleague, arm, f"control|{t}|{k}")
                codes = [v.code for v in sent_before.violations(colleague, control["subject"], control["body"])]
                found = CONTRADICTS_EARLIER in codes
                contradiction["controls"] += 1
                contradiction["controls_flagged"] += found
    edited = sum(v for key, v in contradiction.items() if key.startswith("edited_") and not key.endswith("_flagged"))
    edited_flagged = sum(v for key, v in contradiction.items() if key.startswith("edited_") and key.endswith("_flagged"))
    return {
        "companies_with_colleagues": len(teams),
        "colleague_pairs": near["copies"] + near["distinct"],
        "near_duplicates": {
            "copies": near["copies"],
            "copies_flagged": near["copies_flagged"],
            "catch_rate": round(near["copies_flagged"] / near["copies"], 4) if near["copies"] else None,
            "distinct": near["distinct"],
            "distinct_flagged": near["distinct_flagged"],
            "false_flag_rate": round(near["distinct_flagged"] / near["distinct"], 4) if near["distinct"] else None,
            "max_similarity": spec.consistency.max_similarity,
        },
        "contradictions": {
            "edited": edited,
            "flagged": edited_flagged,
            "catch_rate": round(edited_flagged / edited, 4) if edited else None,
            "by_edit": {k: v for k, v in sorted(contradiction.items()) if k.startswith("edited_")},
            "controls": contradiction["controls"],
            "controls_flagged": contradiction["controls_flagged"],
            "false_flag_rate": round(contradiction["controls_flagged"] / contradiction["controls"], 4)
            if contradiction["controls"]
            else None,
            "missed_examples": missed,
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
