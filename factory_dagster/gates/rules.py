"""Rule checks a draft must pass before it may become a message, each with a reason code.

The rules come from the campaign spec: length bounds, required elements, banned
phrases, and claims — a number, price, discount or URL that the angle's claims do
not contain is an invented claim. Personal data must be the lead's own. Text planted in
the lead's fields, instructions, markup, foreign contact channels and the wrong language
are caught by `gates.injection`, which `check_draft` runs too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from factory_dagster.campaign.spec import Angle, CampaignSpec

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PLACEHOLDER = re.compile(r"\{\{?[^{}\n]*\}\}?|\[[A-Za-z][A-Za-z _]*\]|<<[^>]*>>|%\([a-z_]+\)s")
# The whole link (trailing sentence punctuation is stripped by _links), so that links can be compared: with a
# scheme (also the defanged "hxxp"), "www.", a domain with a path, or a bare domain under a common TLD.
_BARE_TLDS = "com|io|net|org|co|ly|me|ai|app|dev|info|biz|xyz|link|click|top|site|online|ru|cn|tk|example"
_URL = re.compile(
    r"(?:\b(?:https?|hxxps?|ftp)://|\bwww\.|(?<![\w@.-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}/"
    rf"|(?<![\w@.-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:{_BARE_TLDS})\b(?![@\w-]))[^\s<>\"'()]*",
    re.IGNORECASE,
)
_GREETING = re.compile(r"^\s*(?:hi|hello|dear|hey)\s+([^,\n]+),", re.IGNORECASE)
_SPAMMY_SUBJECT = re.compile(r"!{2,}|\$|\bfree\b|\burgent\b|\bre:|\bfwd?:|\bact now\b", re.IGNORECASE)
_SHOUTING = re.compile(r"\b[A-Z]{4,}\b")
_MONEY_WORDS = re.compile(r"\b(?:discount|free|cheaper|price|pricing|refund)\b|% off", re.IGNORECASE)
# Banned phrases are matched with their inflections: "guaranteed" also bans "we guarantee".
_INFLECTIONS = ("ing", "ary", "ed", "es", "er", "s", "y")
# Spelled-out numbers: an invented "thirty percent" is as invented as "30%".
_UNITS = dict(
    zip(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
        "eighteen nineteen".split(),
        range(1, 20),
        strict=True,
    )
)
_TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10), strict=True))
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
_NUMBER_WORDS = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_SCALES)
# A small spelled number counts as a figure only before one of these ("two weeks", not "two questions").
_QUANTITY_WORDS = frozenset(
    "percent per % days day weeks week months month years year hours hour minutes times customers clients teams "
    "companies dollars euros pounds".split()
)


@dataclass(frozen=True)
class Violation:
    code: str
    detail: str


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def word_count(text: str) -> int:
    return len(text.split())


def fixed_texts(spec: CampaignSpec) -> list[str]:
    """Every text the spec puts in each message the same way: its quotable texts plus the sender's name and e-mail."""
    return [*_spec_texts(spec), spec.sender.name, spec.sender.email]


def _spec_texts(spec: CampaignSpec) -> list[str]:
    """The spec's texts a message must or may quote verbatim."""
    return [spec.required.call_to_action, spec.required.unsubscribe_footer, spec.sender.postal_address, spec.sender.company]


# What every match of _URL contains: a scheme, "www." or a dot before two letters. Prose mostly has none, and
# searching for these first spares most drafts the full pattern, which tries four alternatives at every word.
_URL_MARK = re.compile(r"://|www\.|\.[a-z]{2}", re.IGNORECASE)


def _links(text: str) -> set[str]:
    if not _URL_MARK.search(text):
        return set()
    return {m.group(0).rstrip(".,;:!?").lower() for m in _URL.finditer(text)}


def _stem(word: str) -> str:
    for suffix in _INFLECTIONS:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _is_word(char: str) -> bool:
    """What `\\w` matches in a str pattern: a Unicode letter or digit, or the underscore."""
    return char.isalnum() or char == "_"


