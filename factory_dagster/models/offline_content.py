"""Offline answers for the content line's model stages: the brief, the variants, the audit.

No language model runs here. Like the outreach line's offline models (`offline.py`), these build
their answers from templates and the JSON brief, deterministically per brief and seed:

- **content_brief** (premium): keeps the slot's topic, picks a segment and a channel not yet
  planned today, states the angle for that reader, picks the topic's claims and passes on the
  guidance lines that fit. At its defect rate it names a claim the topic does not have, a segment
  or a channel the spec does not have: the brief stage refuses such an answer.
- **content_variants** (cheap): `count` variants in different styles (a question, a plain statement,
  a figure from the claims, a negative wording, a "here is how" line), each a sentence frame of its
  style (`FRAMES`) with slots drawn from the brief: the topic, the segment's readers, a time of the
  month, a claim's figure. A LinkedIn post adds a body of a context line, one claim, a piece of
  advice, a closing line and hashtags, each drawn from a pool. So two pieces on one topic rarely
  share most of their wording (the gate's near-duplicate rule), and the same brief always gives the
  same texts. Each variant is within the channel's limits and the brief's reading grade. It reads
  the brief's guidance: it drops questions when they cost clicks, leads with a figure when figures
  help, and leaves out any phrase a note says operators removed ("operators removed 'X' in 3 of 4
  ... edits", `content.edits`). At its defect rate a variant carries one of `CONTENT_DEFECT_TYPES`,
  each a rule the content gate catches (`content.gates.check_piece`).
- **content_audit** (premium judge): scores truthfulness to the claims, voice and channel fit
  from 1 to 5 by the checks a careful reviewer makes, reading only the brief and the piece, and
  fails a piece that scores 2 or less anywhere. It notices each problem with probability
  `JUDGE_NOTICES`, so it fails most, not all, of what breaks a hard rule.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from typing import Any

from factory_dagster.content.features import reading_grade
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

# Sentence frames by style. Slots: {t} the topic ("close habits"), {T} the same capitalised, {r} the readers (from the
# segment), {w} a time of the month; number frames also {f}/{F} (a claim's figure with its unit: "up to 4 days faster")
# and {c} (the claim itself). Frames differ in structure, not in one word, and each draws two or three slots, so two
# pieces on one topic rarely share most of their wording (the gate's near-duplicate rule compares word 3-shingles).
# A frame never makes the topic a verb's subject ("close habits goes ..."): any topic name reads right in it.
FRAMES: dict[str, tuple[str, ...]] = {
    "question": (
        "What do {r} get wrong about {t} {w}?",
        "{W}, do {r} have a plan for {t}?",
        "What would change for {r} {w} with a plan for {t}?",
        "{T}: what do {r} check first {w}?",
        "Who owns {t} for {r} {w}?",
        "When did {r} last look hard at {t} {w}?",
        "Could {t} be simpler for {r} {w}?",
        "Which part of {t} takes {r} the longest {w}?",
        "Do {r} talk about {t} {w}?",
        "{W}, what slows {r} down on {t}?",
        "How do {r} think about {t} {w}?",
    ),
    "statement": (
        "A closer look at {t} for {r} {w}.",
        "{T} {w}: notes for {r}.",
        "Notes from {r} on {t} {w}.",
        "{W}: {t}, step by step, for {r}.",
        "A short read on {t} for {r} {w}.",
        "For {r}, {t} {w} can be plain and calm.",
        "The quiet side of {t} for {r} {w}.",
        "{T}: a habit for {r}, not a project, {w}.",
        "{W}, {r} keep {t} in view.",
        "Plain talk about {t} for {r} {w}.",
        "{T} for {r}: what matters {w}.",
    ),
    "number": (
        "{F}: what it means for {r} {w}.",
        "{T} {w}, {f}, for {r}.",
        "{F}. Here is what {r} notice {w}.",
        "{F}, for {r} {w}.",
        "The figure {r} ask about {w}: {f}.",
        "{T} for {r} {w}: {f}.",
        "For {r} {w}: {c}",
    ),
    "negative": (
        "The mistake {r} make with {t} {w}.",
        "What goes wrong for {r} with {t} {w}.",
        "{T}: where it goes wrong for {r} {w}.",
        "The hidden problem {r} find in {t} {w}.",
        "Late nights and lost hours {w}: {t} for {r}.",
        "{T} without the mess: {r} {w}.",
        "The painful part of {t} for {r} {w}.",
        "A common mistake in {t} {w}, and the fix for {r}.",
        "No {r} should lose sleep over {t} {w}.",
        "The worry {r} bring to {t} {w}.",
        "{W}, small problems in {t} grow fast for {r}.",
    ),
    "how": (
        "Here is how {r} handle {t} {w}.",
        "How {r} get {t} right {w}.",
        "How {r} keep {t} simple {w}.",
        "{T}: how calm {r} do it {w}.",
        "A plain guide for {r} to {t} {w}.",
        "How {r} make room for {t} {w}.",
        "{W}, here is a simple way into {t} for {r}.",
        "{W}: how to start on {t} with {r}.",
        "Where {r} start with {t} {w}.",
        "How {r} take the stress out of {t} {w}.",
        "{W}: how {r} stay on top of {t}.",
    ),
}
WHEN = (
    "at month-end",
    "before the next close",
    "in the last week of the month",
    "on close day",
    "when the books close",
    "this month",
    "after a long close",
    "at the start of the month",
)
READER_WORDS = ("", "busy ", "new ", "senior ")  # drawn before the readers: "for busy controllers"
# A LinkedIn post's body: a line of context, a claim, a piece of advice, a closing line and up to two hashtags.
CONTEXT = (
    "Month-end has a way of eating the last week of every month.",
    "Most finance teams know the feeling of a close that drags on.",
    "The close tends to pile up in the last few days.",
    "Late nights at month-end are common, but they are not a rule.",
    "{R} often tell the same story about {t}.",
    "{R} bring up {t} in nearly every talk.",
    "A calm close starts long before the last day of the month.",
    "Few teams plan for {t} until it hurts.",
    "The work does not change much from month to month, and that is good news.",
    "Ask {r} about {t} and you hear the same few things.",
)
ADVICE = (
    "Start with the checks that always run late.",
    "Write down who owns each step of the close.",
    "Move the small checks to the first days of the month.",
    "Keep a short list of what broke last time.",
    "Agree on a cut-off time for late entries.",
    "Clear small mismatches the day they show up.",
    "Share the close plan with the whole team early.",
    "Keep notes on each fix so the next close is quicker.",
    "Pick the step that hurts most and fix that first.",
    "Look at {t} before the rush, not during it.",
)
CLOSINGS = (
    "Worth a look before your next close.",
    "Read more at the link.",
    "Tell us what works for you.",
    "What would you add?",
    "Save this for the next month-end.",
    "Share it with someone who runs the close.",
    "More on this at the link.",
)
HASHTAGS = ("#monthend", "#finance", "#accounting", "#closeprocess")
_GENERAL_SEGMENTS = frozenset({"general", "all", "everyone", "other", "others"})
_FIGURE_LEAD = frozenset({"within", "in", "under", "over", "about", "nearly", "than", "just"})
_EDGE = ".,;:!?\"'()[]…-–— "  # as review.analysis strips a word's edges: content.edits compares phrases this way
_REMOVED = re.compile(r"\boperators removed '(.+)' in \d+ of \d+\b")


def _fits(text: str, limit: int) -> bool:
    return bool(text) and len(text) <= limit


def _tokens(text: str) -> list[str]:
    return [t for t in (w.strip(_EDGE).casefold() for w in text.split()) if t]


def removed_phrases(guidance: list[str]) -> list[str]:
    """The phrases guidance notes say operators removed (`content.edits` writes "operators removed 'X' in 3 of 4 ...")."""
    return [m.group(1) for line in guidance if (m := _REMOVED.search(line))]


def _avoids(text: str, avoid: list[list[str]]) -> bool:
    """Whether `text` uses none of the phrases (token lists) operators removed."""
    words = _tokens(text)
    return not any(words[i : i + len(p)] == p for p in avoid for i in range(len(words) - len(p) + 1))


def _readers(segment: Any) -> str:
    """Who the piece talks about, from the segment's name: "scaleup_finance_leaders" -> "finance leaders"."""
    name = str(segment.get("name", "") if isinstance(segment, dict) else segment or "")
    words = [w for w in name.lower().split("_") if w]
    if not words or words[0] in _GENERAL_SEGMENTS:
        return "finance teams"
    return " ".join(words[-2:])


