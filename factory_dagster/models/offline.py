"""Offline models: deterministic, seeded generators behind the chat-completion interface.

No language model runs here. They read the same prompts a real model would get
(the JSON brief and the delimited lead) and build the answer from templates, so the
whole line runs and is tested without a key. The cheap one makes the mistakes cheap
models really make, at its registry `defect_rate`; the premium one rarely does.

They are gullible the way real models are: when a lead's note, role, company, industry or
last name carries a payload (an instruction, a link, an address, a phone number, markup),
the model follows it at its `injection_rate` — by default twice its defect rate, so 30 % of
such leads for the cheap model (defect rate 0.15) and 2 % for the premium one (0.01). It
then copies the planted sentences into the body, or writes in the language the payload
asks for. Lead fields are read the way a model reads them: through fullwidth letters and
invisible characters.

The premium one also rewrites the draft prompt when the improve stage asks (task
`improve_prompt`): it keeps the parent's guidance and the required rules, and adds what the
brief's figures point to (how the positively answered messages open and how long they are,
what the gates catch most). At its defect rate it forgets a required rule, as real models do.

Both read replies to our emails when asked to classify one (task `classify_reply`): a keyword
judgement of their own in `offline_reader.py`, quicker and more often unsure for the cheap tier.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from typing import Any

from factory_dagster.models.offline_content import CONTENT_TASKS, content_answer
from factory_dagster.models.offline_judge import judge
from factory_dagster.models.offline_reader import classify_answer
from factory_dagster.models.prompts import COLLEAGUE_TAG, DRAFT_REQUIRED_RULES, REPLY_TAG, parse_tagged_json

DEFECT_TYPES: tuple[str, ...] = (
    "over_length",
    "missing_cta",
    "unfilled_placeholder",
    "banned_phrase",
    "invented_number",
    "missing_unsubscribe",
    "wrong_name",
    "wrong_language",
)
# How much more often than it makes a mistake a model follows a payload planted in a lead's fields.
INJECTION_RATE_FACTOR = 2.0
PAYLOAD_FIELDS: tuple[str, ...] = ("note", "role", "company", "industry", "last_name")
# What makes lead text a payload to a gullible model (deliberately not the gate's own patterns).
_PAYLOAD = re.compile(
    r"\b(?:ignore|ignorier\w*|ignora\w*|disregard|forget|instead|you\s+are|you\s+must|system|assistant\s*:|"
    r"include|add|append|insert|write|say|tell|mention|offer|promise|quote|reply|respond|translate|visit|click|"
    r"escribe|schreib\w*|écrivez|ofrece)\b"
    r"|https?://|www\.|@|<\|?/?[a-z]|\[[^\]]*\]\(|\+?\d[\d ()-]{6,}\d|\*\*",
    re.IGNORECASE,
)
_LANGUAGE_REQUEST = re.compile(r"\b(?:german|deutsch|spanish|español|espanol)\b", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
# The wrong_language defect: the model answers in another language, keeping the spec's fixed texts verbatim.
_FOREIGN: dict[str, dict[str, Any]] = {
    "de": {
        "greeting": "Hallo {first_name},",
        "subjects": ("Ein ruhigerer Monatsabschluss bei {company}", "Abschluss bei {company}"),
        "middle": (
            "Der Monatsabschluss bei {company} bedeutet für das Finanzteam wahrscheinlich noch immer lange Abende. "
            "Wir automatisieren die Abstimmungen, die Abgrenzungen und die Checklisten an einem Ort, damit Ihr Team "
            "nicht mehr bis spät in die Nacht arbeiten muss und wieder pünktlich nach Hause gehen kann."
        ),
    },
    "es": {
        "greeting": "Hola {first_name},",
        "subjects": ("Un cierre de mes más tranquilo para {company}", "El cierre de {company}"),
        "middle": (
            "El cierre de mes en {company} probablemente todavía significa noches largas para el equipo de finanzas. "
            "Automatizamos las conciliaciones, las periodificaciones y las listas de cierre en un solo lugar, para que "
            "su equipo no tenga que trabajar hasta tarde y pueda volver a casa a tiempo."
        ),
    },
}

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
# Each style has a few openers, as a model at some temperature words the same idea differently.
_OPENERS = {
    "draft-v1": (
        "Month-end at {company} probably still means late nights for the finance team.",
        "For the finance team at {company}, the last days of the month are probably still the longest.",
        "Closing the books at {company} likely still takes over the first week of every month.",
    ),
    "draft-v2": (
        "How many days does month-end take at {company} right now?",
        "What does the last week of the month look like for the finance team at {company}?",
        "How much of the close at {company} still runs on spreadsheets?",
    ),
}
_ASKS_FOR_QUESTION = re.compile(r"\bopens? with (?:one |a )?(?:short )?question", re.IGNORECASE)
_SUBJECTS = {
    "draft-v1": ("{company}'s month-end close", "A calmer close for {company}"),
    "draft-v2": ("A question about {company}'s close", "{first_name}, how long is your close?"),
}


# How harsh the offline judge is (0 lenient … 1 strict): a careful reviewer, not a pedant.
JUDGE_STRICTNESS = 0.5


def estimate_tokens(text: str) -> int:
    """About four characters a token, the usual rule of thumb for English."""
    return max(1, round(len(text) / 4))


class OfflineModel:
    """One offline model: `complete` takes chat messages and returns the answer text."""

    def __init__(self, name: str, defect_rate: float, injection_rate: float | None = None) -> None:
        self.name = name
        self.defect_rate = defect_rate
        self.injection_rate = min(1.0, INJECTION_RATE_FACTOR * defect_rate) if injection_rate is None else injection_rate

    def complete(self, messages: list[dict[str, str]], seed_key: str = "") -> str:
        user = messages[-1]["content"]
        brief = parse_tagged_json(user, "brief")
        if brief is None:
            return "I could not find a brief in your message."
        rng = random.Random(hashlib.sha256(f"{self.name}|{seed_key}|{user}".encode()).hexdigest())
        task = brief.get("task")
        if task == "plan":
            return json.dumps(_plan(brief))
        if task == "improve_prompt":
            answer = improved_prompt(brief)
            if rng.random() < self.defect_rate:  # a slip: the last required rule is left out
                answer["prompt"] = answer["prompt"].replace(brief["required_rules"][-1], "").strip()
            return json.dumps(answer, ensure_ascii=False)
        if task == "improve_hook":
            answer = improved_hook(brief)
            if rng.random() < self.defect_rate:  # a slip: a figure the claims do not have
                answer["hook"] = answer["hook"].rstrip(".?") + ", often 3 times over."
            return json.dumps(answer, ensure_ascii=False)
        if task == "audit":
            lead, message = parse_tagged_json(user, "lead") or {}, parse_tagged_json(user, "message") or {}
            return json.dumps(judge(brief, lead, message, rng, strict=JUDGE_STRICTNESS), ensure_ascii=False)
        if task == "classify_reply":
            return classify_answer(brief, parse_tagged_json(user, REPLY_TAG) or {}, rng, self.defect_rate)
        if task in {"draft", "repair"}:
            lead = parse_tagged_json(user, "lead") or {}
            # A repair re-asks with the violations listed: the model then slips half as often.
            rate = self.defect_rate / 2 if task == "repair" else self.defect_rate
            defect = rng.choice(DEFECT_TYPES) if rng.random() < rate else None
            sent = [str(m.get("text", "")) for m in (parse_tagged_json(user, COLLEAGUE_TAG) or {}).get("messages", [])]
            system = messages[0]["content"] if messages[0].get("role") == "system" else ""
            answer = _draft(brief, lead, rng, defect, sent, system)
            payload = planted_payload(lead)
            # Drawn only for leads with a payload, so every other lead gets the same answer as ever.
            follow_rate = self.injection_rate / 2 if task == "repair" else self.injection_rate
            if payload is not None and rng.random() < follow_rate:
                answer = _follow(answer, payload, brief, lead)
            return json.dumps(answer, ensure_ascii=False)
        if task in CONTENT_TASKS:  # the content line's brief, variants and audit (offline_content.py)
            return content_answer(task, brief, user, rng, self.defect_rate, JUDGE_STRICTNESS)
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


def _seen(text: str) -> str:
    """Lead text as a model reads it: fullwidth letters as letters, invisible characters gone."""
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")


def planted_payload(lead: dict[str, Any]) -> str | None:
    """The sentences of the first lead field that reads as a payload, as written there (None: nothing to follow)."""
    for field in PAYLOAD_FIELDS:
        value = str(lead.get(field) or "")
        if not _PAYLOAD.search(_seen(value)):
            continue
        sentences = [s.strip() for s in _SENTENCE_BREAK.split(value) if s.strip()]
        return " ".join(s for s in sentences if _PAYLOAD.search(_seen(s))) or value.strip()
    return None


def _follow(answer: dict[str, str], payload: str, brief: dict[str, Any], lead: dict[str, Any]) -> dict[str, str]:
    """The draft of a model that obeyed the payload: in the language it asks for, or with its sentences pasted in."""
    if match := _LANGUAGE_REQUEST.search(_seen(payload)):
        return _foreign_draft(brief, lead, "de" if match.group(0).lower() in {"german", "deutsch"} else "es")
    paragraphs = answer["body"].split("\n\n")
    paragraphs[1] = f"{paragraphs[1]} {payload}"
    return {**answer, "body": "\n\n".join(paragraphs)}


def _closing(brief: dict[str, Any], cta: bool = True, footer: bool = True) -> list[str]:
    """The call to action, the sign-off, the footer and the address: the spec's fixed texts."""
    sender = brief["sender"]
    paragraphs = [brief["call_to_action"]] if cta else []
    paragraphs.append(f"Best,\n{sender['name']}\n{sender['company']}")
    paragraphs.append("\n".join([*([brief["unsubscribe_footer"]] if footer else []), sender["postal_address"]]))
    return paragraphs


