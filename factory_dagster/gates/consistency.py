"""Consistency with earlier output: what the lead and the lead's colleagues were already told.

Two rules look across messages rather than at one draft:

- `near_duplicate`: a message must not read like another one going to someone at the same
  company on the same day. Colleagues compare notes, and two copies with the names swapped
  read like a mail merge. Similarity is the Jaccard index of the word 3-shingles that remain
  once the names and the spec's fixed texts (call to action, footer, address, sign-off) are
  taken out, so the shared boilerplate does not count.
- `contradicts_earlier`: a sentence with a figure must not restate, with other figures, a
  sentence already sent to the same person or company (e.g. "up to 3 days faster" to one
  colleague after "up to 4 days faster" to another, when the spec's claims were edited in
  between). Sentences are matched on their words with the figures masked. A contradiction
  without a figure ("does not connect to SAP" against "connects to every ERP") is not seen
  here: the sampled audit is the check for that.

"Same company" is the same company name once case, punctuation and legal suffixes are set
aside, or the same e-mail domain (free-mail domains excepted).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Collection, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.work import UNSENT
from factory_dagster.gates.injection import mask, visible
from factory_dagster.gates.rules import Violation, fixed_texts
from factory_dagster.review.sendable import effective_messages
from factory_dagster.warehouse.dialect import is_postgres

NEAR_DUPLICATE = "near_duplicate"
CONTRADICTS_EARLIER = "contradicts_earlier"
CODES = frozenset({NEAR_DUPLICATE, CONTRADICTS_EARLIER})

_LEGAL_SUFFIXES = frozenset(
    "inc incorporated ltd limited llc llp plc gmbh ag kg sa sas sarl srl spa bv nv oy ab as a/s aps co corp corporation "
    "company pty kk".split()
)
FREE_MAIL_DOMAINS = frozenset(
    "gmail.com googlemail.com outlook.com hotmail.com live.com msn.com yahoo.com icloud.com me.com aol.com "
    "proton.me protonmail.com gmx.de gmx.net web.de mail.com yandex.ru qq.com 163.com".split()
)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_FIGURE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(%|[^\W\d_]+)?")
# Sentences about the same thing share most of their words once the figures are masked.
_SAME_STATEMENT = 0.6
_MIN_STATEMENT_WORDS = 3
REDACTED = "(name)"
RECENT_PROFILES = 16  # more than one lead's drafts in a round
# `load_earlier` reads what other campaigns already told the same companies and people: a gate running beside another
# campaign's would miss the messages that one stores meanwhile, and the blocking check reading them back afterwards
# would fail the day. From reading the earlier messages to storing and checking its own, a campaign's gate holds this
# warehouse lock (store.exclusive; a no-op on the DuckDB file, which has one writer).
CONSISTENCY_LOCK = "consistency"


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def company_key(company: str) -> str:
    """The company name without case, punctuation, '&'/'and' spelling or legal suffix: 'ACME Labs, Inc.' -> 'acme labs'."""
    words = re.findall(r"[^\W_]+(?:/[^\W_]+)?", _norm(company).replace("&", " and ").replace(".", ""))
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


def email_domain(email: str) -> str | None:
    """The e-mail's domain when it names a company (None for free-mail providers)."""
    domain = _norm(email).rpartition("@")[2].strip()
    return domain if domain and domain not in FREE_MAIL_DOMAINS else None


def recipient_keys(company: str, email: str) -> frozenset[str]:
    """The keys that tie messages together: the person, the company's name and its e-mail domain."""
    keys = {f"email:{_norm(email).strip()}"}
    if key := company_key(company):
        keys.add(f"company:{key}")
    if domain := email_domain(email):
        keys.add(f"domain:{domain}")
    return frozenset(keys)


