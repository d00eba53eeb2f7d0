"""A simulated B2B market: it answers sends with delayed outcome events from a hidden model.

Why: the line must close its loop (send -> observe -> learn -> assign) without real
recipients, and the learn stage must be testable against a known truth. The model is
"hidden" because nothing else in Factory reads these constants: the marts and the
allocation policy have to rediscover them from the events alone.

The hidden response model, per send (every draw is a hash of seed + ids, never global
random state, so two markets with the same seed answer identically):

1. Bounce: 2% of recipient *addresses* hard-bounce. The draw is keyed on the address,
   not the send, so an address that bounced once bounces every time. A bounced send
   gets `bounced` on day +1 and nothing else; every other send gets `delivered` on day +1.
2. Opened with 45%, on day +1..+3.
3. Reply probability p = RESPONSE[segment][angle].reply x PROMPT_LIFT[prompt_version]
   x the hook's lift (x 0.4 for a defective message). Only opened messages are replied to, with
   P(reply | opened) = p / 0.45, so p is the reply rate per delivered send. Replies come
   0..6 days after the open (sooner is likelier), never later than day +7.
   `positive_reply` follows RESPONSE[segment][angle].positive_share of replies minutes
   later; the other replies are "not now", "wrong person" or "remove me" answers, which
   count as replies but never as positive. `booked` follows 35% of positive replies, on
   the same day or later (at most day +7).
4. Non-repliers may complain or unsubscribe at their cell's `complaint` and
   `unsubscribe` rates; a defective message multiplies these by 6 and 3. They follow the
   open, or come on day +1..+3 unopened.
5. The model used to draft a message has no direct effect: a cheap model shows through
   the defects it lets through (see `find_defects`).

The reply-rate trap: in two segments the angle that earns the most replies is not the one
that earns the most positive replies. Scale-up finance leaders answer `close_speed` often
but mostly to say their close is fast enough or to be removed, and they unsubscribe from it
three times as often; `team_time` earns fewer replies but more positive ones. The same holds
for `team_time` (trap) against `fewer_errors` in `operations_heavy`. So a learner that
optimises raw replies settles on the wrong arm there, and one that optimises positive
replies per send (with unsubscribes as a guardrail) settles on the right one. In
`enterprise_finance` and `general` the most replied-to angle is also the most positive.

People within a segment differ too (SUBGROUP_RESPONSE): in `general`, senior leads (C-level, VP,
Director) answer `close_speed` far better and `team_time` worse than the rest of the segment, so
the segment's best angle is not each lead's, and a segment split by seniority earns more. The
market reads the lead's attributes from a send's optional columns (e.g. `seniority`); a send
without them gets the segment's cell.

Benchmarks may score a policy against the truth through the oracle accessors
`expected_outcomes` and `expected_positive_rate`; the line itself never calls them.

Segments and angles the table does not know get DEFAULT_RESPONSE; prompt versions it does
not know get a fixed, seed-derived lift in [0.85, 1.15): a new prompt version has a real
but unknown effect that an experiment can find. So does a hook the improve stage wrote (a send's
optional `hook_version`, HOOK_LIFT); the planner's own hooks (no hook version) have none. Both
lifts act on replies only, not on their positive share.

Storage under `root`: one parquet file per `receive` call (`received/batch-NNNNNN.parquet`,
the future events of that call's new sends) and `export_state.json`, which records the
(day, batch) pairs already exported. A day's first export is `events_<D>.csv`; events of
batches received after that day was exported follow as `events_<D>_<n>.csv`, so late
sends still get out and nothing is exported twice.

Exports carry rare junk rows (JUNK_ROW_RATE, deterministic): extra rows with an unknown
send_id, an unsupported event_type or a malformed timestamp, so the importer's
quarantine is exercised on every realistic run. The real event is always exported too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from factory_dagster.market.feedback import deliver_day


@dataclass(frozen=True)
class CellResponse:
    """How one segment answers one angle (draft-v1, clean message).

    Why four numbers and not one: a cell can earn many replies that are mostly "remove me"
    (the reply-rate trap), so the positive share and the negative rates vary by cell too.
    """

    reply: float  # P(reply | delivered)
    positive_share: float  # P(positive_reply | reply)
    unsubscribe: float  # P(unsubscribed | delivered, no reply)
    complaint: float  # P(complained | delivered, no reply)


# Each segment prefers a different angle, so a learner has to learn per segment rather than
# find one global winner; in two segments the most replied-to angle is a trap (see above).
RESPONSE: dict[str, dict[str, CellResponse]] = {
    "scaleup_finance_leaders": {
        "close_speed": CellResponse(reply=0.065, positive_share=0.22, unsubscribe=0.018, complaint=0.0012),  # trap
        "fewer_errors": CellResponse(reply=0.035, positive_share=0.45, unsubscribe=0.006, complaint=0.0006),
        "team_time": CellResponse(reply=0.040, positive_share=0.60, unsubscribe=0.005, complaint=0.0006),
    },
    "enterprise_finance": {
        "close_speed": CellResponse(reply=0.025, positive_share=0.45, unsubscribe=0.007, complaint=0.0008),
        "fewer_errors": CellResponse(reply=0.050, positive_share=0.55, unsubscribe=0.005, complaint=0.0006),
        "team_time": CellResponse(reply=0.020, positive_share=0.40, unsubscribe=0.007, complaint=0.0008),
    },
    "operations_heavy": {
        "close_speed": CellResponse(reply=0.030, positive_share=0.45, unsubscribe=0.006, complaint=0.0008),
        "fewer_errors": CellResponse(reply=0.040, positive_share=0.60, unsubscribe=0.005, complaint=0.0006),
        "team_time": CellResponse(reply=0.060, positive_share=0.22, unsubscribe=0.016, complaint=0.0012),  # trap
    },
    "general": {
        "close_speed": CellResponse(reply=0.020, positive_share=0.45, unsubscribe=0.007, complaint=0.0008),
        "fewer_errors": CellResponse(reply=0.025, positive_share=0.45, unsubscribe=0.006, complaint=0.0008),
        "team_time": CellResponse(reply=0.030, positive_share=0.50, unsubscribe=0.006, complaint=0.0008),
    },
}
# (segment, lead attribute, the attribute values it applies to) -> the cells that differ for those leads.
SUBGROUP_RESPONSE: dict[tuple[str, str, frozenset[str]], dict[str, CellResponse]] = {
    ("general", "seniority", frozenset({"C-level", "VP", "Director"})): {
        "close_speed": CellResponse(reply=0.045, positive_share=0.55, unsubscribe=0.006, complaint=0.0008),
        "team_time": CellResponse(reply=0.018, positive_share=0.45, unsubscribe=0.007, complaint=0.0008),
    },
}
LEAD_ATTRIBUTES = tuple(sorted({attribute for _, attribute, _ in SUBGROUP_RESPONSE}))  # what a send may carry
DEFAULT_RESPONSE = CellResponse(reply=0.02, positive_share=0.45, unsubscribe=0.006, complaint=0.0008)
PROMPT_LIFT: dict[str, float] = {"draft-v1": 1.00, "draft-v2": 1.15}
UNKNOWN_PROMPT_LIFT = (0.85, 1.15)
HOOK_LIFT = (0.8, 1.25)  # a written hook can do clearly better or worse than the planner's

BOUNCE_RATE = 0.02
OPEN_RATE = 0.45
BOOKED_SHARE = 0.35
DEFECT_PENALTY = {"replied": 0.4, "complained": 6.0, "unsubscribed": 3.0}
JUNK_ROW_RATE = 0.003

MAX_WORDS = 170
HYPE_PHRASES = ("guaranteed", "guarantee", "act now", "risk-free", "limited time", "game-changer", "revolutionary")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_ ]*\}|\[[A-Za-z][A-Za-z _]*\]")

REQUIRED_COLUMNS = ("send_id", "sent_day", "to_email", "segment", "angle", "prompt_version", "subject", "body")
EXPORT_COLUMNS = ["event_id", "send_id", "event_type", "occurred_at"]
EXPORT_STATE = "export_state.json"  # the (day, batch) pairs let out as CSV exports
FEEDBACK_STATE = "feedback_state.json"  # ... and as webhook events, replies and CRM exports
_DAY = 24 * 60  # minutes
_WORK_START, _WORK_END = 8 * 60, 20 * 60
_JUNK_EVENT_TYPES = ("clicked", "deferred", "open")


def _cell(segment: str, angle: str, lead: Mapping[str, Any] | None) -> CellResponse:
    """How `segment` answers `angle`, for this lead: its subgroup's cell where one applies."""
    for (where, attribute, values), cells in SUBGROUP_RESPONSE.items():
        if where == segment and angle in cells and lead is not None and lead.get(attribute) in values:
            return cells[angle]
    return RESPONSE.get(segment, {}).get(angle, DEFAULT_RESPONSE)


