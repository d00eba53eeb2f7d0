"""Offline answers for the content line's model stages: the brief, the variants, the audit.

No language model runs here. Like the outreach line's offline models (`offline.py`), these build
their answers from templates and the JSON brief, deterministically per brief and seed:

- **content_brief** (premium): keeps the slot's topic, picks a segment and a channel not yet
  planned today, states the angle for that reader, picks the topic's claims and passes on the
  guidance lines that fit. At its defect rate it names a claim the topic does not have, a segment
  or a channel the spec does not have: the brief stage refuses such an answer.
- **content_variants** (cheap): `count` variants that mix a question, a plain statement, a figure
  from the claims, a negative wording and a "here is how" line, each within the channel's limits
  (for a LinkedIn post: a hook line and a short body from the claims). It reads the brief's
  guidance: it drops questions when they cost clicks and leads with a figure when figures help.
  At its defect rate a variant carries one of `CONTENT_DEFECT_TYPES`, each a rule the content gate
  catches (`content.gates.check_piece`).
- **content_audit** (premium judge): scores truthfulness to the claims, voice and channel fit
  from 1 to 5 by the checks a careful reviewer makes, reading only the brief and the piece, and
  fails a piece that scores 2 or less anywhere. It notices each problem with probability
  `JUDGE_NOTICES`, so it fails most, not all, of what breaks a hard rule.
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

from factory_dagster.models.offline_judge import _HYPE, _OFFER, _PROMISE, _SUPERLATIVE, _URL, _new_matches, _noise, _norm
from factory_dagster.models.prompts import GUIDANCE_TAG, PIECE_TAG, parse_tagged_json

CONTENT_TASKS = frozenset({"content_brief", "content_variants", "content_audit"})

CONTENT_DEFECT_TYPES: tuple[str, ...] = ("over_length", "hook_over_limit", "banned_phrase", "invented_number")
# The gate's reason code each planted defect must raise (a single-line channel has no hook: its hook defect is length).
DEFECT_CODES = {
    "over_length": "too_long",
    "hook_over_limit": "hook_too_long",
    "banned_phrase": "banned_phrase",
    "invented_number": "unsupported_number",
}
BRIEF_DEFECTS: tuple[str, ...] = ("unknown_claim", "unknown_segment", "unknown_channel")
JUDGE_NOTICES = 0.9  # the judge's chance of noticing each problem a careful reviewer would find
JUDGE_FAILS_AT = 2  # a score at or below this on any criterion fails the piece
_HARD = 3.5  # points off for breaking a hard rule (invented fact, banned phrase, over the limit)
_DIGITS = re.compile(r"\d+(?:[.,]\d+)?")
_QUOTED = re.compile(r'"([^"\n]+)"|\u201c([^\u201d\n]+)\u201d')
_CAPS = re.compile(r"\b[A-Z][A-Z&]+\b")
_INVENTED = ("for 37% of teams", "in 3 simple steps", "saving 11 hours a month", "at 9 in 10 firms")
_PADDING = (
    "Every team we know has its own way of doing this, and each one of them has learned it the hard way, "
    "one late night and one missed deadline after another, until the routine finally holds."
)
_LONG_HOOK = (
    "Before you read any further, think about the last time your team stayed late to finish the close, the "
    "calls, the spreadsheets, the checks that had to be done twice, the reports nobody reads until something breaks, "
    "and then ask yourself whether it really has to be that way every single month"
)


def _phrase(topic: str) -> str:
    return topic.replace("_", " ")


# ---------------------------------------------------------------- the brief


def _applies(line: str, chosen: str, names: list[str]) -> bool:
    """A guidance line that names a segment or channel applies only to the one chosen; others apply to all."""
    named = [n for n in names if n in line]
    return not named or chosen in named


def content_brief_answer(brief: dict[str, Any], guidance: list[str], rng: random.Random, defect_rate: float) -> dict[str, Any]:
    """One piece's brief for the calendar slot in `brief` (see the module docstring)."""
    topic = brief.get("topic") or {}
    segments = [s["name"] for s in brief.get("segments") or []]
    channels = [c["name"] for c in brief.get("channels") or []]
    planned = {(p.get("segment"), p.get("channel")) for p in brief.get("planned_today") or []}
    pairs = [(s, c) for s in segments for c in channels]
    free = [p for p in pairs if p not in planned] or pairs
    segment, channel = rng.choice(free) if free else ("", "")
    claim_ids = [c["id"] for c in topic.get("claims") or []]
    claims = sorted(rng.sample(claim_ids, 2)) if len(claim_ids) > 2 else claim_ids
    kept = [g for g in guidance if _applies(g, segment, segments) and _applies(g, channel, channels)]
    description = next((s.get("description", "") for s in brief["segments"] if s["name"] == segment), "")
    angle = f"{str(topic.get('angle', '')).rstrip('.')}, for {description[:1].lower() + description[1:].rstrip('.')}"
    defect = rng.choice(BRIEF_DEFECTS) if rng.random() < defect_rate else None
    if defect == "unknown_claim":
        claims = [*claims, "customers_save_40_percent"]
    elif defect == "unknown_segment":
        segment = "enterprise_cfos_worldwide"
    elif defect == "unknown_channel":
        channel = "tiktok_video"
    used = ", ".join(claims) if claims else "no claims: advice only, no figures"
    text = (
        f"Write a {channel.replace('_', ' ')} for {segment.replace('_', ' ')} on {_phrase(str(topic.get('name', '')))}. "
        f"Angle: {angle}. Claims: {used}. Voice: {brief.get('brand', {}).get('tone', '')}."
    )
    if kept:
        text += " Guidance: " + " ".join(g.rstrip(".") + "." for g in kept)
    return {
        "topic": topic.get("name", ""),
        "segment": segment,
        "channel": channel,
        "angle": angle,
        "claims": claims,
        "guidance": kept,
        "brief": text,
    }


