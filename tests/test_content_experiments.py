"""A content piece's variants as an experiment of the loop's engine: opened, split adaptively, looked at, concluded."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from factory_dagster.content.experiments import (
    CALIBRATE_FROM_PIECES,
    EXPLORATION,
    EXPLORATIONS,
    KIND,
    Learned,
    allocate_day,
    calibrated_exploration,
    day_shares,
    decide_pieces,
    finished_pieces,
    learn,
    open_piece_experiments,
    piece_experiments,
    variant_counts,
)
from factory_dagster.content.prior import empty_prior
from factory_dagster.content.review import store_pieces
from factory_dagster.content.spec import load_content_spec
from factory_dagster.improve import store
from factory_dagster.run_context import RunContext
from factory_dagster.settings import PROJECT_ROOT
from factory_dagster.warehouse.store import connect, insert_rows

SPEC = load_content_spec(PROJECT_ROOT / "campaigns" / "content_brightwave.yaml")
CONTENT = SPEC.content_id
DAY = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 18, 0)
NOTHING = Learned(empty_prior(), {}, 0)

TEXTS = {  # piece p1: three headline variants; piece p2: one subject line alone
    "p1-a": "Close the month 4 days faster",
    "p1-b": "The month-end close that fails you, fixed",
    "p1-c": "How finance teams close in days, not weeks",
    "p2-a": "Your close, 4 days shorter",
}


def published(day: date = DAY) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "piece_id": variant[:2],
                "variant_id": variant,
                "channel": "email_subject" if variant.startswith("p2") else "headline",
                "segment": "general",
                "text": text,
                "day": day,
            }
            for variant, text in TEXTS.items()
        ]
    )


@pytest.fixture
def con(tmp_path: Path, engine_url: str | None):
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as connection:
        rows = (
            published()
            .drop(columns="day")
            .assign(topic="close_speed", gate_verdict="passed", violation_codes=[[]] * 4, claims_used=[[]] * 4, model="cheap")
        )
        store_pieces(connection, rows, content_id=CONTENT, day=DAY, run_id="r", spec_version="s1", audits=None)
        yield connection


def run(day: date) -> RunContext:
    return RunContext(f"run-{day}", day, CONTENT)


def engagement(con: duckdb.DuckDBPyConnection, day: date, counts: dict[str, tuple[int, int]]) -> None:
    """The day's impressions and clicks per headline variant, as the importers write them."""
    rows = [
        {"variant_id": v, "channel": "headline", "metric": m, "value": float(x), "day": day, "source": "test"}
        | {"source_file": "t.csv", "source_row": 1}
        for v, (shown, clicked) in counts.items()
        for m, x in (("impressions", shown), ("clicks", clicked))
    ]
    insert_rows(con, "content_engagement", run(day).stamp(pd.DataFrame(rows), "imported_at"))


def test_a_piece_with_variants_becomes_a_running_experiment_approved_with_the_spec(con) -> None:
    opened = open_piece_experiments(con, SPEC, published(), NOTHING, run(DAY), AT)
    assert [(e.kind, e.state, e.control, e.challengers) for e in opened] == [(KIND, "running", "p1-a", ("p1-b", "p1-c"))]
    (experiment,) = opened
    moves = [(e["from_state"], e["to_state"], e["actor"]) for e in store.experiment_events(con, experiment.experiment_id)]
    assert moves == [
        ("proposed", "approved", f"content spec {SPEC.spec_version}"),
        ("approved", "running", "content line (published)"),
    ]
    assert experiment.primary_metric == "click_rate" and experiment.layer == "content"
    assert open_piece_experiments(con, SPEC, published(), NOTHING, run(DAY), AT) == []  # a re-run opens nothing again
    assert set(piece_experiments(con, CONTENT)) == {"p1"}  # the lone subject line is no experiment


def test_the_split_follows_the_evidence_and_a_recorded_day_stands(con) -> None:
    open_piece_experiments(con, SPEC, published(), NOTHING, run(DAY), AT)
    first = allocate_day(con, SPEC, published(), NOTHING, run(DAY))
    shares = first.groupby("piece_id")["share"].sum()
    assert np.allclose(shares, 1.0) and first.set_index("variant_id").loc["p2-a", "share"] == 1.0
    assert first["experiment_id"].notna().sum() == 3
    engagement(con, DAY, {"p1-a": (1000, 10), "p1-b": (1000, 40), "p1-c": (1000, 12)})
    second = allocate_day(con, SPEC, published(), NOTHING, run(DAY + timedelta(days=1))).set_index("variant_id")
    assert second.loc["p1-b", "share"] > 0.9  # 4% against 1%: the leader takes nearly all of the next day
    assert second.loc["p1-b", "impressions_before"] == 1000 and second.loc["p1-b", "events_before"] == 40
    again = allocate_day(con, SPEC, published(), NOTHING, run(DAY))  # the first day re-run: its split stands
    pd.testing.assert_frame_equal(again.reset_index(drop=True), first.reset_index(drop=True), check_dtype=False)
    gone = day_shares(published(), variant_counts(con, CONTENT, DAY), {}, NOTHING, DAY + timedelta(days=3), 3, CONTENT)
    assert gone.empty  # the window is over: nothing is live