def _mention_starts(text: str, name: str) -> list[int]:
    """Every position where `name` stands as a whole word, overlapping ones too (as `(?=(?<!\\w)name(?!\\w))` finds
    them): found with `str.find` instead of a regex per name, which a large day compiled by the thousand."""
    starts, end = [], len(name)
    at = text.find(name)
    while at >= 0:
        if not (at and _is_word(text[at - 1])) and not (at + end < len(text) and _is_word(text[at + end])):
            starts.append(at)
        at = text.find(name, at + 1)
    return starts


def without_names(text: str, names: Sequence[str]) -> str:
    """`text` with each whole-word mention of `names` replaced by a space.

    The same as `re.sub(r"(?<!\\w)(?:name1|name2)(?!\\w)", " ", text)` with the names escaped: the leftmost
    mention first, the earlier name where two start together, scanning on after the replaced one. Done by hand
    because that pattern is one per lead: compiling it took more of a large day's gate than the rules it serves.
    """
    mentions = sorted((start, i) for i, name in enumerate(names) for start in _mention_starts(text, name))
    parts, cursor = [], 0
    for start, i in mentions:
        if start >= cursor:
            parts += [text[cursor:start], " "]
            cursor = start + len(names[i])
    parts.append(text[cursor:])
    return "".join(parts)


@lru_cache(maxsize=256)
def banned_pattern(phrase: str) -> re.Pattern[str]:
    """The phrase and its inflections, on normalised text: 'game-changer' also catches 'game changing',
    and "today's" (words joined by an apostrophe) is matched as written."""
    words = re.findall(r"[^\W_]+", _norm(phrase))
    parts = [re.escape(_stem(w)) + (r"\w*" if len(w) > 3 else "") for w in words]
    return re.compile(r"(?<!\w)" + r"[\s'’-]+".join(parts) + r"(?!\w)")


@lru_cache(maxsize=256)
def _banned_mark(phrase: str) -> str:
    """What every match of `banned_pattern(phrase)` contains: its first word's stem (a cheap test before the pattern)."""
    words = re.findall(r"[^\W_]+", _norm(phrase))
    return _stem(words[0]) if words else ""


def spelled_numbers(text: str) -> list[tuple[int, str]]:
    """(value, words) of each spelled-out figure in `text`: any number from ten up, smaller ones before a unit."""
    found: list[tuple[int, str]] = []
    words = re.findall(r"[^\W_]+|%", _norm(text).replace("-", " "))
    if _NUMBER_WORDS.isdisjoint(words):  # a figure starts with a number word: most texts have none
        return found
    i = 0
    while i < len(words):
        total = current = 0
        start = i
        while i < len(words) and (
            words[i] in _UNITS or words[i] in _TENS or words[i] in _SCALES or words[i] == "and" and i > start
        ):
            word = words[i]
            if word in _SCALES:
                current = max(current, 1) * _SCALES[word]
                if _SCALES[word] > 100:
                    total, current = total + current, 0
            elif word != "and":
                current += _UNITS.get(word, 0) + _TENS.get(word, 0)
            i += 1
        if i > start and words[i - 1] == "and":
            i -= 1
        if i == start:
            i += 1
            continue
        value = total + current
        after = words[i] if i < len(words) else ""
        if value >= 10 or (value >= 2 and after in _QUANTITY_WORDS):
            found.append((value, " ".join(words[start:i])))
    return found


def allowed_numbers(spec: CampaignSpec, angle: Angle, lead: Mapping[str, Any]) -> frozenset[str]:
    """Numbers a message may contain: the angle's claims, the fixed texts, the lead's own fields.

    Figures the claims or fixed texts spell out count too ("within two weeks" allows 2).
    """
    lead_names = (str(lead.get("company", "")), str(lead.get("first_name", "")))
    return (
        angle.allowed_numbers
        | _spec_numbers(tuple(angle.claims), tuple(_spec_texts(spec)))
        | frozenset(n for text in lead_names for n in _NUMBER.findall(text))
    )