# ---------------------------------------------------------------- the variants


def _fits(text: str, limit: int) -> bool:
    return bool(text) and len(text) <= limit


def _styles(brief: dict[str, Any], figures: list[str]) -> list[str]:
    """Variant styles in the order the writer tries them, after the guidance it was given."""
    guidance = " ".join(brief.get("guidance") or []).lower()
    styles = ["question", "statement", "number", "negative", "how"]
    if re.search(r"questions?\b[^.]*-\d", guidance):  # "a question: -10% clicks"
        styles.remove("question")
    if re.search(r"numbers?\b[^.]*\+\d", guidance):
        styles.remove("number")
        styles.insert(0, "number")
    if not figures:
        styles.remove("number")
    return styles


def _line(style: str, topic: str, brief: dict[str, Any], figures: list[str], index: int) -> str:
    """One headline-length line in a style (the hook of a post, or a whole subject line or headline)."""
    phrase = _phrase(topic)
    angle = str(brief.get("topic_angle") or brief.get("angle") or "").split(",")[0].rstrip(".")
    options = {
        "question": (
            f"Is {phrase} on your list this month?",
            f"What would better {phrase} change for your team?",
            f"How much does {phrase} matter to you?",
        ),
        "statement": (f"{angle}.", f"A closer look at {phrase}.", f"A note on {phrase}."),
        "number": tuple(figures) or ("",),
        "negative": (
            f"The mistake most teams make with {phrase}.",
            f"What goes wrong with {phrase} at month-end.",
            f"Why {phrase} goes wrong at month-end.",
        ),
        "how": (f"Here is how calm teams handle {phrase}.", f"How to get {phrase} right this month.", f"How teams fix {phrase}."),
    }[style]
    return options[index % len(options)]


def _post(hook: str, brief: dict[str, Any], rng: random.Random) -> str:
    """A LinkedIn post: the hook line, the claims as short sentences, a closing line and up to two hashtags."""
    claims = [str(c["text"]) for c in brief.get("claims") or []]
    body = " ".join(rng.sample(claims, len(claims))) if claims else f"Small habits help with {_phrase(brief['topic'])}."
    closing = rng.choice(("Worth a look before your next close.", "Read more at the link.", "Tell us what works for you."))
    tags = " ".join(rng.sample(["#monthend", "#finance", "#accounting"], 2))
    return f"{hook}\n\n{body}\n\n{closing}\n{tags}"


