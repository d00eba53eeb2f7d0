"""The content line's gate: every rule a headline, subject line or LinkedIn post breaks, each with a code.

The rules are the outreach gate's, read from the content spec, plus what only public content
needs (nothing here calls a model; the premium audit reads what this flags):

- `too_long`, `hook_too_long`, `line_break`, `empty`: the channel's limits (a LinkedIn hook is
  the first non-blank line, cut off in the feed after `hook_max_chars`).
- `reading_grade`: the Flesch-Kincaid grade (`content.features.reading_grade`, links left out)
  above `reading_grade_max`.
- `banned_phrase`, `unfilled_placeholder`, `unsupported_number`, `unsupported_offer`,
  `unsupported_url`: the outreach gate's claim rules (`gates.rules.claim_violations`) against the
  piece's claims (its topic's, or all) and their sources. A claim cannot exist without a source
  (the spec refuses it), so a number that maps to a claim maps to a source.
- `unsupported_quote`: text in quotation marks that no allowed claim contains.
- `near_duplicate`: the piece shares more than `max_similarity` of its wording (Jaccard index of
  word 3-shingles, `gates.consistency`) with an already published piece.
- `voice_exclamation`, `voice_all_caps`, `voice_we`, `voice_hashtags`: the brand voice's
  mechanical checks.
- `planted_text`, `injected_brief` and the injection gate's own codes (`injected_instruction`,
  `markup`, `unsupported_contact`, `offensive_language`), `wrong_language`: for a brief built
  from outside text (`brief_source`, e.g. an article or a customer review), the piece must not
  repeat five words in a row of it, and a source that itself carries instructions flags the
  piece, whatever the piece says, so a person sees what the brief was built from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from factory_dagster.content.features import FIRST_PERSON, count_in, reading_grade, words
from factory_dagster.content.spec import Claim, ContentSpec
from factory_dagster.gates.consistency import shingles, similarity
from factory_dagster.gates.injection import injection_violations, language_violations, planted_runs, visible
from factory_dagster.gates.rules import _NUMBER, _URL, Violation, claim_violations, spelled_numbers

WE_WORDS = frozenset(w for w in FIRST_PERSON if w.startswith(("we", "us", "our")))
GATE_VERDICTS = ("passed", "flagged")  # flagged: the premium audit and a person see it before it may be published
# Text in quotation marks: straight or curly double quotes, guillemets, curly single quotes (not apostrophes).
_QUOTE = re.compile(r'"([^"\n]+)"|\u201c([^\u201d\n]+)\u201d|\u00ab([^\u00bb\n]+)\u00bb|\u2018([^\u2019\n]+)\u2019')
_HASHTAG = re.compile(r"(?<![\w#])#\w+")
_CAPS_WORD = re.compile(r"(?<![\w&])[A-Z][A-Z&]+(?![\w&])")


def hook_of(text: str) -> str:
    """The hook: the first non-blank line, what a feed shows before it cuts the post off."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def verdict(violations: Sequence[Violation]) -> str:
    """The gate verdict a piece's row carries: passed without violations, else flagged."""
    return GATE_VERDICTS[bool(violations)]


def _norm(text: str) -> str:
    return " ".join(visible(text).casefold().split())


def quotes(text: str) -> list[str]:
    """The quoted passages of a text, without their quotation marks."""
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTE.finditer(visible(text))]


def _allowed_numbers(claims: Sequence[Claim], fixed: Sequence[str]) -> frozenset[str]:
    """Numbers a piece may contain: written or spelled out in its claims, or in the brand's name."""
    texts = [c.text for c in claims]
    return frozenset(n for t in [*texts, *fixed] for n in _NUMBER.findall(t)) | frozenset(
        str(value) for t in texts for value, _ in spelled_numbers(t)
    )


def claims_used(text: str, spec: ContentSpec, topic: str | None = None) -> list[str]:
    """Ids of the allowed claims a piece draws on: one of its figures, a quote from it, or a link to its source."""
    numbers = set(_NUMBER.findall(_without_links(text))) | {str(v) for v, _ in spelled_numbers(text)}
    said = [_norm(q).strip(" .,;:!?") for q in quotes(text)]
    lowered = text.lower()
    used = []
    for claim in spec.claims_for(topic):
        own = set(_NUMBER.findall(claim.text)) | {str(v) for v, _ in spelled_numbers(claim.text)}
        if own & numbers or any(q and q in _norm(claim.text) for q in said) or claim.source.lower() in lowered:
            used.append(claim.id)
    return used


def _without_links(text: str) -> str:
    return _URL.sub(" ", visible(text))


def _channel_violations(text: str, channel: str, spec: ContentSpec) -> list[Violation]:
    limits = spec.channel(channel)
    found = []
    if len(text) > limits.max_chars:
        found.append(Violation("too_long", f"{len(text)} characters, the {channel} limit is {limits.max_chars}"))
    hook = hook_of(text)
    if (hook_limit := limits.hook_limit) is not None and len(hook) > hook_limit:
        found.append(
            Violation("hook_too_long", f"the hook (first line) has {len(hook)} characters, limit {hook_limit}: {hook[:50]!r}…")
        )
    if limits.single_line and "\n" in text.strip():
        found.append(Violation("line_break", f"a {channel} is one line, this has {len(text.strip().splitlines())}"))
    return found


