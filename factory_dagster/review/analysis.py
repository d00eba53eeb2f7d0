"""What a person's edit of a message changed: distance, diff, sections, rule facts and phrases.

The text analysis runs here, once, when the edit is stored; `marts.edit_patterns` only counts
what these functions put in `raw.message_edits`, so the SQL stays plain.

- **Edit distance**: the Levenshtein distance between the old and the new text counted in *words*
  (subject and body together, split on whitespace), divided by the longer text's word count. 0 is
  unchanged, 1 is nothing kept in place. Words, not characters: an operator's change is a word
  swapped or a sentence cut, and a character count would weigh a long word above a short one.
- **Sections**: subject, greeting ("Hi Anna,"), hook (the first sentence after the greeting), body
  (the other sentences), call_to_action (the sentence carrying the spec's CTA) and footer (from the
  sign-off on: name, unsubscribe line, postal address). A section changed when its words did.
- **Changes**, per changed section: the facts the gate's rules look at that appear or disappear
  (`number`, `link`, `banned_phrase`, `claim` of the angle, `call_to_action`, `unsubscribe_footer`,
  `postal_address`, `company`, `greeting`), and the `phrase`s removed and added (word runs from a
  word-level diff, the lead's names masked as {first_name}, {last_name} and {company}, so the same
  change to two leads' messages is the same phrase).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factory_dagster.campaign.spec import Angle, CampaignSpec
from factory_dagster.gates.injection import mask
from factory_dagster.gates.rules import _GREETING as GREETING  # the gate's own notion of a greeting
from factory_dagster.gates.rules import banned_pattern, key_facts, spelled_numbers

SECTIONS = ("subject", "greeting", "hook", "body", "call_to_action", "footer")
REMOVED, ADDED = "removed", "added"
MAX_PHRASE_WORDS = 12
MIN_KEPT_WORDS = 3  # kept words between two changed runs that keep them apart
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
EDGE_PUNCTUATION = ".,;:!?\"'()[]…-–— "  # stripped from a word's edges when words are compared (review and content edit lessons)
_SIGN_OFF_WORDS = 3  # "Best,", "Kind regards," ... a short line ending in a comma just above the sender's name


@dataclass(frozen=True)
class Change:
    """One fact or phrase that disappeared from (`removed`) or appeared in (`added`) a section."""

    section: str
    kind: str
    change: str
    value: str

    def as_record(self) -> dict[str, str]:
        return {"section": self.section, "kind": self.kind, "change": self.change, "value": self.value}


@dataclass(frozen=True)
class EditAnalysis:
    edit_distance: float
    diff: str
    words_before: int
    words_after: int
    sections_changed: list[str]
    changes: list[Change]


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Insertions, deletions and substitutions that turn `a` into `b` (two rows of the classic table)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def word_edit_distance(old: str, new: str) -> float:
    """Word-level Levenshtein distance divided by the longer text's word count, in [0, 1]."""
    a, b = old.split(), new.split()
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def text_diff(old: str, new: str) -> str:
    """A line-level unified diff of two texts ("before" -> "after"); the content line's edits use it as is."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), "before", "after", lineterm="")
    return "\n".join(line.rstrip("\n") for line in lines)


def unified_diff(old_subject: str, old_body: str, new_subject: str, new_body: str) -> str:
    """A unified diff of the message as a person reads it: a Subject line, a blank line, the body."""
    return text_diff(f"Subject: {old_subject}\n\n{old_body}", f"Subject: {new_subject}\n\n{new_body}")


def _footer_start(lines: list[str], spec: CampaignSpec) -> int:
    """Index of the first footer line: the sender's name, the unsubscribe line or the address, with a sign-off above."""
    markers = [_norm(spec.required.unsubscribe_footer), _norm(spec.sender.postal_address)]
    name = _norm(spec.sender.name)
    for index, line in enumerate(lines):
        text = _norm(line)
        if text and (text.startswith(name) or any(m in text for m in markers)):
            above = index - 1
            while above >= 0 and not lines[above].strip():
                above -= 1
            sign_off = above >= 0 and lines[above].strip().endswith(",") and len(lines[above].split()) <= _SIGN_OFF_WORDS
            return above if sign_off else index
    return len(lines)


def split_sections(subject: str, body: str, spec: CampaignSpec) -> dict[str, str]:
    """The message cut into SECTIONS (an empty string for a section it lacks)."""
    sections = dict.fromkeys(SECTIONS, "")
    sections["subject"] = subject.strip()
    rest = body
    if greeting := GREETING.match(body):
        sections["greeting"], rest = greeting.group(0).strip(), body[greeting.end() :]
    lines = rest.split("\n")
    start = _footer_start(lines, spec)
    sections["footer"] = "\n".join(lines[start:]).strip()
    sentences = [s.strip() for s in _SENTENCE_BREAK.split("\n".join(lines[:start])) if s.strip()]
    cta = _norm(spec.required.call_to_action)
    calls = [s for s in sentences if cta in _norm(s)]
    others = [s for s in sentences if cta not in _norm(s)]
    sections["call_to_action"] = " ".join(calls)
    sections["hook"] = others[0] if others else ""
    sections["body"] = " ".join(others[1:])
    return sections