@lru_cache(maxsize=256)
def _spec_numbers(claims: tuple[str, ...], spec_texts: tuple[str, ...]) -> frozenset[str]:
    """The fixed texts' numbers and the figures the claims or fixed texts spell out: the same for every draft of
    an angle, so found once per angle rather than once per draft."""
    return frozenset(n for text in spec_texts for n in _NUMBER.findall(text)) | frozenset(
        str(value) for text in (*claims, *spec_texts) for value, _ in spelled_numbers(text)
    )


def content_violations(text: str, own_text: str, spec: CampaignSpec, angle: Angle, allowed: frozenset[str]) -> list[Violation]:
    """What a text says beyond what the spec allows: banned phrases, unfilled placeholders, and numbers,
    offers or links the angle's claims do not have. `own_text` is `text` without the lead's trusted names
    (which may contain such words); `allowed` the numbers it may contain (`allowed_numbers`).

    Shared by the draft gate and the improve stage's check of a written hook: a hook may reword an
    angle, never add a claim (that needs a person to edit the spec).
    """
    return claim_violations(text, own_text, spec.banned_phrases, [*angle.claims, *_spec_texts(spec)], allowed)


def claim_violations(
    text: str,
    own_text: str,
    banned_phrases: Iterable[str],
    allowed_texts: Sequence[str],
    allowed: frozenset[str],
    claims_name: str = "the angle's claims",
) -> list[Violation]:
    """`content_violations` for any line: banned phrases, placeholders, and numbers, offer words or links
    beyond `allowed_texts` (the claims and fixed texts) and `allowed` (numbers). The content line calls it
    with its own spec's claims; `claims_name` names them in the details."""
    from factory_dagster.gates.injection import visible  # gates.injection builds on this module's Violation

    found = []
    norm_own_text = _norm(own_text)
    for phrase in banned_phrases:
        if _banned_mark(phrase) in norm_own_text and (match := banned_pattern(phrase).search(norm_own_text)):
            said = "" if match.group(0) == _norm(phrase) else f" (as {match.group(0)!r})"
            found.append(Violation("banned_phrase", f"contains banned phrase {phrase!r}{said}"))
    if match := _PLACEHOLDER.search(text):
        found.append(Violation("unfilled_placeholder", f"unfilled placeholder {match.group(0)!r}"))
    invented = sorted(set(_NUMBER.findall(text)) - allowed)
    invented += [f"{words} ({value})" for value, words in spelled_numbers(own_text) if str(value) not in allowed]
    if invented:
        found.append(Violation("unsupported_number", f"numbers not in {claims_name}: {', '.join(invented)}"))
    allowed_money, allowed_links = _allowed_offers(tuple(allowed_texts))
    money = sorted({m.group(0).lower() for m in _MONEY_WORDS.finditer(own_text)} - allowed_money)
    if money:
        found.append(Violation("unsupported_offer", f"offer words not in {claims_name}: {', '.join(money)}"))
    links = sorted(_links(visible(own_text)) - allowed_links)
    if links:
        found.append(Violation("unsupported_url", f"link {links[0]!r} is not allowed"))
    return found


