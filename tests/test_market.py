"""The simulated market: deterministic, idempotent, realistic, and exported exactly once."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from factory_dagster.feedback.events import EVENT_TYPES
from factory_dagster.market import SimulatedMarket, find_defects
from factory_dagster.market.simulated import BOUNCE_RATE, JUNK_ROW_RATE, RESPONSE

SEGMENTS = ["scaleup_finance_leaders", "enterprise_finance", "operations_heavy", "general"]
ANGLES = ["close_speed", "fewer_errors", "team_time"]
FOOTER = 'Not relevant for you? Reply "unsubscribe" and we will not email you again.'
CLEAN_BODY = "Hi Ana,\n" + "Brightwave reconciles your ledgers every night. " * 10 + "\n" + FOOTER
DEFECTIVE_BODY = "Hi {first_name},\n" + "Brightwave reconciles your ledgers every night. " * 10
FIRST_DAY = date(2026, 3, 2)
N = 20_000
# The reply-rate trap: segment -> (angle with the most replies, angle with the most positive replies).
TRAPS = {"scaleup_finance_leaders": ("close_speed", "team_time"), "operations_heavy": ("team_time", "fewer_errors")}
PER_CELL = 12_000  # sends per (segment, angle) in the measured trap test


def make_sends(n: int, prefix: str = "snd", body: str = CLEAN_BODY, days: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "send_id": [f"{prefix}_{i:06d}" for i in range(n)],
            "sent_day": [FIRST_DAY + timedelta(days=i % days) for i in range(n)],
            "to_email": [f"lead{i}@{prefix}.example" for i in range(n)],
            "segment": [SEGMENTS[i % 4] for i in range(n)],
            "angle": [ANGLES[(i // 4) % 3] for i in range(n)],
            "prompt_version": ["draft-v1" if i % 2 else "draft-v2" for i in range(n)],
            "model": "offline-cheap",
            "subject": "Closing the month faster",
            "body": body,
        }
    )


def read_exports(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False).assign(file=p.name) for p in paths]
    return pd.concat(frames, ignore_index=True)


def real_rows(rows: pd.DataFrame, sends: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not planted junk, with parsed times and their send's day."""
    occurred = pd.to_datetime(rows["occurred_at"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce")
    ok = rows["send_id"].isin(sends["send_id"]) & rows["event_type"].isin(EVENT_TYPES) & occurred.notna()
    real = rows[ok].assign(occurred_at=occurred[ok])
    return real.merge(sends[["send_id", "sent_day", "segment", "angle"]], on="send_id")


def rate(events: pd.DataFrame, event_type: str, sends: int) -> float:
    return (events["event_type"] == event_type).sum() / sends


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """20k clean sends over 10 days, fully exported: (all exported rows, real events)."""
    root = tmp_path_factory.mktemp("clean")
    sends = make_sends(N)
    market = SimulatedMarket(root / "market")
    assert market.receive(sends) == N
    rows = read_exports(market.export_events(FIRST_DAY + timedelta(days=30), root / "inbox"))
    return rows, real_rows(rows, sends)


@pytest.fixture(scope="module")
def defective(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("defective")
    sends = make_sends(N, prefix="bad", body=DEFECTIVE_BODY)
    market = SimulatedMarket(root / "market")
    market.receive(sends)
    return real_rows(read_exports(market.export_events(FIRST_DAY + timedelta(days=30), root / "inbox")), sends)


def test_find_defects_reads_the_text() -> None:
    assert find_defects("Closing the month faster", CLEAN_BODY) == []
    assert find_defects("Hi [Company]", CLEAN_BODY) == ["placeholder"]
    assert find_defects("Hi", CLEAN_BODY.replace("Ana", "{{ first_name }}")) == ["placeholder"]
    assert find_defects("Hi", "Hi Ana, short note.") == ["no_unsubscribe"]
    assert find_defects("Hi", "word " * 171 + FOOTER) == ["too_long"]
    assert find_defects("Results guaranteed", CLEAN_BODY) == ["hype"]
    assert find_defects("Hi", "Act now! " + FOOTER) == ["hype"]


def test_realistic_b2b_rates(clean: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, events = clean
    bounce, reply = rate(events, "bounced", N), rate(events, "replied", N)
    assert 0.015 <= bounce <= 0.025
    assert rate(events, "delivered", N) == pytest.approx(1 - bounce)
    assert 0.40 <= rate(events, "opened", N) <= 0.50
    assert 0.01 <= reply <= 0.08
    assert 0.35 <= rate(events, "positive_reply", N) / reply <= 0.55
    assert 0.25 <= rate(events, "booked", N) / rate(events, "positive_reply", N) <= 0.45
    assert 0.003 <= rate(events, "unsubscribed", N) <= 0.01
    assert rate(events, "complained", N) < 0.003


def test_segment_and_angle_drive_replies(clean: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, events = clean
    replies = events[events["event_type"] == "replied"].groupby(["segment", "angle"]).size()
    # Every (segment, angle) cell has the same number of sends in make_sends.
    assert replies["scaleup_finance_leaders", "close_speed"] > 2 * replies["general", "close_speed"]
    assert replies["operations_heavy", "team_time"] > 2 * replies["enterprise_finance", "team_time"]


def test_hidden_reply_rate_table(tmp_path: Path) -> None:
    market, cell = SimulatedMarket(tmp_path), ("enterprise_finance", "fewer_errors")
    v1 = market.reply_rate(*cell, "draft-v1", defective=False)
    assert market.reply_rate(*cell, "draft-v2", defective=False) > v1
    assert market.reply_rate(*cell, "draft-v1", defective=True) == pytest.approx(0.4 * v1)
    new = market.reply_rate(*cell, "draft-v9", defective=False)  # unknown version: fixed, seed-derived lift
    assert 0.85 * v1 <= new < 1.15 * v1
    assert new == SimulatedMarket(tmp_path / "other").reply_rate(*cell, "draft-v9", defective=False)


def best_angle(market: SimulatedMarket, segment: str, metric: str) -> str:
    """The angle a learner optimising `metric` (per send, draft-v1) would pick, by the hidden model."""
    return max(ANGLES, key=lambda angle: market.expected_outcomes(segment, angle, "draft-v1")[metric])


def test_hidden_model_sets_the_reply_rate_trap(tmp_path: Path) -> None:
    """Where the trap is, the most replied-to angle earns fewer positive replies and more unsubscribes."""
    market = SimulatedMarket(tmp_path)
    for segment in SEGMENTS:
        by_replies, by_positives = best_angle(market, segment, "replied"), best_angle(market, segment, "positive_reply")
        assert (by_replies, by_positives) == TRAPS.get(segment, (by_positives, by_positives)), segment
    for segment, (trap, right) in TRAPS.items():
        trap_out = market.expected_outcomes(segment, trap, "draft-v2")
        right_out = market.expected_outcomes(segment, right, "draft-v2")
        assert trap_out["replied"] > 1.3 * right_out["replied"]
        assert trap_out["positive_reply"] < 0.75 * right_out["positive_reply"]
        assert trap_out["unsubscribed"] > 2 * right_out["unsubscribed"]
        assert trap_out["complained"] > right_out["complained"]
        # The prompt lift scales replies, not their positive share: v2 of the trap stays a trap.
        assert market.expected_positive_rate(segment, trap, "draft-v2") < market.expected_positive_rate(
            segment, right, "draft-v1"
        )


def test_every_cell_has_realistic_b2b_rates() -> None:
    for segment, cells in RESPONSE.items():
        for angle, cell in cells.items():
            assert 0.01 <= cell.reply <= 0.08, (segment, angle)
            assert 0.15 <= cell.positive_share <= 0.65, (segment, angle)
            assert 0.004 <= cell.unsubscribe <= 0.02, (segment, angle)
            assert cell.complaint < 0.0015, (segment, angle)


def test_oracle_agrees_with_the_send_model(tmp_path: Path) -> None:
    market, cell = SimulatedMarket(tmp_path), ("operations_heavy", "team_time")
    expected = market.expected_outcomes(*cell, "draft-v2")
    reply = market.reply_rate(*cell, "draft-v2", defective=False)
    assert expected["replied"] == pytest.approx((1 - BOUNCE_RATE) * reply)
    assert market.expected_positive_rate(*cell, "draft-v2") == pytest.approx(
        expected["replied"] * RESPONSE["operations_heavy"]["team_time"].positive_share
    )
    bad = market.expected_outcomes(*cell, "draft-v2", defective=True)
    assert bad["replied"] == pytest.approx(0.4 * expected["replied"])
    assert bad["complained"] > 5 * expected["complained"]


@pytest.fixture(scope="module")
def trap_events() -> tuple[pd.DataFrame, pd.DataFrame]:
    """PER_CELL clean draft-v1 sends to every angle of both trap segments: (sends, events)."""
    cells = [(segment, angle) for segment in TRAPS for angle in ANGLES]
    n = PER_CELL * len(cells)
    sends = make_sends(n, prefix="trap").assign(
        segment=[cells[i % len(cells)][0] for i in range(n)],
        angle=[cells[i % len(cells)][1] for i in range(n)],
        prompt_version="draft-v1",
    )
    return sends, SimulatedMarket(Path("never-written")).simulate(sends)


def test_reply_rate_trap_shows_in_the_events(trap_events: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Measured on events: optimising raw replies picks the trap, positive replies per send the right arm."""
    sends, events = trap_events
    counts = events.merge(sends[["send_id", "segment", "angle"]], on="send_id").pivot_table(
        index=["segment", "angle"], columns="event_type", values="send_id", aggfunc="count", fill_value=0
    )
    per_send = counts / PER_CELL
    market = SimulatedMarket(Path("never-written"))
    for segment, (trap, right) in TRAPS.items():
        measured = per_send.loc[segment]
        assert measured["replied"].idxmax() == trap, segment
        assert measured["positive_reply"].idxmax() == right, segment
        assert measured.at[trap, "unsubscribed"] > 2 * measured.at[right, "unsubscribed"]
        for angle in ANGLES:
            truth = market.expected_outcomes(segment, angle, "draft-v1")
            for metric in ("replied", "positive_reply", "unsubscribed"):
                tolerance = 4 * (truth[metric] / PER_CELL) ** 0.5  # 4 binomial standard errors
                assert measured.at[angle, metric] == pytest.approx(truth[metric], abs=tolerance), (segment, angle, metric)


def test_simulate_is_what_receive_stores(tmp_path: Path) -> None:
    market, sends = SimulatedMarket(tmp_path / "market"), make_sends(500)
    simulated = market.simulate(sends)
    assert not (tmp_path / "market").exists()
    market.receive(sends)
    stored = market._stored_events().drop(columns="batch")
    pd.testing.assert_frame_equal(simulated, stored[simulated.columns])
    # Stored beside each event: whom and what it is about, for the replies and webhook events.
    about = sends.set_index("send_id").loc[stored["send_id"], ["to_email", "subject"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(stored[["to_email", "subject"]], about)


def test_defective_messages_are_penalised(clean: tuple[pd.DataFrame, pd.DataFrame], defective: pd.DataFrame) -> None:
    _, good = clean
    assert rate(defective, "replied", N) < 0.6 * rate(good, "replied", N)
    assert rate(defective, "complained", N) > 3 * rate(good, "complained", N)
    assert rate(defective, "unsubscribed", N) > 2 * rate(good, "unsubscribed", N)


def test_events_arrive_one_to_seven_days_later_in_a_sensible_order(clean: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, events = clean
    delay = (events["occurred_at"].dt.normalize() - pd.to_datetime(events["sent_day"])).dt.days
    assert delay.between(1, 7).all()
    assert set(delay) == set(range(1, 8))

    per_send = events.pivot(index="send_id", columns="event_type", values="occurred_at")
    bounced = per_send["bounced"].notna()
    assert per_send[bounced].drop(columns="bounced").isna().all().all()
    assert (per_send["delivered"].notna() == ~bounced).all()
    chain = ["delivered", "opened", "replied", "positive_reply", "booked"]
    for earlier, later in zip(chain, chain[1:]):
        both = per_send[[earlier, later]].dropna()
        assert (both[earlier] < both[later]).all(), f"{earlier} after {later}"
    assert per_send["opened"][per_send["replied"].notna()].notna().all()
    negative = per_send[["unsubscribed", "complained"]]
    assert not (negative.notna().all(axis=1)).any()
    assert per_send["replied"][negative.notna().any(axis=1)].isna().all()


def test_junk_rows_are_planted_rarely(clean: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    rows, events = clean
    junk = rows[~rows["event_id"].isin(events["event_id"])]
    assert JUNK_ROW_RATE / 3 <= len(junk) / len(rows) <= JUNK_ROW_RATE * 2
    assert junk["send_id"].str.startswith("unknown-").any()
    assert (~junk["event_type"].isin(EVENT_TYPES)).any()
    assert pd.to_datetime(junk["occurred_at"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce").isna().any()
    assert rows["event_id"].is_unique


def test_same_seed_same_world_other_seed_other_world(tmp_path: Path) -> None:
    sends = make_sends(2_000)
    exports = {}
    for name, seed in [("a", 11), ("b", 11), ("c", 12)]:
        market = SimulatedMarket(tmp_path / name, seed=seed)
        market.receive(sends)
        paths = market.export_events(FIRST_DAY + timedelta(days=30), tmp_path / f"inbox_{name}")
        exports[name] = {p.name: p.read_bytes() for p in paths}
    assert exports["a"] == exports["b"]
    assert exports["a"] != exports["c"]


def test_receive_is_idempotent_per_send_id(tmp_path: Path) -> None:
    market = SimulatedMarket(tmp_path / "market")
    sends = make_sends(300)
    assert market.receive(sends.iloc[:200]) == 200
    assert market.receive(sends.iloc[:200]) == 0
    assert market.receive(pd.concat([sends, sends.iloc[:5]])) == 100
    rows = read_exports(market.export_events(FIRST_DAY + timedelta(days=30), tmp_path / "inbox"))
    real = real_rows(rows, sends)
    assert real["event_id"].is_unique
    assert set(real["send_id"]) == set(sends["send_id"])


def test_receive_requires_its_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="body"):
        SimulatedMarket(tmp_path).receive(make_sends(3).drop(columns="body"))


def test_export_never_duplicates_and_lets_late_sends_out(tmp_path: Path) -> None:
    market, inbox = SimulatedMarket(tmp_path / "market"), tmp_path / "inbox"
    early = make_sends(400, prefix="early", days=1)
    market.receive(early)
    cutoff = FIRST_DAY + timedelta(days=3)

    first = market.export_events(cutoff, inbox)
    assert [p.name for p in first] == [f"events_{FIRST_DAY + timedelta(days=d)}.csv" for d in (1, 2, 3)]
    assert market.export_events(cutoff, inbox) == []

    late = make_sends(400, prefix="late", days=1)  # sent the same day, received after the export
    market.receive(late)
    second = market.export_events(cutoff + timedelta(days=10), inbox)
    names = [p.name for p in second]
    assert f"events_{FIRST_DAY + timedelta(days=1)}_2.csv" in names
    assert f"events_{FIRST_DAY + timedelta(days=7)}.csv" in names
    assert market.export_events(cutoff + timedelta(days=10), inbox) == []

    rows = read_exports(first + second)
    assert rows["event_id"].is_unique
    assert (pd.to_datetime(read_exports(first)["occurred_at"], errors="coerce").dt.date.dropna() <= cutoff).all()
    sends = pd.concat([early, late])
    real = real_rows(rows, sends)
    assert set(real["send_id"]) == set(sends["send_id"])
    assert (real["event_type"].isin(["delivered", "bounced"])).sum() == len(sends)
    assert sorted(p.name for p in inbox.iterdir()) == sorted(p.name for p in first + second)