def rule_facts(text: str, spec: CampaignSpec, angle: Angle, lead: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, value) of what the gate's rules look at in `text`: figures, links, banned phrases, the angle's claims,
    the required texts, the lead's company and the name greeted."""
    if not text.strip():
        return set()
    norm = _norm(text)
    facts = {("number", f[4:]) for f in key_facts("-", text) if f.startswith("num:")}
    facts |= {("number", str(value)) for value, _ in spelled_numbers(text)}
    facts |= {("link", f[4:]) for f in key_facts("-", text) if f.startswith("url:")}
    facts |= {("banned_phrase", p) for p in spec.banned_phrases if banned_pattern(p).search(norm)}
    facts |= {("claim", c) for c in angle.claims if _norm(c).rstrip(".") in norm}
    required = {
        "call_to_action": spec.required.call_to_action,
        "unsubscribe_footer": spec.required.unsubscribe_footer,
        "postal_address": spec.sender.postal_address,
    }
    facts |= {(kind, "") for kind, required_text in required.items() if _norm(required_text) in norm}
    company = str(lead.get("company") or "")
    if company and _norm(company) in norm:
        facts.add(("company", "{company}"))
    if greeting := GREETING.match(text):
        facts.add(("greeting", _masked(greeting.group(1), lead).strip()))
    return facts


def _masked(text: str, lead: Mapping[str, Any]) -> str:
    """The lead's own names replaced by placeholders, so that edits of different leads' messages compare."""
    for field in ("company", "last_name", "first_name"):
        if value := str(lead.get(field) or "").strip():
            text = mask(text, [value], "{" + field + "}")
    return text


def _phrase(words: list[str]) -> str:
    text = " ".join(words).strip(EDGE_PUNCTUATION).casefold()
    if len(text.split()) > MAX_PHRASE_WORDS:
        text = " ".join(text.split()[:MAX_PHRASE_WORDS]) + " …"
    return text


def _change_spans(a: list[str], b: list[str]) -> list[tuple[int, int, int, int]]:
    """(i1, i2, j1, j2) of each changed run, runs joined across fewer than MIN_KEPT_WORDS kept words: a rewrite of
    "likely still takes over the first week" into "is the longest week" is one change, not four fragments."""
    spans: list[list[int]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if spans and i1 - spans[-1][1] < MIN_KEPT_WORDS:
            spans[-1][1], spans[-1][3] = i2, j2
        else:
            spans.append([i1, i2, j1, j2])
    return [(i1, i2, j1, j2) for i1, i2, j1, j2 in spans]


def phrase_changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed, added) word runs of a word-level diff; a run that only changed punctuation or case is not a change."""
    a, b = old.split(), new.split()
    removed, added = [], []
    for i1, i2, j1, j2 in _change_spans(a, b):
        gone, came = _phrase(a[i1:i2]), _phrase(b[j1:j2])
        if gone == came:
            continue
        if gone:
            removed.append(gone)
        if came:
            added.append(came)
    return removed, added


def analyse_edit(
    old_subject: str,
    old_body: str,
    new_subject: str,
    new_body: str,
    spec: CampaignSpec,
    angle: Angle,
    lead: Mapping[str, Any],
) -> EditAnalysis:
    """Everything `raw.message_edits` records about one edit besides who, when and why."""
    old_sections = split_sections(old_subject, old_body, spec)
    new_sections = split_sections(new_subject, new_body, spec)
    changed: list[str] = []
    changes: list[Change] = []
    for section in SECTIONS:
        old, new = old_sections[section], new_sections[section]
        if _norm(old) == _norm(new):
            continue
        changed.append(section)
        before, after = rule_facts(old, spec, angle, lead), rule_facts(new, spec, angle, lead)
        changes += [Change(section, kind, REMOVED, value) for kind, value in sorted(before - after)]
        changes += [Change(section, kind, ADDED, value) for kind, value in sorted(after - before)]
        removed, added = phrase_changes(_masked(old, lead), _masked(new, lead))
        changes += [Change(section, "phrase", REMOVED, p) for p in removed]
        changes += [Change(section, "phrase", ADDED, p) for p in added]
    old_text, new_text = f"{old_subject}\n{old_body}", f"{new_subject}\n{new_body}"
    return EditAnalysis(
        edit_distance=word_edit_distance(old_text, new_text),
        diff=unified_diff(old_subject, old_body, new_subject, new_body),
        words_before=len(old_body.split()),
        words_after=len(new_body.split()),
        sections_changed=changed,
        changes=changes,
    )