@lru_cache(maxsize=256)
def _allowed_offers(allowed_texts: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """(offer words, links) the claims and fixed texts contain: the same for every draft of an angle, so found once."""
    from factory_dagster.gates.injection import visible

    money = frozenset(m.group(0).lower() for t in allowed_texts for m in _MONEY_WORDS.finditer(t))
    return money, frozenset(link for t in allowed_texts for link in _links(visible(t)))


def check_draft(
    subject: str | None, body: str | None, lead: Mapping[str, Any], spec: CampaignSpec, angle: Angle
) -> list[Violation]:
    """Every rule the draft breaks (empty list: it passes), the injection and language rules included.

    `lead` holds the lead's fields: first_name and company at least; with note, role, industry
    and last_name the planted-text rule can see what those fields could have planted.
    """
    # Imported here: gates.injection builds on this module's Violation.
    from factory_dagster.gates.injection import injection_violations, language_violations, trusted_name

    if not subject or not body:
        return [Violation("parse_error", "the answer had no subject or no body")]
    found: list[Violation] = []
    text = f"{subject}\n{body}"
    norm_body, norm_text = _norm(body), _norm(text)
    # The lead's own names may contain capitals or words the rules look for ("Free Now", "Synergy Health", "JEAN"),
    # unless the name itself carries an instruction, a link or an address (then it is planted text, not a name).
    company = str(lead.get("company") or "")
    own_names = [n for f in ("company", "first_name") if (n := str(lead.get(f) or "")) and trusted_name(n, f)]
    own_subject, own_text = without_names(subject, own_names), without_names(text, own_names)
    limits = spec.limits

    words = word_count(body)
    if words > limits.max_words:
        found.append(Violation("too_long", f"{words} words, limit {limits.max_words}"))
    if words < limits.min_words:
        found.append(Violation("too_short", f"{words} words, minimum {limits.min_words}"))
    if len(subject) > limits.max_subject_chars:
        found.append(Violation("subject_too_long", f"subject has {len(subject)} characters, limit {limits.max_subject_chars}"))
    if match := _SPAMMY_SUBJECT.search(own_subject) or _SHOUTING.search(own_subject):
        found.append(Violation("spammy_subject", f"subject contains {match.group(0)!r}"))
    for code, required in (
        ("missing_cta", spec.required.call_to_action),
        ("missing_unsubscribe", spec.required.unsubscribe_footer),
        ("missing_postal_address", spec.sender.postal_address),
    ):
        if _norm(required) not in norm_body:
            found.append(Violation(code, f"body lacks {required!r}"))
    found += content_violations(text, own_text, spec, angle, allowed_numbers(spec, angle, lead))
    greeting = _GREETING.match(body)
    first_name = str(lead.get("first_name") or "")
    if greeting is None:
        found.append(Violation("missing_greeting", "body does not open with a greeting by first name"))
    elif _norm(greeting.group(1)) != _norm(first_name):
        found.append(Violation("wrong_name", f"greets {greeting.group(1)!r}, the lead is {first_name!r}"))
    if company and _norm(company) not in norm_text:
        found.append(Violation("missing_company", f"does not mention the lead's company {company!r}"))
    found += injection_violations(subject, body, lead, allowed_texts=[*angle.claims, *fixed_texts(spec)])
    # Names are not language: the lead's (trusted) names are left out of the count like the spec's fixed texts.
    found += language_violations(subject, body, spec.language, fixed_texts=[*fixed_texts(spec), *own_names])
    return found


def key_facts(subject: str | None, body: str | None) -> frozenset[str]:
    """The facts a message commits to (greeting, numbers, links, required parts), for agreement scoring."""
    if not subject or not body:
        return frozenset()
    greeting = _GREETING.match(body)
    facts = {f"num:{n}" for n in _NUMBER.findall(body)}
    facts |= {f"url:{link}" for link in _links(body)}
    facts |= {f"placeholder:{m.group(0)}" for m in _PLACEHOLDER.finditer(body)}
    if greeting:
        facts.add(f"greets:{_norm(greeting.group(1))}")
    return frozenset(facts)


def agreement(facts: list[frozenset[str]]) -> list[float]:
    """Each candidate's mean Jaccard similarity with the others (1.0 when it stands alone)."""
    scores = []
    for i, own in enumerate(facts):
        others = [f for j, f in enumerate(facts) if j != i]
        if not others:
            scores.append(1.0)
            continue
        sims = [len(own & o) / len(own | o) if own | o else 1.0 for o in others]
        scores.append(sum(sims) / len(sims))
    return scores
