"""The offline judge: a deterministic, seeded reviewer behind the audit prompt.

No language model runs here. It scores one message against the audit brief's rubric
(1 = bad ... 5 = excellent) with the checks a careful reviewer would make, reading only
the brief (the angle's claims, banned phrases, call to action, footer, sender, voice),
the lead and the message:

- **truthfulness** drops for numbers, prices/discounts/free offers and links that the
  angle's claims do not contain, for promises made to the reader ("we guarantee you",
  "you will save") and for unverifiable superlatives ("the best tool");
- **tone** drops for banned phrases, hype words, shouting (capitals), runs of
  exclamation marks, pressure ("act now", "last chance"), rambling or repeated paragraphs;
- **relevance** drops when the greeting names someone other than the lead, a placeholder
  is left unfilled, the lead's company is never named, or none of the angle's claims is
  used (a generic or off-angle message);
- **compliance** (used for rubric criteria about format or requirements) drops for a
  missing call to action, unsubscribe footer or postal address.

Each problem has a weight in score points. `strict` (0..1) scales the weights (0.75x at 0,
1.0x at 0.5, 1.25x at 1) and how often a clean message loses a point to reviewer noise: a
clean message scores 4-5 and now and then 3, never lower. Criteria the judge does not
know are scored on its overall impression (the worst of the known ones' problems).
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_URL = re.compile(r"(?:https?://|www\.|\b[a-z0-9-]+\.(?:com|io|net|org|co|example)/)[^\s<>\"'()]*", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\{?[^{}\n]*\}\}?|\[[A-Za-z][A-Za-z _]*\]|<<[^>]*>>|%\([a-z_]+\)s")
_GREETING = re.compile(r"^\s*(?:hi|hello|dear|hey|good (?:morning|afternoon))\s+([^,\n!]+)[,!]", re.IGNORECASE)
_OFFER = re.compile(
    r"\b(?:discounts?|free(?!\s+up)|cheaper|prices?|pricing|refunds?|rebates?|coupons?|no cost|at no charge|"
    r"free trial|trial period|money[- ]back)\b|% off|\bsave \$",
    re.IGNORECASE,
)
_PROMISE = re.compile(
    r"\bwe (?:can )?(?:guarantee|promise)\b|\bguarantee(?:s|d)?\b|\bpromise(?:s|d)? (?:you|that)\b|"
    r"\byou(?:'ll| will) (?:save|cut|close|get|see|double|halve|reduce|never|finally|eliminate)\b|"
    r"\byour (?:team|close|company|finance team|month-end) will (?:close|save|be|never|get|see|cut)\b|"
    r"\bno strings attached\b|\brisk[- ]free\b|\bzero risk\b|\bwithout (?:any )?risk\b|\bfor sure\b",
    re.IGNORECASE,
)
_SUPERLATIVE = re.compile(
    r"\b(?:the )?(?:best|#1|number one|leading|only|fastest|smartest) (?:solution|tool|platform|software|product|way|choice)\b|"
    r"\bindustry[- ]leading\b|\bworld[- ]class\b|\bbest[- ]in[- ]class\b|\bunbeatable\b|\bsecond to none\b",
    re.IGNORECASE,
)
_HYPE = re.compile(
    r"\b(?:amazing|incredible|unbelievable|mind[- ]blowing|jaw[- ]dropping|game[- ]chang(?:er|ing)|revolution(?:ary|i[sz]e)|"
    r"cutting[- ]edge|next[- ]level|disruptive|skyrocket\w*|supercharg\w*|turbocharg\w*|insane(?:ly)?|magic(?:al)?|"
    r"unprecedented|once[- ]in[- ]a[- ]lifetime|ultimate|crush(?:ing)?|dominate|explosive|10x|massive|huge)\b",
    re.IGNORECASE,
)
_PRESSURE = re.compile(
    r"\b(?:act (?:now|fast|today)|last chance|limited[- ]time|hurry|don'?t miss(?: out)?|do not miss|"
    r"before it'?s too late|(?:offer )?expires?|ends (?:today|tomorrow|soon|friday|on \w+)|today only|only today|"
    r"this week only|before (?:monday|tuesday|wednesday|thursday|friday|the end of the (?:week|month))|"
    r"sign (?:this|today|before)\w*|final offer|while (?:supplies|spots|places) last|spots are (?:filling|limited)|"
    r"urgent(?:ly)?|asap|deadline|only \d+ (?:spots|places|seats)|"
    r"(?:reply|call|book|buy|order|respond|click|sign up|register|decide) (?:right )?now)\b",
    re.IGNORECASE,
)
# Breaking a hard rule of the spec (banned phrase, invented fact, offer, link or promise) fails even a lax judge.
_HARD = 3.5
_CAPS_WORD = re.compile(r"\b[A-Z][A-Z'-]*[A-Z]\b")
_SHOUT_SHORT = frozenset({"FREE", "NOW", "HUGE", "BIG", "BEST", "ONLY", "LAST", "SAVE", "WOW", "MUST", "NEW", "HOT", "WIN"})
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_STOP = frozenset(
    "the and for with that this you your our are was were has have had will can from into onto their them they its "
    "his her who what when where which while than then there here about after before every each most more less all "
    "any some not but also just only very use using used".split()
)

# The checks behind each dimension; a rubric criterion is scored by the dimension its name points to.
_DIMENSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("truthfulness", ("truth", "accura", "fact", "claim", "honest", "correct", "invent")),
    ("tone", ("tone", "voice", "style", "hype", "brand", "polite")),
    ("relevance", ("relev", "personal", "fit", "target", "specific")),
    ("compliance", ("complian", "format", "structure", "require", "legal", "policy", "unsubscribe")),
)


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _words(text: str) -> list[str]:
    return _WORD.findall(_norm(text))


def _strip(text: str, names: list[str]) -> str:
    """`text` without the given names (a company called "Free Now" or "ACME" is not an offer or shouting)."""
    for name in sorted((n for n in names if n.strip()), key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(unicodedata.normalize('NFC', name))}(?!\w)", " ", text, flags=re.IGNORECASE)
    return text


def dimension_of(criterion: str) -> str:
    """The judge's dimension for a rubric criterion name ("overall" when it names none it knows)."""
    name = criterion.casefold()
    return next((dim for dim, stems in _DIMENSIONS if any(stem in name for stem in stems)), "overall")