@dataclass(frozen=True)
class Statement:
    """A sentence that states a figure: its words with figures masked, and the figures with their units."""

    text: str
    # Its distinct words, interned, as a tuple: a large day keeps a statement or two for each of its ~100,000
    # messages, and a frozenset of new strings took five times the memory.
    words: tuple[str, ...]
    figures: frozenset[str]

    def restated_by(self, words: AbstractSet[str]) -> bool:
        """Whether a sentence of these `words` (a set) is about the same thing."""
        return _jaccard(words, self.words) >= _SAME_STATEMENT


@dataclass(frozen=True)
class SentMessage:
    """A message already gated for a recipient: earlier days', or earlier in today's gate run."""

    lead_id: str
    email: str
    company: str
    first_name: str
    last_name: str
    subject: str
    body: str
    day: date
    sent_day: date | None = None

    @property
    def keys(self) -> frozenset[str]:
        """Where the message is filed: its company, its company's domain and its recipient."""
        return recipient_keys(self.company, self.email)

    @cached_property
    def redacted(self) -> str:
        """Subject and body with the recipient's own names replaced, so they can be shown to another lead's model
        (made once: every repair of a colleague's draft shows it again)."""
        return redact(f"{self.subject}\n{self.body}", (self.first_name, self.last_name))


@dataclass(frozen=True)
class _Profile:
    """What the checks compare of one message, computed once."""

    message: SentMessage
    # The distinct ids of its shingles (ConsistencyGate._shingle_ids) as a tuple: a quarter of a frozenset's size, as
    # fast to intersect with a set, and a large day keeps one for each of its ~100,000 messages.
    shingles: tuple[int, ...]
    statements: tuple[Statement, ...]


def redact(text: str, names: Iterable[str]) -> str:
    """`text` with each of `names` replaced by a mark (whole words, any case)."""
    return mask(visible(text), names, REDACTED)


def _own_wording(text: str, names: Iterable[str], fixed_texts: Iterable[str]) -> str:
    """`text` without the spec's fixed texts and the recipient's names: what differs by design is left out."""
    return mask(mask(visible(text), fixed_texts, "\n"), names)


def shingles(own_wording: str) -> frozenset[tuple[str, ...]]:
    """Word 3-shingles of a message's own wording (the words themselves when there are fewer than three)."""
    words = _WORD.findall(_norm(own_wording))
    if len(words) < 3:
        return frozenset((w,) for w in words)
    return frozenset(zip(words, words[1:], words[2:]))


def similarity(a: AbstractSet[Any], b: Collection[Any]) -> float:
    return _jaccard(a, b) if a and b else 0.0


def _jaccard(a: AbstractSet[Any], b: Collection[Any]) -> float:
    """|a ∩ b| / |a ∪ b| of a set and distinct items (a tuple will do), the union counted rather than built (a large
    company's drafts are compared thousands of times)."""
    shared = len(a.intersection(b))
    return shared / (len(a) + len(b) - shared)


def statements(own_wording: str) -> tuple[Statement, ...]:
    """The sentences of a message's own wording that state a figure."""
    found = []
    for sentence in _SENTENCE_BREAK.split(own_wording):
        norm = _norm(sentence)
        figures = frozenset(f"{number.replace(',', '.')} {unit or ''}".strip() for number, unit in _FIGURE.findall(norm))
        if not figures:  # most sentences state none: their words are not needed
            continue
        words = frozenset("#" if not w.isalpha() and any(c.isdigit() for c in w) else w for w in _WORD.findall(norm))
        if len(words) >= _MIN_STATEMENT_WORDS:
            found.append(Statement(" ".join(sentence.split()), tuple(map(sys.intern, words)), figures))
    return tuple(found)


