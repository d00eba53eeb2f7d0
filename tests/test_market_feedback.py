"""The simulated market answers through the real doors: SendGrid webhook files, reply e-mails, a CRM export."""

from __future__ import annotations

import json
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pandas as pd
import pytest
from helpers_logic import gateway, registry
from test_market import FIRST_DAY, make_sends

from factory_dagster.delivery.eml import message_id_for
from factory_dagster.feedback.esp_events import map_sendgrid
from factory_dagster.market import SimulatedMarket
from factory_dagster.market.feedback import MACHINE_OPEN_RATE, REPLY_TEXTS
from factory_dagster.replies.classify import ClassifySettings, classify_replies
from factory_dagster.replies.text import clean_reply

SENDER = "maya@brightwave-ledger.example"
UNTIL = FIRST_DAY + timedelta(days=20)


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedMarket, pd.DataFrame, Path, list[Path]]:
    root = tmp_path_factory.mktemp("market")
    market, sends = SimulatedMarket(root / "market"), make_sends(1500)
    market.receive(sends)
    paths = market.deliver_feedback(UNTIL, SENDER, root / "esp", root / "replies", root / "crm")
    return market, sends, root, paths


def webhook_events(root: Path) -> list[dict]:
    events = []
    for path in sorted((root / "esp" / "sendgrid").glob("*.jsonl")):
        header, *lines = path.read_text(encoding="utf-8").splitlines()
        assert json.loads(header)["provider"] == "sendgrid" and json.loads(header)["events"] == len(lines)
        events += [json.loads(line) for line in lines]
    return events


def test_webhook_events_are_the_markets_outcomes_and_machine_opens_are_flagged(delivered) -> None:
    market, _, root, _ = delivered
    stored = market._stored_events()
    events = webhook_events(root)
    mapped = [map_sendgrid(e) for e in events]
    counted = {(m.send_id, m.event_type) for m in mapped if m.event_type}
    truth = stored[stored.event_type.isin(["delivered", "bounced", "opened", "unsubscribed", "complained"])]
    assert counted == set(zip(truth.send_id, truth.event_type, strict=True))
    machine = [m for m in mapped if m.skip and m.skip[0] == "machine_open"]
    delivered_sends = (stored.event_type == "delivered").sum()
    assert abs(len(machine) / delivered_sends - MACHINE_OPEN_RATE) < 0.03
    assert all(e["smtp-id"] == message_id_for(e["factory_send_id"]) for e in events)


def test_every_reply_is_an_email_in_reply_to_our_message_and_says_what_the_market_meant(delivered) -> None:
    market, sends, root, _ = delivered
    stored = market._stored_events()
    replied = set(stored.loc[stored.event_type == "replied", "send_id"])
    positive = set(stored.loc[stored.event_type == "positive_reply", "send_id"])
    emails = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted((root / "replies").glob("*.eml"))]
    people = [m for m in emails if "Auto-Submitted" not in m]
    assert {m["In-Reply-To"] for m in people} == {message_id_for(s) for s in replied} and len(people) == len(replied)
    assert all(m["From"] in set(sends.to_email) and m["To"] == SENDER for m in emails)
    positive_texts = set(REPLY_TEXTS["positive"])
    for m in people:
        own = clean_reply(m.get_content(), ())
        send_id = m["In-Reply-To"].strip("<>").split("@")[0]
        assert (own in positive_texts) == (send_id in positive)
    assert any("Auto-Submitted" in m for m in emails)  # out-of-office notices come too


def test_the_line_reads_the_markets_replies_as_meant(delivered) -> None:
    """What the classifier makes of the market's words is what the loop learns from: measure it."""
    market, _, root, _ = delivered
    stored = market._stored_events()
    positive = set(stored.loc[stored.event_type == "positive_reply", "send_id"])
    rows = []
    for path in sorted((root / "replies").glob("*.eml")):
        m = message_from_bytes(path.read_bytes(), policy=policy.default)
        rows.append(
            {
                "reply_id": path.stem,
                "text": m.get_content(),
                "subject": m["Subject"],
                "headers": dict(m.items()),
                "send": m["In-Reply-To"].strip("<>").split("@")[0],
                "auto": "Auto-Submitted" in m,
            }
        )
    frame = pd.DataFrame(rows)
    gw = gateway(registry())
    classes = classify_replies(gw, gw.run, frame, ClassifySettings())
    frame["class"] = classes["class"].to_numpy()
    people = frame[~frame.auto]
    read_positive = people["class"] == "positive"
    meant_positive = people["send"].isin(positive)
    assert (read_positive == meant_positive).mean() >= 0.9
    assert set(frame.loc[frame.auto, "class"]) <= {"out_of_office", "auto_reply"}


def test_bookings_leave_as_a_crm_export_and_nothing_twice(delivered) -> None:
    market, _, root, _ = delivered
    stored = market._stored_events()
    exports = pd.concat([pd.read_csv(p) for p in sorted((root / "crm").glob("*.csv"))], ignore_index=True)
    booked = stored[(stored.event_type == "booked") & (stored.occurred_at.dt.date <= UNTIL)]
    assert set(exports.event_id) == set(booked.event_id) and (exports.event_type == "booked").all()
    assert market.deliver_feedback(UNTIL, SENDER, root / "esp", root / "replies", root / "crm") == []


def test_only_days_up_to_the_cutoff_leave(tmp_path: Path) -> None:
    market = SimulatedMarket(tmp_path / "market")
    market.receive(make_sends(200, days=1))
    first = market.deliver_feedback(FIRST_DAY + timedelta(days=2), SENDER, tmp_path / "e", tmp_path / "r", tmp_path / "c")
    stored = market._stored_events()
    later = stored[stored.occurred_at.dt.date > FIRST_DAY + timedelta(days=2)]
    assert first and not later.empty
    rest = market.deliver_feedback(date(2030, 1, 1), SENDER, tmp_path / "e", tmp_path / "r", tmp_path / "c")
    assert rest and not set(first) & set(rest)


def test_a_market_that_exported_csv_before_lets_nothing_out_twice(tmp_path: Path) -> None:
    market = SimulatedMarket(tmp_path / "market")
    market.receive(make_sends(200, days=1))
    exported = market.export_events(FIRST_DAY + timedelta(days=3), tmp_path / "csv")
    assert exported
    doors = (tmp_path / "e", tmp_path / "r", tmp_path / "c")
    assert market.deliver_feedback(FIRST_DAY + timedelta(days=3), SENDER, *doors) == []
    assert market.deliver_feedback(date(2030, 1, 1), SENDER, *doors)  # the later days still come