def _plant(text: str, defect: str, brief: dict[str, Any], rng: random.Random) -> str:
    """The variant with one defect the gate must catch."""
    channel, limit = brief["channel"], int(brief["max_chars"])
    post = channel == "linkedin_post"
    if defect == "hook_over_limit" and post:
        return f"{_LONG_HOOK}.\n" + text.split("\n", 1)[1]
    if defect in {"over_length", "hook_over_limit"}:
        if post:
            return text + ("\n\n" + _PADDING) * (2 + limit // len(_PADDING))
        return f"{text.rstrip('.?')}, and what it means for every finance team in the coming quarter"
    if defect == "banned_phrase" and brief.get("banned_phrases"):
        phrase = rng.choice(brief["banned_phrases"])
        if post:
            hook, rest = text.split("\n", 1)
            return f"{hook}\n\nHonestly, this is {phrase}.{rest}"
        return f"{text.rstrip('.?')}: {phrase}"
    figure = rng.choice(_INVENTED)
    if post:
        hook, rest = text.split("\n", 1)
        return f"{hook.rstrip('.?')}, {figure}.\n{rest}"
    return f"{text.rstrip('.?')}, {figure}"


def content_variants_answer(brief: dict[str, Any], rng: random.Random, defects: list[str | None]) -> dict[str, Any]:
    """`len(defects)` variants for the brief; `defects[i]` is the defect planted in variant i (None: clean)."""
    channel, limit = brief["channel"], int(brief["max_chars"])
    hook_limit = int(brief.get("hook_max_chars") or limit)
    line_limit = min(limit, hook_limit)
    figures = [str(c["text"]) for c in brief.get("claims") or [] if _DIGITS.search(str(c["text"]))]
    figures = [f for f in figures if _fits(f, line_limit)]
    styles = _styles(brief, figures)
    start = rng.randrange(len(styles))
    variants, seen = [], set()
    for i, defect in enumerate(defects):
        line = ""
        for step in range(len(styles) * 3):
            style = styles[(start + i + step) % len(styles)]
            candidate = _line(style, str(brief["topic"]), brief, figures, i + step // len(styles))
            if _fits(candidate, line_limit) and candidate not in seen:
                line = candidate
                break
        line = line or f"{_phrase(str(brief['topic'])).capitalize()}, take {i + 1}."
        seen.add(line)
        text = _post(line, brief, rng) if channel == "linkedin_post" else line
        if defect is not None:
            text = _plant(text, defect, brief, rng)
        variants.append({"text": text})
    return {"variants": variants}


def content_variants(brief: dict[str, Any], rng: random.Random, defect_rate: float) -> dict[str, Any]:
    """The cheap writer's answer: each variant carries a defect with probability `defect_rate`."""
    count = max(0, int(brief.get("count") or 0))
    defects = [rng.choice(CONTENT_DEFECT_TYPES) if rng.random() < defect_rate else None for _ in range(count)]
    return content_variants_answer(brief, rng, defects)


# ---------------------------------------------------------------- the audit


def _content_findings(brief: dict[str, Any], text: str, rng: random.Random) -> dict[str, list[tuple[float, str]]]:
    """Problems per rubric dimension, each (points off, note); each noticed with probability JUDGE_NOTICES."""
    claims = [str(c.get("text", "")) for c in brief.get("claims") or []]
    sources = [str(c.get("source", "")) for c in brief.get("claims") or []]
    fixed = [str(brief.get("brand") or ""), str(brief.get("website") or "")]
    allowed_texts = [*claims, *sources, *fixed]
    found: dict[str, list[tuple[float, str]]] = {"truthfulness": [], "voice": [], "channel_fit": []}

    def add(dimension: str, points: float, note: str) -> None:
        if rng.random() < JUDGE_NOTICES:
            found[dimension].append((points, note))

    allowed_numbers = {n for t in [*claims, *fixed] for n in _DIGITS.findall(t)}
    linkless = _URL.sub(" ", text)
    if invented := sorted(set(_DIGITS.findall(linkless)) - allowed_numbers):
        add("truthfulness", _HARD, f"figures no claim has: {', '.join(invented)}")
    quotes = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(text)]
    if unsupported := [q for q in quotes if not any(_norm(q) in _norm(c) for c in claims)]:
        add("truthfulness", _HARD, f"a quote no claim contains: {unsupported[0]!r}")
    allowed_links = {m.group(0).rstrip(".,;:!?").lower() for t in allowed_texts for m in _URL.finditer(t)}
    if links := sorted({m.group(0).rstrip(".,;:!?").lower() for m in _URL.finditer(text)} - allowed_links):
        add("truthfulness", _HARD, f"a link the brief does not give ({links[0]})")
    for pattern, points, what in (
        (_OFFER, _HARD, "an offer"),
        (_PROMISE, _HARD, "a promise"),
        (_SUPERLATIVE, 2, "a superlative"),
    ):
        if matches := _new_matches(pattern, text, allowed_texts):
            add("truthfulness", points, f"{what} the claims do not make ({', '.join(matches)})")

    norm = _norm(text)
    if banned := [p for p in brief.get("banned_phrases") or [] if _norm(str(p)) in norm]:
        add("voice", _HARD, f"banned phrase {', '.join(repr(p) for p in banned)}")
    if hype := _new_matches(_HYPE, text, allowed_texts):
        add("voice", 2, f"hype ({', '.join(hype)})")
    checks = brief.get("voice_checks") or {}
    if text.count("!") > int(checks.get("max_exclamation_marks", 0)):
        add("voice", 2, f"{text.count('!')} exclamation mark(s)")
    acronyms = set(checks.get("allowed_acronyms") or [])
    if shouted := [w for w in _CAPS.findall(linkless) if w not in acronyms and len(w) >= 3]:
        add("voice", 2, f"shouting ({', '.join(shouted[:3])})")

    limit, hook_limit = int(brief.get("max_chars") or 10**6), brief.get("hook_max_chars")
    if len(text) > limit:
        add("channel_fit", _HARD, f"{len(text)} characters, the channel allows {limit}")
    hook = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if hook_limit and len(hook) > int(hook_limit):
        add("channel_fit", _HARD, f"a hook of {len(hook)} characters is cut off after {hook_limit}")
    if brief.get("single_line") and "\n" in text.strip():
        add("channel_fit", _HARD, "more than one line on a one-line channel")
    return found


def content_audit_answer(brief: dict[str, Any], piece: dict[str, Any], rng: random.Random, strict: float) -> dict[str, Any]:
    """Scores for every criterion of `brief["rubric"]`, a verdict and reasons (see the module docstring)."""
    rubric = list((brief.get("rubric") or {}).keys())
    noise = [_noise(rng, strict) for _ in rubric]  # drawn first and always, so the stream never shifts
    text = str(piece.get("text") or "").strip()
    if not text:
        return {"scores": {c: 1 for c in rubric}, "verdict": "fail", "reasons": "There is no text to audit."}
    found = _content_findings(brief, text, rng)
    weight = 0.75 + 0.5 * strict
    scores, reasons = {}, []
    for criterion, drop in zip(rubric, noise, strict=True):
        problems = found[criterion] if criterion in found else [p for ps in found.values() for p in ps]
        points = sum(p for p, _ in problems)
        scores[criterion] = max(1, min(5, 5 - math.floor(points * weight + 0.5) - (drop if not problems else 0)))
        if problems:
            reasons.append(f"{criterion} {scores[criterion]}: {'; '.join(n for _, n in problems)}")
    verdict = "fail" if any(s <= JUDGE_FAILS_AT for s in scores.values()) else "pass"
    summary = " ".join(r + "." for r in reasons) or "Clean: only the claims' facts, in the brand's voice, within the channel."
    return {"scores": scores, "verdict": verdict, "reasons": summary}


def content_answer(task: str, brief: dict[str, Any], user: str, rng: random.Random, defect_rate: float, strict: float) -> str:
    """The answer text of an offline model to a content task (`OfflineModel.complete` dispatches here)."""
    if task == "content_brief":
        guidance = [str(g) for g in (parse_tagged_json(user, GUIDANCE_TAG) or {}).get("lines", [])]
        return json.dumps(content_brief_answer(brief, guidance, rng, defect_rate), ensure_ascii=False)
    if task == "content_variants":
        guidance = [str(g) for g in (parse_tagged_json(user, GUIDANCE_TAG) or {}).get("lines", [])]
        return json.dumps(content_variants({**brief, "guidance": guidance}, rng, defect_rate), ensure_ascii=False)
    return json.dumps(content_audit_answer(brief, parse_tagged_json(user, PIECE_TAG) or {}, rng, strict), ensure_ascii=False)