class ConsistencyGate:
    """The messages each company (and person) already got, and the checks a new draft must pass against them."""

    def __init__(self, spec: CampaignSpec, day: date, earlier: Iterable[SentMessage] = ()) -> None:
        self.day = day
        self.max_similarity = spec.consistency.max_similarity
        self.fixed_texts = fixed_texts(spec)
        self._by_key: dict[str, list[_Profile]] = {}
        # Each distinct shingle once, with an id: a profile holds the ids. A large day keeps a profile for each of
        # its ~100,000 messages, and the shingles themselves (tuples of words) took most of a gigabyte.
        self._shingle_ids: dict[tuple[str, ...], int] = {}
        # The profiles `violations` made of the last drafts: `accept` takes the chosen one back instead of redoing it.
        self._recent: dict[SentMessage, _Profile] = {}
        for message in earlier:
            self._add(self._profile(message))

    def _profile(self, message: SentMessage) -> _Profile:
        names = (message.first_name, message.last_name, message.company)
        body = _own_wording(message.body, names, self.fixed_texts)
        # Similarity is the body's: a copied body under another subject still reads as a copy.
        ids = self._shingle_ids
        shingle_ids = tuple(ids.setdefault(shingle, len(ids)) for shingle in shingles(body))
        return _Profile(message, shingle_ids, statements(f"{_own_wording(message.subject, names, ())}\n{body}"))

    def _add(self, profile: _Profile) -> None:
        for key in profile.message.keys:
            self._by_key.setdefault(key, []).append(profile)

    def mark(self) -> dict[str, int]:
        """What the gate holds now, for `reference(lead, as_of=...)` to answer as of this moment later on."""
        return {key: len(profiles) for key, profiles in self._by_key.items()}

    def _related(self, lead: Any, as_of: dict[str, int] | None = None) -> list[_Profile]:
        seen: dict[str, _Profile] = {}
        for key in recipient_keys(str(lead.company or ""), str(lead.email or "")):
            profiles = self._by_key.get(key, [])
            for profile in profiles if as_of is None else profiles[: as_of.get(key, 0)]:  # only ever appended to
                if profile.message.lead_id != lead.lead_id:
                    seen.setdefault(profile.message.lead_id, profile)
        return sorted(seen.values(), key=lambda p: (p.message.day, p.message.lead_id))

    def _same_day(self, message: SentMessage) -> bool:
        """Goes out today: gated today, sent today, or still waiting in the outbox."""
        return message.day == self.day or message.sent_day in (None, self.day)

    def violations(self, lead: Any, subject: str, body: str) -> list[Violation]:
        """What a draft for `lead` repeats or contradicts of the messages its company already got."""
        related = self._related(lead)
        if not related:
            return []
        draft = self._profile(message_for(lead, subject, body, self.day))
        if len(self._recent) >= RECENT_PROFILES:
            self._recent.clear()
        self._recent[draft.message] = draft
        found: list[Violation] = []
        email = _norm(draft.message.email)
        own_shingles = frozenset(draft.shingles)
        own_statements = [(new, frozenset(new.words)) for new in draft.statements]
        for profile in related:
            earlier = profile.message
            if self._same_day(earlier) and (score := similarity(own_shingles, profile.shingles)) > self.max_similarity:
                found.append(
                    Violation(
                        NEAR_DUPLICATE,
                        f"{score:.0%} the same wording as the message to {_who(earlier, email)} going out today (lead {earlier.lead_id}); "
                        f"the limit is {self.max_similarity:.0%}",
                    )
                )
            for new, words in own_statements:
                old = next((s for s in profile.statements if s.figures != new.figures and s.restated_by(words)), None)
                if old is not None:
                    found.append(
                        Violation(
                            CONTRADICTS_EARLIER,
                            f"says {new.text!r} where the message of {earlier.day} to {_who(earlier, email)} (lead {earlier.lead_id}) "
                            f"said {old.text!r}",
                        )
                    )
        return found

    def accept(self, lead: Any, subject: str, body: str) -> None:
        """Remember a message accepted today, so the next drafts for the same company are checked against it."""
        message = message_for(lead, subject, body, self.day)
        self._add(self._recent.pop(message, None) or self._profile(message))

    def reference(self, lead: Any, as_of: dict[str, int] | None = None) -> dict[str, Any] | None:
        """The data block a repair or escalation gets: what the company was already told, names redacted
        (as of a `mark()`, when given)."""
        related = self._related(lead, as_of)
        if not related:
            return None
        return {"messages": [{"day": str(p.message.day), "text": p.message.redacted} for p in related]}