def _quote_violations(text: str, claims: Sequence[Claim]) -> list[Violation]:
    claim_texts = [_norm(c.text) for c in claims]
    unsupported = [q for q in quotes(text) if not any(_norm(q).strip(" .,;:!?") in t for t in claim_texts)]
    if unsupported:
        return [Violation("unsupported_quote", f"quoted text not in any allowed claim: {unsupported[0]!r}")]
    return []


def _voice_violations(text: str, spec: ContentSpec) -> list[Violation]:
    checks = spec.brand.voice.checks
    found = []
    if (marks := text.count("!")) > checks.max_exclamation_marks:
        found.append(
            Violation("voice_exclamation", f"{marks} exclamation mark(s), the voice allows {checks.max_exclamation_marks}")
        )
    acronyms = set(checks.allowed_acronyms) | {w for w in spec.brand.name.split() if w.isupper()}
    caps = [w for w in _CAPS_WORD.findall(_without_links(text)) if w not in acronyms]
    if len(caps) > checks.max_all_caps_words:
        found.append(Violation("voice_all_caps", f"all-caps word(s) {caps[:3]}, the voice allows {checks.max_all_caps_words}"))
    if (we := count_in(words(text), WE_WORDS)) > checks.max_we_words:
        found.append(Violation("voice_we", f"{we} uses of we/us/our, the voice allows {checks.max_we_words}"))
    tags = _HASHTAG.findall(text)
    if len(tags) > checks.max_hashtags:
        found.append(
            Violation("voice_hashtags", f"{len(tags)} hashtags ({', '.join(tags[:4])}), the voice allows {checks.max_hashtags}")
        )
    return found


@functools.lru_cache(maxsize=4096)
def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    return shingles(visible(text))


def near_duplicate(text: str, published: Sequence[str], max_similarity: float) -> Violation | None:
    """The closest published piece when the piece shares more than `max_similarity` of its wording with it."""
    if max_similarity >= 1 or not published:
        return None
    own = _shingles(text)
    score, index = max((similarity(own, _shingles(p)), i) for i, p in enumerate(published))
    if score <= max_similarity:
        return None
    opening = " ".join(published[index].split()[:8])
    return Violation(
        "near_duplicate",
        f"shares {score:.0%} of its wording with published piece #{index} ({opening!r}…); the limit is {max_similarity:.0%}",
    )


def _source_violations(text: str, brief_source: str, allowed_texts: Sequence[str]) -> list[Violation]:
    """What an outside text the brief was built from could have planted: its words, its instructions."""
    found = [
        Violation("planted_text", f"repeats the brief's outside source word for word: {run!r}")
        for _, run in planted_runs(visible(text), {"note": brief_source}, allowed_texts)
    ]
    found += [
        Violation("injected_brief", f"the brief's outside source carries {v.detail}")
        for v in injection_violations("", brief_source, {})
        if v.code == "injected_instruction"
    ]
    return found


def check_piece(
    text: str,
    channel: str,
    spec: ContentSpec,
    published: Sequence[str] = (),
    brief_source: str | None = None,
    topic: str | None = None,
) -> list[Violation]:
    """Every rule the piece breaks (an empty list: it passes).

    `published`: the texts already published (any channel), for the near-duplicate rule.
    `brief_source`: the outside text the piece's brief was built from, if any.
    `topic`: the piece's topic, whose claims it may use (all of the spec's claims without one).
    """
    if not text or not text.strip():
        return [Violation("empty", f"the {channel} has no text")]
    if channel not in spec.channels.names:
        return [Violation("unknown_channel", f"channel {channel!r} is not in the spec; its channels are {spec.channels.names}")]
    claims = spec.claims_for(topic)
    claims_name = f"topic {topic!r}'s claims" if topic else "the spec's claims"
    fixed = [spec.brand.name, *([spec.brand.website] if spec.brand.website else [])]
    allowed_texts = [*(c.text for c in claims), *(c.source for c in claims), *fixed]
    # Links the claims allow are taken out before numbers are read: a source URL's digits are not a claim.
    allowed_links = {m.group(0).rstrip(".,;:!?").lower() for t in allowed_texts for m in _URL.finditer(t)}
    number_text = _URL.sub(lambda m: " " if m.group(0).rstrip(".,;:!?").lower() in allowed_links else m.group(0), text)

    found = _channel_violations(text, channel, spec)
    if (grade := reading_grade(_HASHTAG.sub(" ", _without_links(text)))) > spec.reading_grade_max:
        found.append(Violation("reading_grade", f"reading grade {grade:.1f}, the ceiling is {spec.reading_grade_max:g}"))
    found += claim_violations(
        number_text, text, spec.banned_phrases, allowed_texts, _allowed_numbers(claims, fixed), claims_name=claims_name
    )
    found += _quote_violations(text, claims)
    if duplicate := near_duplicate(text, published, spec.max_similarity):
        found.append(duplicate)
    found += _voice_violations(text, spec)
    found += injection_violations("", text, {}, allowed_texts=allowed_texts)
    if brief_source:
        found += _source_violations(text, brief_source, allowed_texts)
    found += language_violations("", text, spec.language, fixed_texts=fixed)
    return found