def _figure(claim: str) -> str:
    """A claim's figure with its unit and the words that qualify it ("up to 4 days faster", "within 2 weeks"), or ""."""
    words = claim.rstrip(".").split()
    at = next((i for i, w in enumerate(words) if _DIGITS.search(w)), None)
    if at is None:
        return ""
    start = at
    if [w.lower() for w in words[max(0, at - 2) : at]] == ["up", "to"]:
        start = at - 2
    elif at and words[at - 1].lower() in _FIGURE_LEAD:
        start = at - 1
    return " ".join(words[start : at + 3]).rstrip(",;:")


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


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fills(frame: str, brief: dict[str, Any], figures: list[str]) -> list[str]:
    """Every way to fill a frame's slots from the brief: each figure, reader word and time of the month, and the frame
    without its time of the month (a short channel may only have room for that)."""
    topic, readers = _phrase(str(brief["topic"])), _readers(brief.get("segment"))
    frames = [frame, re.sub(r"\{W\}[,:] |,? ?\{w\}", "", frame)] if "{w}" in frame or "{W}" in frame else [frame]
    claims = figures if "{f}" in frame or "{F}" in frame or "{c}" in frame else [""]
    filled = []
    for form, claim, word, when in itertools.product(frames, claims, READER_WORDS, WHEN):
        figure, reader = _figure(claim), word + readers
        if claim and not figure and "{c}" not in form:
            continue
        slots = {"t": topic, "T": _capital(topic), "r": reader, "R": _capital(reader), "w": when, "W": _capital(when)}
        filled.append(_capital(form.format(**slots, c=claim, f=figure, F=_capital(figure))))
    return list(dict.fromkeys(filled))