def _foreign_draft(brief: dict[str, Any], lead: dict[str, Any], language: str) -> dict[str, str]:
    """A draft in another language that keeps the spec's fixed texts (as a model that only translated its own words)."""
    texts = _FOREIGN[language]
    names = {"first_name": lead.get("first_name", "there"), "company": lead.get("company", "your company")}
    paragraphs = [texts["greeting"].format(**names), texts["middle"].format(**names), *_closing(brief)]
    subjects = [t.format(**names) for t in texts["subjects"]]
    subject = next((t for t in subjects if len(t) <= brief.get("max_subject_chars", 70)), min(subjects, key=len))
    return {"subject": subject, "body": "\n\n".join(paragraphs)}


_DIGITS = re.compile(r"\d+")


def _masked(sentence: str) -> str:
    return _DIGITS.sub("#", sentence)


def _style(style: str, system: str) -> str:
    """The template set for a prompt version: its own, or for a model-written prompt the one its guidance asks for."""
    if style in _OPENERS:
        return style
    return "draft-v2" if _ASKS_FOR_QUESTION.search(system) else "draft-v1"


def _draft(
    brief: dict[str, Any],
    lead: dict[str, Any],
    rng: random.Random,
    defect: str | None,
    sent: list[str] | None = None,
    system: str = "",
) -> dict[str, str]:
    """A draft from the templates; `sent` are messages the company already got (the colleague block), to differ from.

    Told what was sent, the model picks an opener none of them used and leaves out a claim
    that says with other figures what one of them said, as a careful writer would.
    """
    if defect == "wrong_language":
        return _foreign_draft(brief, lead, rng.choice(sorted(_FOREIGN)))
    style = _style(brief.get("style", "draft-v1"), system)
    first_name = lead.get("first_name", "there")
    company = lead.get("company", "your company")
    if defect == "unfilled_placeholder":
        first_name, company = rng.choice([("{first_name}", company), (first_name, "[Company]")])
    if defect == "wrong_name":
        first_name = rng.choice([n for n in _OTHER_NAMES if n != first_name])
    sent = sent or []
    openers = [o.format(company=company) for o in _OPENERS.get(style, _OPENERS["draft-v1"])]
    opener = rng.choice([o for o in openers if not any(o in text for text in sent)] or openers)
    said = {_masked(s.strip()) for text in sent for s in _SENTENCE_BREAK.split(text)}
    claims = [c for c in brief["claims"] if _masked(c) not in said or any(c in text for text in sent)]
    middle = [opener, brief["hook"], *claims]
    if defect == "banned_phrase" and brief.get("banned_phrases"):
        middle.append(f"Honestly, it is {rng.choice(brief['banned_phrases'])} for finance teams.")
    if defect == "invented_number":
        middle.append(rng.choice(_INVENTED))
    paragraphs = [f"Hi {first_name},", " ".join(middle)]
    if defect == "over_length":
        paragraphs += [_FILLER] * (2 + brief["max_words"] // len(_FILLER.split()))
    paragraphs += _closing(brief, cta=defect != "missing_cta", footer=defect != "missing_unsubscribe")
    subjects = [t.format(company=company, first_name=first_name) for t in _SUBJECTS.get(style, _SUBJECTS["draft-v1"])]
    fitting = [s for s in subjects if len(s) <= brief.get("max_subject_chars", 70)]
    # Like a model told the limit: pick among subjects that fit, else the shortest one.
    subject = rng.choice(fitting) if fitting else min(subjects, key=len)
    return {"subject": subject, "body": "\n\n".join(paragraphs)}


# ---------------------------------------------------------------- improving the draft prompt

# What the premium model adds for the rule the gates catch most (codes of gates.rules).
_GATE_ADVICE = {
    "too_long": "Count the words before answering and stay well inside the brief's word limits.",
    "too_short": "Say enough to reach the brief's minimum word count.",
    "missing_cta": "End the body with the brief's call to action, word for word.",
    "missing_unsubscribe": "Close with the unsubscribe footer exactly as the brief gives it.",
    "banned_phrase": "Read the banned phrases before writing and use none of them, not even in passing.",
    "unsupported_number": "Use no figure that is not in the brief's claims.",
    "unsupported_offer": "Offer nothing the brief does not offer: no discounts, trials or guarantees.",
    "unsupported_url": "Add no link.",
    "unfilled_placeholder": "Fill in every name yourself: never leave a placeholder in braces or brackets.",
    "wrong_name": "Greet the reader by the first name the lead gives, spelled exactly as there.",
    "missing_company": "Name the reader's company once, as the lead spells it.",
    "wrong_language": "Write only in the brief's language.",
}
_MIN_DIFFERENCE = 0.05  # question-opening shares closer than this say nothing
_MIN_WORD_DIFFERENCE = 5


def _parent_guidance(parent: str, rules: list[str]) -> str:
    for rule in rules:
        parent = parent.replace(rule, " ")
    return " ".join(parent.split())


def improved_prompt(brief: dict[str, Any]) -> dict[str, str]:
    """A new draft prompt from the improve brief: the parent's guidance, one change the figures point to, the rules.

    Deterministic: the same brief gives the same text (and so the same content-addressed version).
    """
    rules = list(brief.get("required_rules") or DRAFT_REQUIRED_RULES)
    guidance = _parent_guidance(str(brief.get("parent", {}).get("text", "")), rules)
    evidence = brief.get("messages") or {}
    positive, other = evidence.get("positive_messages") or {}, evidence.get("other_messages") or {}
    sentences, why = [], []
    q_pos, q_other = positive.get("question_opening_share"), other.get("question_opening_share")
    if q_pos is not None and q_other is not None and abs(q_pos - q_other) >= _MIN_DIFFERENCE:
        if q_pos > q_other:
            sentences.append("You write one cold B2B email that opens with one short question about the reader's own close.")
        else:
            sentences.append("You write one cold B2B email that opens with a plain statement of the reader's problem.")
        why.append(f"positively answered messages opened with a question {q_pos:.0%} of the time, the others {q_other:.0%}")
    else:
        sentences.append(guidance or "You write one cold B2B email that opens with the reader's problem.")
    w_pos, w_other = positive.get("mean_words"), other.get("mean_words")
    if w_pos is not None and w_other is not None and abs(w_pos - w_other) >= _MIN_WORD_DIFFERENCE:
        target = int(round(w_pos, -1))
        sentences.append(f"Aim for about {target} words in the body.")
        why.append(f"positively answered messages averaged {w_pos:.0f} words, the others {w_other:.0f}")
    catches = brief.get("gate_catches") or []
    if catches and catches[0].get("code") in _GATE_ADVICE:
        top = catches[0]
        sentences.append(_GATE_ADVICE[top["code"]])
        why.append(f"the gates catch {top['code']} most often ({top.get('share_of_drafts', 0):.1%} of first drafts)")
    if " ".join(sentences) == guidance:
        sentences.append("Make the brief's hook the centre of the email and keep every sentence about the reader.")
        why.append("the figures show no clear difference, so the change is a sharper focus on the hook")
    text = " ".join([*sentences, *rules])
    return {"prompt": text, "rationale": "; ".join(why) + "."}


# ---------------------------------------------------------------- writing a hook

# Hook wordings the offline premium model chooses from: questions and statements, no figures.
_HOOK_QUESTIONS = (
    "What would your team do with the hours {topic} takes every month?",
    "Is {topic} still the part of month-end your team would change first?",
    "How much of the close at your company comes down to {topic}?",
)
_HOOK_STATEMENTS = (
    "Most finance leaders we meet want {topic} settled before anything else.",
    "{Topic} is usually where a slow close starts, and where it is easiest to fix.",
    "If {topic} is on your list this quarter, this may be worth a minute.",
)


def improved_hook(brief: dict[str, Any]) -> dict[str, str]:
    """A new hook for the brief's angle: a question when positively answered messages opened with one more
    often than the others, else a statement, never one of the hooks in use. Deterministic per brief."""
    topic = str(brief.get("angle", "this")).replace("_", " ")
    evidence = brief.get("messages") or {}
    positive, other = evidence.get("positive_messages") or {}, evidence.get("other_messages") or {}
    q_pos, q_other = positive.get("question_opening_share"), other.get("question_opening_share")
    asks = q_pos is not None and q_other is not None and q_pos > q_other
    pool = _HOOK_QUESTIONS if asks else _HOOK_STATEMENTS
    in_use = {" ".join(str(h).split()).lower() for h in brief.get("hooks_in_use", [])}
    start = int(hashlib.sha256(json.dumps(brief, sort_keys=True, default=str).encode()).hexdigest(), 16) % len(pool)
    for offset in range(len(pool)):
        hook = pool[(start + offset) % len(pool)].format(topic=topic, Topic=topic.capitalize())
        if hook.lower() not in in_use:
            break
    why = (
        f"positively answered messages opened with a question {q_pos:.0%} of the time, the others {q_other:.0%}"
        if q_pos is not None and q_other is not None
        else "no opening figures yet, so a plainer wording of the angle"
    )
    return {"hook": hook, "rationale": why + "."}