def find_defects(subject: str, body: str) -> list[str]:
    """The market's own reading of a message: what makes real recipients ignore or report it."""
    defects = []
    if _PLACEHOLDER.search(subject) or _PLACEHOLDER.search(body):
        defects.append("placeholder")
    if "unsubscribe" not in body.lower():
        defects.append("no_unsubscribe")
    if len(body.split()) > MAX_WORDS:
        defects.append("too_long")
    text = f"{subject}\n{body}".lower()
    if any(phrase in text for phrase in HYPE_PHRASES):
        defects.append("hype")
    return defects


class SimulatedMarket:
    """Recipients that answer sends: `receive` what was sent, `export_events` what happened by a day."""

    def __init__(self, root: Path, seed: int = 11) -> None:
        self.root = Path(root)
        self.seed = seed

    # -- the hidden model ---------------------------------------------------------------

    def reply_rate(
        self,
        segment: str,
        angle: str,
        prompt_version: str,
        defective: bool,
        hook_version: str | None = None,
        lead: Mapping[str, Any] | None = None,
    ) -> float:
        """P(reply | delivered) for one send: the truth the learn stage tries to estimate."""
        return self._send_model(segment, angle, prompt_version, defective, hook_version, lead).reply

    def _send_model(
        self,
        segment: str,
        angle: str,
        prompt_version: str,
        defective: bool,
        hook_version: str | None = None,
        lead: Mapping[str, Any] | None = None,
    ) -> CellResponse:
        """The cell's response (the lead's subgroup's, if it has one) with the prompt and hook lifts and the
        defect penalties applied."""
        cell = _cell(segment, angle, lead)
        penalty = DEFECT_PENALTY if defective else {"replied": 1.0, "complained": 1.0, "unsubscribed": 1.0}
        lift = self._prompt_lift(prompt_version) * self.hook_lift(hook_version)
        return CellResponse(
            reply=cell.reply * lift * penalty["replied"],
            positive_share=cell.positive_share,
            unsubscribe=cell.unsubscribe * penalty["unsubscribed"],
            complaint=cell.complaint * penalty["complained"],
        )

    def hook_lift(self, hook_version: str | None) -> float:
        """A written hook's hidden effect on replies (1 for the planner's hook, `hook_version` None)."""
        if hook_version is None or pd.isna(hook_version):
            return 1.0
        low, high = HOOK_LIFT
        return low + (high - low) * _unit(self.seed, "hook_lift", hook_version)

    def _prompt_lift(self, prompt_version: str) -> float:
        if prompt_version in PROMPT_LIFT:
            return PROMPT_LIFT[prompt_version]
        low, high = UNKNOWN_PROMPT_LIFT
        return low + (high - low) * _unit(self.seed, "prompt_lift", prompt_version)

    # -- the oracle (benchmarks only) ---------------------------------------------------

    def expected_outcomes(
        self,
        segment: str,
        angle: str,
        prompt_version: str,
        defective: bool = False,
        hook_version: str | None = None,
        lead: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """Expected outcomes per send (bounces included) under the hidden model.

        For benchmarks only, to score a policy against the truth (e.g. the best arm per
        segment). The line must never call this: it has to learn from events alone.
        """
        model = self._send_model(segment, angle, prompt_version, defective, hook_version, lead)
        delivered = 1 - BOUNCE_RATE
        silent = delivered * (1 - model.reply)
        replied = delivered * model.reply
        positive = replied * model.positive_share
        return {
            "delivered": delivered,
            "replied": replied,
            "positive_reply": positive,
            "booked": positive * BOOKED_SHARE,
            "unsubscribed": silent * model.unsubscribe,
            "complained": silent * model.complaint,
        }

    def expected_positive_rate(
        self, segment: str, angle: str, prompt_version: str, lead: Mapping[str, Any] | None = None
    ) -> float:
        """Expected positive replies per send of a clean message (to this lead, when given): the primary
        metric's truth. For benchmarks only (see `expected_outcomes`).
        """
        return self.expected_outcomes(segment, angle, prompt_version, lead=lead)["positive_reply"]

    # -- one send's outcome -------------------------------------------------------------

    def _outcome(self, send_id: str, to_email: str, model: CellResponse) -> list[tuple[str, int]]:
        """(event_type, minutes after sent_day 00:00) for one send, in the order they happen."""

        def draw(name: str) -> float:
            return _unit(self.seed, send_id, name)

        delivered_at = _DAY + 6 * 60 + int(draw("delivered_at") * 180)  # day +1, 06:00-09:00
        if _unit(self.seed, "bounce", to_email.strip().lower()) < BOUNCE_RATE:
            return [("bounced", delivered_at)]
        events = [("delivered", delivered_at)]
        opened = draw("open") < OPEN_RATE
        open_day = 1 + int(draw("open_day") * 3)
        opened_at = _minute_after(delivered_at, open_day, draw("opened_at"))
        if opened:
            events.append(("opened", opened_at))
        if opened and draw("reply") < model.reply / OPEN_RATE:
            return events + self._reply_events(draw, open_day, opened_at, model.positive_share)
        negative = draw("negative")
        if negative >= model.complaint + model.unsubscribe:
            return events
        kind = "complained" if negative < model.complaint else "unsubscribed"
        if opened:
            return events + [(kind, _minute_after(opened_at, open_day, draw("negative_at")))]
        day = 1 + int(draw("negative_day") * 3)
        return events + [(kind, _minute_after(delivered_at, day, draw("negative_at")))]

    @staticmethod
    def _reply_events(
        draw: Callable[[str], float], open_day: int, opened_at: int, positive_share: float
    ) -> list[tuple[str, int]]:
        reply_day = open_day + _decaying_delay(draw("reply_delay"), 7 - open_day)
        replied_at = _minute_after(opened_at, reply_day, draw("replied_at"))
        events = [("replied", replied_at)]
        if draw("positive") >= positive_share:
            return events
        positive_at = replied_at + 1 + int(draw("positive_at") * 30)
        events.append(("positive_reply", positive_at))
        if draw("booked") >= BOOKED_SHARE:
            return events
        booked_day = reply_day + _decaying_delay(draw("booked_delay"), 7 - reply_day)
        return events + [("booked", _minute_after(positive_at, booked_day, draw("booked_at")))]

    # -- receiving sends ----------------------------------------------------------------

    def receive(self, deliveries: pd.DataFrame) -> int:
        """Decide and store the future events of sends not seen before; return how many were new.

        Extra columns (e.g. `model`) are ignored: the model acts only through the text; an optional
        `hook_version` (the written hook the message opened with) carries its hidden lift.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in deliveries.columns]
        if missing:
            raise ValueError(f"deliveries lack column(s): {', '.join(missing)}")
        new = deliveries.drop_duplicates("send_id")
        new = new[~new["send_id"].isin(self._received_send_ids())]
        if new.empty:
            return 0
        # Who and what each event is about, for the replies and webhook events (market/feedback.py).
        events = self.simulate(new).merge(new[["send_id", "to_email", "subject"]], on="send_id", how="left")
        batches = self.root / "received"
        batches.mkdir(parents=True, exist_ok=True)
        path = batches / f"batch-{len(list(batches.glob('batch-*.parquet'))) + 1:06d}.parquet"
        _write_atomically(path, lambda tmp: events.to_parquet(tmp, index=False))
        return len(new)

    def simulate(self, sends: pd.DataFrame) -> pd.DataFrame:
        """The events `receive` would store for these sends (EXPORT_COLUMNS), without storing them.

        Why public: a benchmark can replay many days of sends in memory and still get the
        market's own outcomes and delays, not a re-implementation of them.
        """
        rows = []
        sent_days = pd.to_datetime(sends["sent_day"]).dt.date
        hooks = sends["hook_version"] if "hook_version" in sends else pd.Series(None, index=sends.index, dtype=object)
        leads = sends.reindex(columns=list(LEAD_ATTRIBUTES)).to_dict("records")
        columns = sends[list(REQUIRED_COLUMNS)].itertuples(index=False)
        for send, sent_day, hook, lead in zip(columns, sent_days, hooks, leads, strict=True):
            defective = bool(find_defects(send.subject, send.body))
            model = self._send_model(send.segment, send.angle, send.prompt_version, defective, hook, lead)
            start = datetime.combine(sent_day, datetime.min.time())
            for event_type, minute in self._outcome(send.send_id, send.to_email, model):
                occurred_at = start + timedelta(minutes=minute)
                rows.append((_event_id(send.send_id, event_type), send.send_id, event_type, occurred_at))
        frame = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
        frame["occurred_at"] = pd.to_datetime(frame["occurred_at"])
        return frame

    def _received_send_ids(self) -> set[str]:
        return set(self._stored_events()["send_id"])

    def _stored_events(self) -> pd.DataFrame:
        frames = [
            pd.read_parquet(path).assign(batch=path.stem) for path in sorted((self.root / "received").glob("batch-*.parquet"))
        ]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in [*EXPORT_COLUMNS, "batch"]})
        return pd.concat(frames, ignore_index=True)

    # -- exporting events ---------------------------------------------------------------

    def _undelivered(
        self, until_day: date | str, state_name: str, events: pd.DataFrame | None = None
    ) -> Iterator[tuple[date, pd.DataFrame, list[str]]]:
        """Each day <= `until_day` with events of batches not yet let out through `state_name`'s door:
        (day, those events, the day's file names so far). The caller writes them; the state records
        the batches once the generator resumes, so a crash mid-write lets them out again, never loses them."""
        until_day = pd.Timestamp(until_day).date()
        events = self._stored_events() if events is None else events.copy()  # `events`: the stored ones, read already
        if events.empty:
            return
        events["day"] = events["occurred_at"].dt.date
        state = self._load_state(state_name)
        for day, day_events in events[events["day"] <= until_day].groupby("day", sort=True):
            done = state.setdefault(day.isoformat(), {"batches": [], "files": []})
            pending = day_events[~day_events["batch"].isin(done["batches"])]
            if pending.empty:
                continue
            yield day, pending, done["files"]
            done["batches"] = sorted({*done["batches"], *pending["batch"]})
            self._save_state(state, state_name)

    def export_events(self, until_day: date | str, inbox: Path) -> list[Path]:
        """Write the not yet exported events of every day <= `until_day`, one CSV per day and batch group.

        `until_day` may be anything pandas reads as a day (a date, a partition key string).
        """
        inbox = Path(inbox)
        inbox.mkdir(parents=True, exist_ok=True)
        written = []
        for day, pending, files in self._undelivered(until_day, EXPORT_STATE):
            suffix = f"_{len(files) + 1}" if files else ""
            path = inbox / f"events_{day.isoformat()}{suffix}.csv"
            export = self._with_junk(pending)
            _write_atomically(path, lambda tmp, frame=export: frame.to_csv(tmp, index=False))
            files.append(path.name)
            written.append(path)
        return written

    def deliver_feedback(
        self, until_day: date | str, from_address: str, esp_inbox: Path, replies_inbox: Path, crm_inbox: Path
    ) -> list[Path]:
        """Let the not yet delivered events of every day <= `until_day` out the way a real market's come:
        SendGrid webhook events, reply e-mails and a CRM export of bookings (market/feedback.py)."""
        if not (self.root / FEEDBACK_STATE).exists() and (self.root / EXPORT_STATE).exists():
            # A market from before these doors let its events out as CSV exports, which the line has
            # imported: those batches are out already, and letting them out again would double them.
            self._save_state(self._load_state(EXPORT_STATE), FEEDBACK_STATE)
        stored = self._stored_events()
        positive = set(stored.loc[stored["event_type"] == "positive_reply", "send_id"])
        written = []
        for day, pending, files in self._undelivered(until_day, FEEDBACK_STATE, stored):
            for column in ("to_email", "subject"):  # batches stored before these columns existed
                if column not in pending:
                    pending = pending.assign(**{column: None})
            pending = pending.assign(
                to_email=pending["to_email"].fillna(pending["send_id"] + "@recipient.invalid"),
                subject=pending["subject"].fillna("our message"),
                positive=pending["send_id"].isin(positive),
            )
            paths = deliver_day(
                pending.sort_values(["occurred_at", "event_id"]),
                lambda *parts: _unit(self.seed, *parts),
                from_address,
                esp_inbox,
                replies_inbox,
                crm_inbox,
                day,
            )
            files.extend(p.name for p in paths)
            written += paths
        return written

    def _with_junk(self, events: pd.DataFrame) -> pd.DataFrame:
        """The export rows in time order, each rare junk row right after the real row it imitates."""
        events = events.sort_values(["occurred_at", "event_id"])
        rows = []
        for event in events.itertuples(index=False):
            row = {
                "event_id": event.event_id,
                "send_id": event.send_id,
                "event_type": event.event_type,
                "occurred_at": event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            rows.append(row)
            if _unit(self.seed, "junk", event.event_id) < JUNK_ROW_RATE:
                rows.append(self._junk_row(row, event.occurred_at))
        return pd.DataFrame(rows, columns=EXPORT_COLUMNS)

    def _junk_row(self, row: dict[str, str], occurred_at: datetime) -> dict[str, str]:
        """A corrupt copy of `row` under its own event_id: one broken field, as ESP exports have."""
        junk = {**row, "event_id": _event_id(row["event_id"], "junk")}
        pick = _unit(self.seed, "junk_kind", row["event_id"])
        if pick < 1 / 3:
            junk["send_id"] = "unknown-" + _digest("ghost", row["send_id"])[:12]
        elif pick < 2 / 3:
            junk["event_type"] = _JUNK_EVENT_TYPES[int(pick * 9) % len(_JUNK_EVENT_TYPES)]
        else:
            junk["occurred_at"] = f"{occurred_at:%d/%m/%Y} 25:61"
        return junk

    def _load_state(self, name: str) -> dict[str, dict[str, list[str]]]:
        path = self.root / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _save_state(self, state: dict[str, dict[str, list[str]]], name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state, indent=1, sort_keys=True)
        _write_atomically(self.root / name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _digest(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).hexdigest()


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by `parts`: reproducible without any random state."""
    return int(_digest(*parts), 16) / 2**64


def _event_id(send_id: str, event_type: str) -> str:
    return f"evt_{_digest(send_id, event_type)}"


def _minute_after(previous: int, day: int, u: float) -> int:
    """A minute during working hours on `day` (days after sent_day), strictly after `previous`."""
    start = max(day * _DAY + _WORK_START, previous + 1)
    end = day * _DAY + _WORK_END
    return start + int(u * max(end - start, 0))


def _decaying_delay(u: float, max_days: int) -> int:
    """0..max_days, each day half as likely as the one before: most answers come quickly."""
    weights = [0.5**k for k in range(max_days + 1)]
    threshold = u * sum(weights)
    for days, weight in enumerate(weights):
        threshold -= weight
        if threshold < 0:
            return days
    return max_days


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Let `write` fill a temp file beside `path`, then rename it: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
