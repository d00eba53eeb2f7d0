"""A simulated audience for the content line: it answers published pieces from a hidden engagement model.

Why: the content line must close its loop (publish -> engagement -> learn -> next briefs) in the
demo and the tests without a LinkedIn page or a GA4 property, against a truth it has to rediscover.
It is the content line's twin of `market.simulated`: nothing else in Factory reads these constants.

The hidden model, per published variant (draws are seeded by a hash of seed + ids + day, never
global random state, so two audiences with the same seed answer identically):

1. Reach: each (segment, channel) has a mean of impressions a post gets in a day (x a seeded
   log-normal day factor) and a base click rate (for `email_subject`: the open rate).
2. Headline effects: the click rate is base x exp(sum of effect x (feature - reference)) over the
   features of `content.features` (of a LinkedIn post's hook, its first line, as that is what the
   feed shows; of the whole text otherwise), with effects that differ by segment: finance leaders
   reward numbers and punish questions, enterprise readers like questions and dislike negative
   words, operations readers reward "you" and negative words, the general audience is Upworthy-like
   (negative words and simpler wording help). Plus a seeded per-text factor (log-normal, sd 0.15):
   features never explain all of why one headline beats another. The lift is clipped to [0.25, 4].
3. Engagement follows: reactions, comments and reposts per impression grow with the square root of
   the lift; of the clicks, 85% become GA4 sessions, 60% of those are engaged, 8% of engaged
   sessions make a key event. E-mail subjects: delivered sends are opened at the subject's rate
   and 12% of openers click.

Exports for a day: `linkedin/linkedin_<day>.csv` (LinkedIn post-analytics shape) and
`ga4/ga4_<day>.csv` (GA4 shape, with its `#` preamble and a row of other traffic), the shapes
`content.engagement` reads. They carry rare junk rows (JUNK_ROW_RATE, deterministic) beside the
real ones: an unreadable count, more clicks than impressions, a post or utm_content nobody
published, so the importers' quarantine is exercised. `expected_click_rate` is the oracle, for
benchmarks and tests only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from factory_dagster.content.features import features, shown_text
from factory_dagster.content.publish import SCHEDULED_CHANNELS, write_atomically


@dataclass(frozen=True)
class Reach:
    impressions: float  # mean impressions of one post in a day (e-mail: sends per subject variant)
    click_rate: float  # P(click | impression); for email_subject P(open | delivered)


REACH: dict[str, dict[str, Reach]] = {
    "scaleup_finance_leaders": {
        "linkedin_post": Reach(1800, 0.012),
        "headline": Reach(1200, 0.020),
        "email_subject": Reach(400, 0.38),
    },
    "enterprise_finance": {
        "linkedin_post": Reach(2500, 0.008),
        "headline": Reach(1500, 0.015),
        "email_subject": Reach(600, 0.30),
    },
    "operations_heavy": {"linkedin_post": Reach(1400, 0.014), "headline": Reach(900, 0.022), "email_subject": Reach(350, 0.42)},
    "general": {"linkedin_post": Reach(3000, 0.010), "headline": Reach(2000, 0.018), "email_subject": Reach(800, 0.33)},
}
DEFAULT_SEGMENT = "general"
# Log-lift per unit of a feature, measured from REFERENCE (so a plain headline sits at the base rate).
EFFECTS: dict[str, dict[str, float]] = {
    "scaleup_finance_leaders": {"has_number": 0.30, "is_question": -0.25, "negative_words": 0.10, "reading_grade": -0.04},
    "enterprise_finance": {"has_number": 0.10, "is_question": 0.15, "negative_words": -0.20, "reading_grade": -0.02},
    "operations_heavy": {"second_person": 0.15, "negative_words": 0.20, "reading_grade": -0.07, "has_exclamation": -0.15},
    "general": {
        "negative_words": 0.12,
        "is_question": -0.10,
        "has_number": 0.035,
        "reading_grade": -0.04,
        "has_exclamation": -0.11,
    },
}
REFERENCE = {"reading_grade": 8.0}
LIFT_RANGE = (0.25, 4.0)
TEXT_NOISE_SD = 0.15
DAY_NOISE_SD = 0.25
REACTION_RATE, COMMENT_RATE, REPOST_RATE = 0.020, 0.003, 0.001
SESSION_SHARE, ENGAGED_SHARE, KEY_EVENT_SHARE = 0.85, 0.60, 0.08
EMAIL_CLICK_SHARE = 0.12
JUNK_ROW_RATE = 0.02
LINKEDIN_HEADER = ["Date", "Post title", "Post link", "Impressions", "Clicks", "Reactions", "Comments", "Reposts"]
GA4_HEADER = [
    "Session manual ad content",
    "Session source / medium",
    "Session campaign",
    "Sessions",
    "Engaged sessions",
    "Key events",
]
TITLE_CHARS = 200


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    return _digest(*parts) / 2**64


def _normal(*parts: object) -> float:
    """A standard normal draw keyed by the parts (Box-Muller on two hashed uniforms)."""
    u1, u2 = max(_unit(*parts, "a"), 1e-12), _unit(*parts, "b")
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


@dataclass(frozen=True)
class AudienceDay:
    linkedin_path: Path
    ga4_path: Path
    truth: pd.DataFrame  # variant_id, channel, segment, metric, value: what really happened (tests and benchmarks)
    email_path: Path | None = None  # the ESP's event export, when subject lines were live


class SimulatedAudience:
    """Readers that answer published variants: `answer_day` writes the day's LinkedIn and GA4 exports."""

    def __init__(
        self,
        seed: int = 12,
        junk_rate: float = JUNK_ROW_RATE,
        campaign: str = "factory-content",
        text_noise_sd: float = TEXT_NOISE_SD,
    ) -> None:
        self.seed, self.junk_rate, self.campaign, self.text_noise_sd = seed, junk_rate, campaign, text_noise_sd

    # -- the hidden model (oracle) ----------------------------------------------------------

    def _reach(self, segment: str | None, channel: str) -> Reach:
        return REACH.get(segment or DEFAULT_SEGMENT, REACH[DEFAULT_SEGMENT]).get(channel, REACH[DEFAULT_SEGMENT]["headline"])

    def lift(self, text: str, segment: str | None, channel: str) -> float:
        """How much this text moves the segment's base rate: feature effects x the text's own hidden factor."""
        effects: Mapping[str, float] = EFFECTS.get(segment or DEFAULT_SEGMENT, EFFECTS[DEFAULT_SEGMENT])
        shown = features(shown_text(text, channel))
        log_lift = sum(coef * (shown[name] - REFERENCE.get(name, 0.0)) for name, coef in effects.items())
        log_lift += self.text_noise_sd * _normal(self.seed, "text", segment, channel, " ".join(text.split()))
        return min(max(math.exp(log_lift), LIFT_RANGE[0]), LIFT_RANGE[1])

    def expected_click_rate(self, text: str, segment: str | None, channel: str) -> float:
        """Oracle: the true P(click | impression) (e-mail subjects: P(open | delivered)). Benchmarks and tests only."""
        return min(self._reach(segment, channel).click_rate * self.lift(text, segment, channel), 1.0)

    # -- answering a day --------------------------------------------------------------------

    def _rng(self, *parts: object) -> np.random.Generator:
        return np.random.default_rng(_digest(self.seed, *parts))

    def respond(self, published: pd.DataFrame, day: date) -> pd.DataFrame:
        """The day's true counts per variant (one row per variant and metric).

        A variant gets its `share` of its piece's audience for the day (the content line's split,
        `content.experiments`); without a share column each variant is a piece alone and gets all of it.
        A piece's reach varies from day to day by one seeded factor, as a post's reach does.
        """
        rows = []
        for piece in published.sort_values("variant_id").to_dict("records"):
            segment, channel, variant = piece.get("segment"), piece["channel"], piece["variant_id"]
            reach, rate = self._reach(segment, channel), self.expected_click_rate(piece["text"], segment, channel)
            share = float(piece.get("share", 1.0))
            reach_factor = math.exp(DAY_NOISE_SD * _normal(self.seed, "reach", piece.get("piece_id", variant), day.isoformat()))
            rng = self._rng("respond", variant, day.isoformat())
            shown = int(rng.poisson(reach.impressions * share * reach_factor))
            if channel == "email_subject":
                opened = int(rng.binomial(shown, rate))
                counts = {"delivered": shown, "opened": opened, "clicked": int(rng.binomial(opened, EMAIL_CLICK_SHARE))}
            else:
                clicks = int(rng.binomial(shown, rate))
                social = math.sqrt(self.lift(piece["text"], segment, channel))
                sessions = int(rng.binomial(clicks, SESSION_SHARE))
                engaged = int(rng.binomial(sessions, ENGAGED_SHARE))
                counts = {
                    "impressions": shown,
                    "clicks": clicks,
                    "reactions": int(rng.binomial(shown, min(REACTION_RATE * social, 1.0))),
                    "comments": int(rng.binomial(shown, min(COMMENT_RATE * social, 1.0))),
                    "reposts": int(rng.binomial(shown, min(REPOST_RATE * social, 1.0))),
                    "sessions": sessions,
                    "engaged_sessions": engaged,
                    "key_events": int(rng.binomial(engaged, KEY_EVENT_SHARE)),
                }
            rows += [
                {"variant_id": variant, "channel": channel, "segment": segment, "metric": m, "value": v}
                for m, v in counts.items()
            ]
        return pd.DataFrame(rows, columns=["variant_id", "channel", "segment", "metric", "value"])

    def answer_day(self, published: pd.DataFrame, day: date, out_dir: Path) -> AudienceDay:
        """Write `out_dir/linkedin/linkedin_<day>.csv`, `out_dir/ga4/ga4_<day>.csv` and (for e-mail subject
        lines) `out_dir/email/email_<day>.csv` for the day's live variants (see `respond` for `share`)."""
        truth = self.respond(published, day)
        counts = truth.pivot_table(index="variant_id", columns="metric", values="value", aggfunc="sum")
        social = published[published["channel"].isin(SCHEDULED_CHANNELS)].sort_values("variant_id")
        linkedin, ga4 = [], []
        for piece in social.to_dict("records"):
            n, variant = counts.loc[piece["variant_id"]], piece["variant_id"]
            title = " ".join(piece["text"].split())[:TITLE_CHARS]
            post_link = (
                f"https://www.linkedin.com/feed/update/urn:li:activity:{_digest(self.seed, 'post', variant) % 10**19:019d}"
            )
            metrics = [n["impressions"], n["clicks"], n["reactions"], n["comments"], n["reposts"]]
            linkedin.append([f"{day:%m/%d/%Y}", title, post_link, *(str(int(v)) for v in metrics)])
            ga4.append(
                [
                    variant,
                    "linkedin / social",
                    self.campaign,
                    *(str(int(n[m])) for m in ("sessions", "engaged_sessions", "key_events")),
                ]
            )
            if self.junk_rate and _unit(self.seed, "junk", variant, day.isoformat()) < self.junk_rate:
                linkedin.append(self._linkedin_junk(linkedin[-1], variant, day))
                ga4.append(self._ga4_junk(ga4[-1], variant, day))
        other = self._rng("other", day.isoformat()).integers(200, 2000)
        ga4.append(["(not set)", "google / organic", "(organic)", str(other), str(other // 2), str(other // 40)])
        folder = Path(out_dir)
        linkedin_path, ga4_path = folder / "linkedin" / f"linkedin_{day}.csv", folder / "ga4" / f"ga4_{day}.csv"
        write_atomically(linkedin_path, _csv([LINKEDIN_HEADER, *linkedin]))
        preamble = f"# ----------------------------------------\n# Traffic acquisition\n# Start date: {day:%Y%m%d}\n# End date: {day:%Y%m%d}\n"
        write_atomically(ga4_path, (preamble + "\n").encode("utf-8") + _csv([GA4_HEADER, *ga4]))
        events = self._email_rows(truth[truth["channel"] == "email_subject"], day)
        email_path = None
        if not events.empty:
            email_path = folder / "email" / f"email_{day}.csv"
            write_atomically(email_path, events.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        return AudienceDay(linkedin_path, ga4_path, truth, email_path)

    def _linkedin_junk(self, real: list[str], variant: str, day: date) -> list[str]:
        kind = _unit(self.seed, "junk_kind", "linkedin", variant, day.isoformat())
        if kind < 1 / 3:
            return [*real[:3], "n/a", *real[4:]]  # an unreadable count
        if kind < 2 / 3:
            return [*real[:4], str(int(real[3]) + 5), *real[5:]]  # more clicks than impressions
        return [real[0], f"Reshared by a colleague: an older post nobody published today {variant}", *real[2:]]

    def _ga4_junk(self, real: list[str], variant: str, day: date) -> list[str]:
        kind = _unit(self.seed, "junk_kind", "ga4", variant, day.isoformat())
        if kind < 1 / 3:
            return [f"{variant}-copy", *real[1:]]  # a utm_content nobody published
        if kind < 2 / 3:
            return [*real[:3], "-3", *real[4:]]  # a negative count
        return [*real[:4], str(int(real[3]) + 7), *real[5:]]  # more engaged sessions than sessions

    def email_events(self, published: pd.DataFrame, day: date) -> pd.DataFrame:
        """E-mail events (raw.events columns plus variant_id and `clicked`) for the day's subject-line variants."""
        return self._email_rows(self.respond(published[published["channel"] == "email_subject"], day), day)

    def _email_rows(self, truth: pd.DataFrame, day: date) -> pd.DataFrame:
        """An ESP's event export for the subject lines' true counts: one row per delivery, open and click,
        plus, at the junk rate, a send's open reported twice (which the importer must credit once)."""
        rows = []
        for variant, group in truth.groupby("variant_id", sort=True):
            n = dict(zip(group["metric"], group["value"], strict=True))
            for i in range(n["delivered"]):
                send = f"send-{variant}-{day:%Y%m%d}-{i:05d}"
                types = ["delivered"] + ["opened"] * (i < n["opened"]) + ["clicked"] * (i < n["clicked"])
                rows += [
                    {
                        "event_id": f"ev-{send}-{t}",
                        "send_id": send,
                        "event_type": t,
                        "occurred_at": f"{day}T10:00:00Z",
                        "variant_id": variant,
                    }
                    for t in types
                ]
            if n["opened"] and self.junk_rate and _unit(self.seed, "junk", "email", variant, day.isoformat()) < self.junk_rate:
                send = f"send-{variant}-{day:%Y%m%d}-00000"
                rows.append({**rows[-1], "event_id": f"ev-{send}-opened-again", "send_id": send, "event_type": "opened"})
        return pd.DataFrame(rows, columns=["event_id", "send_id", "event_type", "occurred_at", "variant_id"])


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")