def _who(earlier: SentMessage, email: str) -> str:
    """Who got `earlier`, as a finding names them to the draft's recipient (whose e-mail is `email`, normalised)."""
    return "this person" if _norm(earlier.email) == email else f"a colleague at {earlier.company}"


def message_for(lead: Any, subject: str, body: str, day: date, sent_day: date | None = None) -> SentMessage:
    """The message with that subject and body for a lead (anything with lead_id, email, company and names)."""
    return SentMessage(
        lead_id=lead.lead_id,
        email=str(lead.email or ""),
        company=str(lead.company or ""),
        first_name=str(lead.first_name or ""),
        last_name=str(getattr(lead, "last_name", "") or ""),
        subject=subject,
        body=body,
        day=day,
        sent_day=sent_day,
    )


def load_earlier(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date, work: Any) -> ConsistencyGate:
    """The gate for `day`, holding the messages already gated for the people and companies of `work` (any campaign).

    Left out: messages of later days (a backfill looks back, not forward), messages older than
    the spec's lookback, and today's unsent messages of this campaign (the gate rewrites those).
    Keys are matched in Python (company names need normalising), bodies fetched only for matches.
    """
    since = day - timedelta(days=spec.consistency.lookback_days)
    candidates = con.execute(
        f"""SELECT a.message_id, l.company, a.to_email
            FROM raw.messages a JOIN raw.leads l USING (campaign_id, lead_id)
            WHERE a.partition_day BETWEEN $since AND $day
              AND NOT (a.partition_day = $day AND a.campaign_id = $campaign AND {UNSENT})""",
        {"since": since, "day": day, "campaign": spec.campaign_id},
    ).fetchall()
    wanted = frozenset().union(*(recipient_keys(str(w.company), str(w.email)) for w in work.itertuples()))
    ids = [message_id for message_id, company, email in candidates if recipient_keys(company, email) & wanted]
    earlier = (
        con.execute(
            # The text that went or will go: an operator's edit included (review/sendable.py).
            f"""SELECT m.lead_id, m.to_email, l.company, l.first_name, coalesce(l.last_name, ''), m.subject, m.body,
                      m.partition_day, s.partition_day
               FROM {effective_messages(is_postgres(con))} m JOIN raw.leads l USING (campaign_id, lead_id) LEFT JOIN raw.sends s USING (send_id)
               WHERE m.message_id = ANY($ids::VARCHAR[])
               ORDER BY m.partition_day, m.lead_id""",
            {"ids": ids},
        ).fetchall()
        if ids
        else []
    )
    return ConsistencyGate(spec, day, [SentMessage(*row) for row in earlier])


def stored_inconsistencies(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """The day's unsent messages checked again, against each other and what their companies got before.

    One row per finding (lead_id, code, detail); empty when the stored messages are consistent.
    """
    todays = con.execute(
        f"""SELECT a.lead_id, a.to_email AS email, l.company, l.first_name, coalesce(l.last_name, '') AS last_name,
                   a.subject, a.body
            FROM raw.messages a JOIN raw.leads l USING (campaign_id, lead_id)
            WHERE a.partition_day = $day AND a.campaign_id = $campaign AND {UNSENT}
            ORDER BY a.lead_id""",
        {"day": day, "campaign": spec.campaign_id},
    ).df()
    gate = load_earlier(con, spec, day, todays)
    findings = []
    for message in todays.itertuples():
        findings += [
            {"lead_id": message.lead_id, "code": v.code, "detail": v.detail}
            for v in gate.violations(message, message.subject, message.body)
        ]
        gate.accept(message, message.subject, message.body)
    return pd.DataFrame(findings, columns=["lead_id", "code", "detail"])