class _Findings:
    def __init__(self) -> None:
        self.points: dict[str, float] = {dim: 0.0 for dim, _ in _DIMENSIONS}
        self.notes: dict[str, list[str]] = {dim: [] for dim, _ in _DIMENSIONS}

    def add(self, dim: str, points: float, note: str) -> None:
        self.points[dim] += points
        self.notes[dim].append(note)

    def overall(self) -> float:
        return max(self.points.values())


def _new_matches(pattern: re.Pattern[str], text: str, allowed_texts: list[str]) -> list[str]:
    """What `pattern` finds in the message that the brief's own texts (claims, required parts) do not contain."""
    allowed = {_norm(m.group(0)) for t in allowed_texts for m in pattern.finditer(t)}
    return sorted({_norm(m.group(0)) for m in pattern.finditer(text)} - allowed)


def _claims_used(claims: list[str], message_words: set[str]) -> list[str]:
    """Claims whose content words mostly appear in the message (verbatim or lightly paraphrased)."""
    used = []
    for claim in claims:
        content = {w for w in _words(claim) if len(w) >= 3 and w not in _STOP}
        if content and len(content & message_words) / len(content) >= 0.6:
            used.append(claim)
    return used


def _greeting_ok(greeted: str, lead: Mapping[str, Any]) -> bool:
    first, last = _norm(_text(lead.get("first_name"))), _norm(_text(lead.get("last_name")))
    name = _norm(greeted)
    accepted = {first, f"{first} {last}".strip()}
    if last:
        accepted |= {f"{title} {last}" for title in ("mr", "mr.", "ms", "ms.", "mrs", "mrs.", "dr", "dr.")}
    return name in accepted