def test_the_last_day_of_the_window_is_the_final_look(con) -> None:
    open_piece_experiments(con, SPEC, published(), NOTHING, run(DAY), AT)
    daily = {"p1-a": (900, 9), "p1-b": (900, 27), "p1-c": (900, 10)}
    for offset in range(3):
        day = DAY + timedelta(days=offset)
        allocate_day(con, SPEC, published(), NOTHING, run(day))
        con.execute("UPDATE raw.content_allocations SET share = 1.0 / 3 WHERE day = ? AND piece_id = 'p1'", [day]).fetchall()
        engagement(con, day, daily)
        looks = decide_pieces(con, CONTENT, run(day), AT + timedelta(days=offset))
        assert [look.action for look in looks] == (["continue"] if offset < 2 else ["promote"])
        assert decide_pieces(con, CONTENT, run(day), AT + timedelta(days=offset)) == []  # one look a day
    (experiment,) = piece_experiments(con, CONTENT).values()
    assert experiment.state == "promoted" and experiment.winner == "p1-b"
    looks = con.execute("SELECT count(DISTINCT partition_day), count(*) FROM raw.experiment_looks").fetchone()
    assert looks == (3, 9)  # three days, a row per arm


def test_a_scheduler_that_ignored_the_split_rolls_the_experiment_back(con) -> None:
    open_piece_experiments(con, SPEC, published(), NOTHING, run(DAY), AT)
    allocate_day(con, SPEC, published(), NOTHING, run(DAY))
    con.execute(
        "UPDATE raw.content_allocations SET share = CASE variant_id WHEN 'p1-a' THEN 0.8 ELSE 0.1 END WHERE piece_id = 'p1'"
    ).fetchall()
    engagement(con, DAY, {"p1-a": (1000, 10), "p1-b": (1000, 11), "p1-c": (1000, 10)})  # shown evenly all the same
    (look,) = decide_pieces(con, CONTENT, run(DAY), AT)
    assert look.action == "roll_back" and "sample-ratio mismatch" in look.reasons
    assert piece_experiments(con, CONTENT)["p1"].state == "rolled_back"
    later = allocate_day(con, SPEC, published(), NOTHING, run(DAY + timedelta(days=1))).set_index("variant_id")
    assert later.loc["p1-a", "share"] == 1.0 and later.loc["p1-b", "share"] == 0.0  # the first variant keeps the piece


def test_finished_pieces_teach_the_prior_their_channel_rate(con) -> None:
    engagement(con, DAY, {"p1-a": (1000, 10), "p1-b": (1000, 30), "p1-c": (1000, 20)})
    counts = variant_counts(con, CONTENT, DAY + timedelta(days=5))
    assert finished_pieces(published(), counts, DAY + timedelta(days=2), 3).empty  # still in its window
    finished = finished_pieces(published(), counts, DAY + timedelta(days=3), 3)
    assert sorted(finished["variant_id"]) == ["p1-a", "p1-b", "p1-c"]  # the subject line had no deliveries
    learned = learn(finished)
    assert learned.pieces == 1 and learned.base_rate("headline") == pytest.approx(0.02)


def finished_frame(pieces: int, seed: int = 4) -> pd.DataFrame:
    """Finished headline pieces of three variants, one of them clearly better (as measured)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(pieces):
        best = rng.integers(3)
        for v in range(3):
            shown = int(rng.integers(2000, 4000))
            rate = 0.03 if v == best else 0.015
            rows.append(
                {"piece_id": f"f{p}", "variant_id": f"f{p}-{v}", "channel": "headline", "text": f"Headline {p} {v}"}
                | {"impressions": float(shown), "clicks": float(rng.binomial(shown, rate))}
            )
    return pd.DataFrame(rows)


def test_the_split_explores_as_the_line_own_finished_pieces_say_once_there_are_enough() -> None:
    assert calibrated_exploration(finished_frame(CALIBRATE_FROM_PIECES - 1), 3) == EXPLORATION  # too few: the default
    finished = finished_frame(CALIBRATE_FROM_PIECES + 20)
    chosen = calibrated_exploration(finished, 3)
    assert chosen in EXPLORATIONS and calibrated_exploration(finished, 3) == chosen  # seeded: the same again
    assert learn(finished, 3).exploration == chosen
