"""Event files: structural errors fail the file, row errors are quarantined, no row is lost."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pandera.errors
import pytest

from factory_dagster.feedback.events import (
    ACCEPTED_EVENTS_SCHEMA,
    EVENT_TYPES,
    REASON_CODES,
    EventFileError,
    ValidatedEvents,
    read_event_file,
    validate_events,
)
from factory_dagster.market import SimulatedMarket

HEADER = "event_id,send_id,event_type,occurred_at\n"
KNOWN_SENDS = {"snd_1", "snd_2"}


def write(tmp_path: Path, text: str, name: str = "events_2026-03-03.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def validate(path: Path, known_event_ids: set[str] = frozenset()) -> ValidatedEvents:
    return validate_events(read_event_file(path), KNOWN_SENDS, set(known_event_ids))


def assert_every_row_once(raw: pd.DataFrame, result: ValidatedEvents) -> None:
    accepted = set(zip(result.accepted["source_file"], result.accepted["source_row"]))
    quarantined = set(zip(result.quarantined["source_file"], result.quarantined["source_row"]))
    assert len(accepted) == len(result.accepted) and len(quarantined) == len(result.quarantined)
    assert not accepted & quarantined
    assert len(result.accepted) + len(result.quarantined) + result.already_imported == len(raw)


def test_reads_strings_with_source_file_and_row(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "evt_1,snd_1,opened,2026-03-03T10:00:00Z\n\nevt_2,snd_2,replied,007\n")
    raw = read_event_file(path)
    assert list(raw.columns) == ["event_id", "send_id", "event_type", "occurred_at", "source_file", "source_row"]
    assert raw["source_row"].tolist() == [2, 4]  # the header is row 1; the blank line keeps its number
    assert raw["source_file"].unique().tolist() == [str(path)]
    assert raw.loc[1, "occurred_at"] == "007"


def test_header_only_file_is_an_empty_batch(tmp_path: Path) -> None:
    result = validate(write(tmp_path, "\ufeff" + HEADER))  # a BOM, as spreadsheets write
    assert result.accepted.empty and result.quarantined.empty and result.already_imported == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("events.json", HEADER, "unsupported extension '.json'"),
        ("events.csv", "", "empty file"),
        ("events.csv", "event_id,send_id,occurred_at\nevt_1,snd_1,2026-03-03\n", "missing column(s) event_type"),
        ("events.csv", "event_id,event_id,send_id,event_type,occurred_at\n", "duplicate column(s) event_id"),
        ("events.csv", HEADER + "evt_1,snd_1,opened,2026-03-03T10:00:00Z\nevt_2,snd_1,opened\n", "row 3: 3 fields"),
    ],
)
def test_structural_errors_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = write(tmp_path, content, name)
    with pytest.raises(EventFileError) as error:
        read_event_file(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_undecodable_bytes_name_row_and_column(tmp_path: Path) -> None:
    text = HEADER + "evt_1,snd_1,opened,2026-03-03T10:00:00Z\nevt_2,Andr\u00e9,opened,2026\n"
    path = write(tmp_path, text, encoding="latin-1")
    with pytest.raises(EventFileError, match=r"row 3, column send_id: byte 0xe9") as error:
        read_event_file(path)
    assert isinstance(error.value, ValueError) and str(path) in str(error.value)


def test_each_defect_gets_its_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "evt_ok,snd_1,opened,2026-03-03T10:00:00Z\n"
        + ",snd_1,opened,2026-03-03T10:00:00Z\n"
        + "evt_b,snd_1,,2026-03-03T10:00:00Z\n"
        + "evt_c,snd_1,clicked,2026-03-03T10:00:00Z\n"
        + "evt_d,snd_1,opened,03/03/2026 25:61\n"
        + "evt_e,snd_9,opened,2026-03-03T10:00:00Z\n"
        + "evt_f,snd_1,opened,2026-03-03T10:00:00Z\n"
        + "evt_f,snd_1,replied,2026-03-03T11:00:00Z\n",
    )
    result = validate(path)
    assert result.accepted["event_id"].tolist() == ["evt_ok"]
    got = result.quarantined.set_index("source_row")
    assert got["reason_code"].to_dict() == {
        3: "missing_field",
        4: "missing_field",
        5: "bad_event_type",
        6: "bad_timestamp",
        7: "unknown_send_id",
        8: "duplicate_event",
        9: "duplicate_event",
    }
    assert got["column_name"].to_dict() == {
        3: "event_id",
        4: "event_type",
        5: "event_type",
        6: "occurred_at",
        7: "send_id",
        8: "event_id",
        9: "event_id",
    }
    assert "'clicked'" in got.at[5, "reason"] and "event_type" in got.at[5, "reason"]
    assert "'03/03/2026 25:61'" in got.at[6, "reason"]
    assert "'snd_9'" in got.at[7, "reason"]
    assert f"{path}:8" in got.at[8, "reason"] and f"{path}:9" in got.at[8, "reason"]
    assert json.loads(got.at[5, "raw_record"]) == {
        "event_id": "evt_c",
        "send_id": "snd_1",
        "event_type": "clicked",
        "occurred_at": "2026-03-03T10:00:00Z",
    }
    assert set(result.quarantined["reason_code"]) <= set(REASON_CODES)
    assert_every_row_once(read_event_file(path), result)


def test_timestamps_become_naive_utc_and_fields_are_trimmed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + " evt_1 , snd_1 ,opened,2026-03-03T10:00:00+02:00\nevt_2,snd_2,delivered,2026-03-03 07:30:00\n",
    )
    accepted = validate(path).accepted
    assert accepted["event_id"].tolist() == ["evt_1", "evt_2"]
    assert accepted["occurred_at"].tolist() == [pd.Timestamp("2026-03-03 08:00"), pd.Timestamp("2026-03-03 07:30")]
    assert ACCEPTED_EVENTS_SCHEMA.validate(accepted) is not None


def test_identical_repeats_in_a_batch_are_imported_once(tmp_path: Path) -> None:
    row = "evt_1,snd_1,opened,2026-03-03T10:00:00Z\n"
    first = write(tmp_path, HEADER + row + row, "a.csv")
    second = write(tmp_path, HEADER + row.replace("T10:00:00Z", "T10:00:00+00:00"), "b.csv")
    raw = pd.concat([read_event_file(first), read_event_file(second)], ignore_index=True)
    result = validate_events(raw, KNOWN_SENDS, set())
    assert result.accepted[["source_file", "source_row"]].values.tolist() == [[str(first), 2]]
    assert result.quarantined.empty and result.already_imported == 2


def test_reimporting_a_file_adds_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "evt_1,snd_1,opened,2026-03-03T10:00:00Z\nevt_2,snd_1,opened,soon\n")
    first = validate(path)
    again = validate(path, known_event_ids=set(first.accepted["event_id"]))
    assert again.accepted.empty
    assert again.already_imported == len(first.accepted) == 1
    # Rows that were quarantined come back the same; skip known files by hash to avoid re-quarantining.
    pd.testing.assert_frame_equal(again.quarantined, first.quarantined)


def test_known_event_ids_are_skipped_even_when_the_copy_is_damaged(tmp_path: Path) -> None:
    result = validate(write(tmp_path, HEADER + "evt_1,snd_1,opened,garbled\n"), known_event_ids={"evt_1"})
    assert result.accepted.empty and result.quarantined.empty and result.already_imported == 1


def test_schema_rejects_what_must_not_reach_the_warehouse() -> None:
    bad = pd.DataFrame(
        {
            "event_id": ["evt_1", "evt_1"],
            "send_id": ["snd_1", "snd_1"],
            "event_type": ["opened", "clicked"],
            "occurred_at": pd.to_datetime(["2026-03-03", "2026-03-03"]),
            "source_file": ["f.csv", "f.csv"],
            "source_row": [2, 3],
        }
    )
    with pytest.raises(pandera.errors.SchemaErrors) as error:
        ACCEPTED_EVENTS_SCHEMA.validate(bad, lazy=True)
    failed = set(error.value.failure_cases["column"])
    assert {"event_id", "event_type"} <= failed


def test_market_exports_import_cleanly_and_completely(tmp_path: Path) -> None:
    """End to end with the simulated market: every real event accepted, every junk row quarantined."""
    market = SimulatedMarket(tmp_path / "market", seed=5)
    first_day = date(2026, 3, 2)
    sends = pd.DataFrame(
        {
            "send_id": [f"snd_{i}" for i in range(4_000)],
            "sent_day": [first_day + timedelta(days=i % 5) for i in range(4_000)],
            "to_email": [f"lead{i}@example.com" for i in range(4_000)],
            "segment": "general",
            "angle": "team_time",
            "prompt_version": "draft-v1",
            "subject": "Hello",
            "body": 'Hi Ana. Reply "unsubscribe" to opt out.',
        }
    )
    market.receive(sends)
    paths = market.export_events(first_day + timedelta(days=20), tmp_path / "inbox")
    raw = pd.concat([read_event_file(p) for p in paths], ignore_index=True)

    result = validate_events(raw, set(sends["send_id"]), set())
    assert_every_row_once(raw, result)
    assert set(result.accepted["event_type"]) <= set(EVENT_TYPES)
    assert (
        result.accepted.groupby("send_id")["event_type"].apply(lambda t: ("delivered" in set(t)) != ("bounced" in set(t))).all()
    )
    assert len(result.accepted["send_id"].unique()) == len(sends)
    assert set(result.quarantined["reason_code"]) == {"unknown_send_id", "bad_event_type", "bad_timestamp"}

    half = set(result.accepted["event_id"].iloc[::2])
    partly = validate_events(raw, set(sends["send_id"]), half)
    assert set(partly.accepted["event_id"]) == set(result.accepted["event_id"]) - half
    assert_every_row_once(raw, partly)

    again = validate_events(raw, set(sends["send_id"]), set(result.accepted["event_id"]))
    assert again.accepted.empty and again.already_imported == len(result.accepted)
    assert_every_row_once(raw, again)