def _inspect(brief: Mapping[str, Any], lead: Mapping[str, Any], subject: str, body: str) -> _Findings:
    found = _Findings()
    claims = [_text(c) for c in brief.get("claims") or []]
    sender = brief.get("sender") or {}
    cta, footer = _text(brief.get("call_to_action")), _text(brief.get("unsubscribe_footer"))
    address = _text(sender.get("postal_address"))
    fixed = [cta, footer, address, _text(sender.get("company")), _text(sender.get("name")), _text(sender.get("email"))]
    lead_texts = [_text(v) for v in lead.values()]
    own_names = [_text(lead.get(k)) for k in ("company", "first_name", "last_name")] + [_text(sender.get("company"))]
    text = f"{subject}\n{body}"
    own_text = _strip(unicodedata.normalize("NFC", text), own_names)
    norm_text, norm_body = _norm(text), _norm(body)
    allowed_texts = [*claims, *fixed]

    # -- truthfulness: nothing invented, nothing promised --------------------------------------
    allowed_numbers = {n for t in [*allowed_texts, *lead_texts] for n in _NUMBER.findall(t)}
    invented = sorted(set(_NUMBER.findall(text)) - allowed_numbers)
    if invented:
        found.add("truthfulness", _HARD + 0.5 * (len(invented) - 1), f"numbers not in the angle's claims: {', '.join(invented)}")
    offers = _new_matches(_OFFER, own_text, allowed_texts)
    if offers:
        found.add("truthfulness", _HARD, f"an offer the claims do not make ({', '.join(offers)})")
    allowed_links = {m.group(0).rstrip(".,;:!?").lower() for t in allowed_texts for m in _URL.finditer(t)}
    links = sorted({m.group(0).rstrip(".,;:!?").lower() for m in _URL.finditer(text)} - allowed_links)
    if links:
        found.add("truthfulness", _HARD, f"a link the brief does not give ({links[0]})")
    promises = _new_matches(_PROMISE, own_text, allowed_texts)
    if promises:
        found.add("truthfulness", _HARD, f"promises results to the reader ({', '.join(repr(p) for p in promises)})")
    superlatives = _new_matches(_SUPERLATIVE, own_text, allowed_texts)
    if superlatives:
        found.add("truthfulness", 2, f"unverifiable superlative ({', '.join(repr(s) for s in superlatives)})")

    # -- tone: the campaign voice, no hype or pressure ------------------------------------------
    norm_own = _norm(own_text)
    banned = [p for p in brief.get("banned_phrases") or [] if _norm(_text(p)) and _norm(_text(p)) in norm_own]
    if banned:
        found.add("tone", _HARD + 0.5 * (len(banned) - 1), f"banned phrase {', '.join(repr(p) for p in banned)}")
    banned_norm = [_norm(_text(p)) for p in banned]
    hype = [h for h in _new_matches(_HYPE, own_text, allowed_texts) if not any(h in b for b in banned_norm)]
    if hype:
        found.add("tone", 2 if len(hype) == 1 else 3, f"hype ({', '.join(repr(h) for h in hype)})")
    known_caps = {w for t in [*allowed_texts, *lead_texts, _text(brief.get("offer"))] for w in _CAPS_WORD.findall(t)}
    shouted = [
        w
        for w in _CAPS_WORD.findall(own_text)
        if w not in known_caps and (len(w.replace("-", "").replace("'", "")) >= 5 or w in _SHOUT_SHORT)
    ]
    shouted_subject = [w for w in shouted if w in _CAPS_WORD.findall(_strip(subject, own_names))]
    if shouted:
        points = 3 if len(shouted) > 1 or shouted_subject else 2
        found.add("tone", points, f"shouting ({', '.join(dict.fromkeys(shouted))})")
    bangs = text.count("!")
    if re.search(r"!{2,}", text):
        found.add("tone", 3, "runs of exclamation marks")
    elif bangs >= 2:
        found.add("tone", 1 + 0.5 * (bangs - 2), f"{bangs} exclamation marks")
    pressure = [p for p in _new_matches(_PRESSURE, own_text, allowed_texts) if not any(p in b for b in banned_norm)]
    if pressure:
        found.add("tone", 3, f"pressure on the reader ({', '.join(repr(p) for p in pressure)})")
    max_words = brief.get("max_words")
    words = len(body.split())
    if isinstance(max_words, int) and words > max_words:
        found.add("tone", 1.5, f"rambling: {words} words, the campaign allows {max_words}")
    paragraphs = [_norm(p) for p in re.split(r"\n\s*\n", body) if len(p.split()) >= 8]
    if len(paragraphs) != len(set(paragraphs)):
        found.add("tone", 1.5, "repeats a paragraph")

    # -- relevance: this reader, this company, this angle ----------------------------------------
    greeting = _GREETING.match(body)
    first_name = _text(lead.get("first_name"))
    if _PLACEHOLDER.search(text):
        found.add("relevance", 4, f"unfilled placeholder {_PLACEHOLDER.search(text).group(0)!r}")
        found.add("compliance", 3, "unfilled placeholder")
    elif greeting is None:
        found.add("relevance", 1, "does not greet the reader by name")
    elif first_name and not _greeting_ok(greeting.group(1), lead):
        found.add("relevance", 4, f"greets {greeting.group(1).strip()!r} but the reader is {first_name!r}")
    company = _text(lead.get("company"))
    if company and _norm(company) not in norm_text:
        found.add("relevance", 1.5, f"never names the reader's company {company!r}")
    message_words = set(_words(text))
    if claims and not _claims_used(claims, message_words):
        found.add("relevance", 3, f"generic or off-angle: uses none of the {brief.get('angle') or 'angle'} claims")
    if isinstance(brief.get("min_words"), int) and words < brief["min_words"]:
        found.add("relevance", 1, f"thin: {words} words")

    # -- compliance: the parts every message must carry -----------------------------------------
    for label, required, points in (
        ("call to action", cta, 2),
        ("unsubscribe footer", footer, 3),
        ("postal address", address, 3),
    ):
        if required and _norm(required) not in norm_body:
            found.add("compliance", points, f"no {label}")
            if label == "call to action":
                found.add("relevance", 1, "asks the reader for nothing (no call to action)")
    return found