def _line(
    style: str, brief: dict[str, Any], rng: random.Random, figures: list[str], limit: int, avoid: list[list[str]], seen: set[str]
) -> str:
    """A headline-length line in a style: a frame drawn at random, then one of its fillings that fits within `limit`,
    is new to the piece, reads within the brief's reading grade and uses no phrase operators removed; "" when no frame
    of the style has one."""
    grade_max = float(brief.get("reading_grade_max") or math.inf)  # the writer keeps its words as simple as asked
    for frame in rng.sample(FRAMES[style], len(FRAMES[style])):
        usable = [
            line
            for line in _fills(frame, brief, figures)
            if _fits(line, limit) and line not in seen and _avoids(line, avoid) and reading_grade(line) <= grade_max
        ]
        if usable:
            return rng.choice(usable)
    return ""


def _pick(options: tuple[str, ...], brief: dict[str, Any], rng: random.Random, avoid: list[list[str]]) -> str:
    """One of `options` (slots filled) that uses no removed phrase; "" when every one does."""
    topic, readers = _phrase(str(brief["topic"])), _readers(brief.get("segment"))
    slots = {"t": topic, "T": _capital(topic), "r": readers, "R": _capital(readers)}
    usable = [o.format(**slots) for o in options if _avoids(o.format(**slots), avoid)]
    return rng.choice(usable) if usable else ""


def _post(hook: str, brief: dict[str, Any], rng: random.Random, avoid: list[list[str]]) -> str:
    """A LinkedIn post: the hook line, then context, a claim and advice, a closing line and up to two hashtags."""
    claims = [str(c["text"]) for c in brief.get("claims") or [] if _avoids(str(c["text"]), avoid)]
    claim = rng.choice(claims) if claims else ""
    sentences = [_pick(CONTEXT, brief, rng, avoid), claim, _pick(ADVICE, brief, rng, avoid)]
    if rng.random() < 0.5:  # the claim first, or the context first
        sentences[0], sentences[1] = sentences[1], sentences[0]
    body = " ".join(s for s in sentences if s) or f"Small habits help with {_phrase(brief['topic'])}."
    closing = _pick(CLOSINGS, brief, rng, avoid)
    tags = " ".join(t for t in rng.sample(HASHTAGS, rng.choice((1, 2, 2))) if _avoids(t, avoid))
    return "\n\n".join(part for part in (hook, body, "\n".join(p for p in (closing, tags) if p)) if part)


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
    """`len(defects)` variants for the brief; `defects[i]` is the defect planted in variant i (None: clean).

    Variant i takes the i-th style after a drawn start (so a piece's variants differ in style), then a frame of that
    style and its slots at random: the same brief always gives the same texts, a new piece other ones.
    """
    channel, limit = brief["channel"], int(brief["max_chars"])
    hook_limit = int(brief.get("hook_max_chars") or limit)
    line_limit = min(limit, hook_limit)
    avoid = [p for p in (_tokens(phrase) for phrase in removed_phrases(list(brief.get("guidance") or []))) if p]
    figures = [str(c["text"]) for c in brief.get("claims") or [] if _DIGITS.search(str(c["text"]))]
    figures = [f for f in figures if _avoids(f, avoid)]
    styles = _styles(brief, figures)
    start = rng.randrange(len(styles))
    variants, seen = [], set()
    for i, defect in enumerate(defects):
        line = ""
        for step in range(len(styles)):
            line = _line(styles[(start + i + step) % len(styles)], brief, rng, figures, line_limit, avoid, seen)
            if line:
                break
        line = line or f"{_capital(_phrase(str(brief['topic'])))}, take {i + 1}."
        seen.add(line)
        text = _post(line, brief, rng, avoid) if channel == "linkedin_post" else line
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
