"""Offline models: deterministic, seeded generators behind the chat-completion interface.

No language model runs here. They read the same prompts a real model would get
(the JSON brief and the delimited lead) and build the answer from templates, so the
whole line runs and is tested without a key. The cheap one makes the mistakes cheap
models really make, at its registry `defect_rate`; the premium one rarely does.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from factory_dagster.models.prompts import parse_tagged_json

DEFECT_TYPES: tuple[str, ...] = (
    "over_length",
    "missing_cta",
    "unfilled_placeholder",
    "banned_phrase",
    "invented_number",
    "missing_unsubscribe",
    "wrong_name",
)

_OTHER_NAMES = ("Priya", "Lars", "Chiara", "Tomasz", "Aoife", "Kenji", "Fatima", "Mateo", "Ingrid", "Samuel")
_INVENTED = (
    "Customers cut their audit fees by 37% in the first year.",
    "If you sign this month we can offer a 25% discount.",
    "It is free for the first 90 days, no strings attached.",
    "See the results at https://brightwave-ledger.example/roi before Friday.",
)
_FILLER = (
    "We also connect to every major ERP and bank feed, and our onboarding team handles the mapping "
    "of your chart of accounts, the historic balances, the approval rules and the close calendar, so "
    "nobody on your side has to learn yet another tool before the next quarter end arrives."
)
_HOOKS = (
    "Many finance teams we speak with rank {topic} above any new dashboard.",
    "{Topic} is where we see the quickest wins for teams like yours.",
    "When we ask teams like yours what would help most, {topic} comes up first.",
)
_OPENERS = {
    "draft-v1": "Month-end at {company} probably still means late nights for the finance team.",
    "draft-v2": "How many days does month-end take at {company} right now?",
}
_SUBJECTS = {
    "draft-v1": ("{company}'s month-end close", "A calmer close for {company}"),
    "draft-v2": ("A question about {company}'s close", "{first_name}, how long is your close?"),
}


def estimate_tokens(text: str) -> int:
    """About four characters a token, the usual rule of thumb for English."""
    return max(1, round(len(text) / 4))


class OfflineModel:
    """One offline model: `complete` takes chat messages and returns the answer text."""

    def __init__(self, name: str, defect_rate: float) -> None:
        self.name = name
        self.defect_rate = defect_rate

    def complete(self, messages: list[dict[str, str]], seed_key: str = "") -> str:
        user = messages[-1]["content"]
        brief = parse_tagged_json(user, "brief")
        if brief is None:
            return "I could not find a brief in your message."
        rng = random.Random(hashlib.sha256(f"{self.name}|{seed_key}|{user}".encode()).hexdigest())
        task = brief.get("task")
        if task == "plan":
            return json.dumps(_plan(brief))
        if task in {"draft", "repair"}:
            lead = parse_tagged_json(user, "lead") or {}
            # A repair re-asks with the violations listed: the model then slips half as often.
            rate = self.defect_rate / 2 if task == "repair" else self.defect_rate
            defect = rng.choice(DEFECT_TYPES) if rng.random() < rate else None
            return json.dumps(_draft(brief, lead, rng, defect), ensure_ascii=False)
        return json.dumps({"error": f"unknown task {task!r}"})


def _plan(brief: dict[str, Any]) -> dict[str, Any]:
    segments = []
    for seg_index, segment in enumerate(brief["segments"]):
        angles = []
        for angle_index, angle in enumerate(brief["angles"]):
            topic = angle["name"].replace("_", " ")
            template = _HOOKS[(seg_index + angle_index) % len(_HOOKS)]
            angles.append(
                {
                    "angle": angle["name"],
                    "hook": template.format(topic=topic, Topic=topic.capitalize()),
                    "claims": list(angle["claims"]),
                }
            )
        segments.append({"segment": segment["name"], "angles": angles})
    return {"segments": segments}


def _draft(brief: dict[str, Any], lead: dict[str, Any], rng: random.Random, defect: str | None) -> dict[str, str]:
    style = brief.get("style", "draft-v1")
    first_name = lead.get("first_name", "there")
    company = lead.get("company", "your company")
    if defect == "unfilled_placeholder":
        first_name, company = rng.choice([("{first_name}", company), (first_name, "[Company]")])
    if defect == "wrong_name":
        first_name = rng.choice([n for n in _OTHER_NAMES if n != first_name])
    sender = brief["sender"]
    middle = [_OPENERS.get(style, _OPENERS["draft-v1"]).format(company=company), brief["hook"], *brief["claims"]]
    if defect == "banned_phrase" and brief.get("banned_phrases"):
        middle.append(f"Honestly, it is {rng.choice(brief['banned_phrases'])} for finance teams.")
    if defect == "invented_number":
        middle.append(rng.choice(_INVENTED))
    paragraphs = [f"Hi {first_name},", " ".join(middle)]
    if defect == "over_length":
        paragraphs += [_FILLER] * (2 + brief["max_words"] // len(_FILLER.split()))
    if defect != "missing_cta":
        paragraphs.append(brief["call_to_action"])
    paragraphs.append(f"Best,\n{sender['name']}\n{sender['company']}")
    footer = [brief["unsubscribe_footer"]] if defect != "missing_unsubscribe" else []
    paragraphs.append("\n".join([*footer, sender["postal_address"]]))
    subjects = [t.format(company=company, first_name=first_name) for t in _SUBJECTS.get(style, _SUBJECTS["draft-v1"])]
    fitting = [s for s in subjects if len(s) <= brief.get("max_subject_chars", 70)]
    # Like a model told the limit: pick among subjects that fit, else the shortest one.
    subject = rng.choice(fitting) if fitting else min(subjects, key=len)
    return {"subject": subject, "body": "\n\n".join(paragraphs)}