def _noise(rng: random.Random, strict: float) -> int:
    """The points a reviewer takes off a message with nothing wrong: mostly 0-1, rarely 2."""
    draw = rng.random()
    two, one = 0.01 + 0.06 * strict, 0.2 + 0.4 * strict
    return 2 if draw < two else 1 if draw < two + one else 0


def judge(brief: dict, lead: dict, message: dict, rng: random.Random, strict: float) -> dict:
    """Scores (1..5) for every criterion of `brief["rubric"]` and the reasons, from the brief, lead and message."""
    strict = min(1.0, max(0.0, float(strict)))
    rubric = list((brief.get("rubric") or {}).keys())
    lead = lead or {}
    message = message or {}
    subject, body = _text(message.get("subject")).strip(), _text(message.get("body")).strip()
    noise = [_noise(rng, strict) for _ in rubric]  # drawn first and always, so the stream never shifts
    if not subject and not body:
        return {"scores": {c: 1 for c in rubric}, "reasons": "There is no message to audit (no subject and no body)."}
    found = _inspect(brief, lead, subject, body)
    weight = 0.75 + 0.5 * strict
    scores: dict[str, int] = {}
    reasons: list[str] = []
    for criterion, drop in zip(rubric, noise):
        dim = dimension_of(criterion)
        points = found.overall() if dim == "overall" else found.points[dim]
        deduction = math.floor(points * weight + 0.5)
        scores[criterion] = max(1, min(5, 5 - deduction - drop))
        notes = found.notes.get(dim, []) if dim != "overall" else [n for notes in found.notes.values() for n in notes]
        if notes:
            reasons.append(f"{criterion} {scores[criterion]}: {'; '.join(notes)}")
        elif scores[criterion] < 5:
            reasons.append(f"{criterion} {scores[criterion]}: nothing wrong, could be more specific")
    if found.notes["compliance"] and not any(dimension_of(c) in {"compliance", "overall"} for c in rubric):
        reasons.append(f"also (not in the rubric): {'; '.join(found.notes['compliance'])}")
    if all(not notes for notes in found.notes.values()):
        used = len(_claims_used([_text(c) for c in brief.get("claims") or []], set(_words(f"{subject}\n{body}"))))
        summary = (
            f"Clean: greets {_text(lead.get('first_name')) or 'the reader'} by name, names "
            f"{_text(lead.get('company')) or 'the company'}, uses {used} of the angle's claims, "
            "invents nothing and keeps the voice."
        )
        reasons.insert(0, summary)
    return {"scores": scores, "reasons": " ".join(r if r.endswith(".") else r + "." for r in reasons)}
