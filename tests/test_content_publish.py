"""Publishing a day's content: the scheduler CSV, the JSON, UTM links and byte-for-byte idempotence."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from factory_dagster.content.publish import PublishError, publish_day, read_published, utm_link, variant_from_link

DAY = date(2024, 3, 4)


def pieces() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "piece_id": "p2",
                "variant_id": "p2-b",
                "channel": "linkedin_post",
                "segment": "general",
                "text": "Close in 5 days, not 12\nHow.",
            },
            {
                "piece_id": "p1",
                "variant_id": "p1-a",
                "channel": "headline",
                "segment": "general",
                "text": 'Why "fast" closes fail & what works',
            },
            {
                "piece_id": "p2",
                "variant_id": "p2-a",
                "channel": "linkedin_post",
                "segment": "general",
                "text": "Is your close too slow?\nBody.",
            },
            {
                "piece_id": "p3",
                "variant_id": "p3-a",
                "channel": "email_subject",
                "segment": "general",
                "text": "Your close, shorter",
            },
        ]
    )


def test_publish_writes_a_headerless_scheduler_csv_and_a_json_of_every_piece(tmp_path: Path) -> None:
    result = publish_day(
        pieces(), DAY, tmp_path, campaign="brightwave content", landing_url="https://brightwave.example/close?ref=x"
    )
    assert result.folder == tmp_path / "2024-03-04" and (result.pieces, result.scheduled) == (4, 3)
    rows = list(csv.reader(result.csv_path.open(encoding="utf-8", newline="")))
    # Hootsuite shape: date/time at five-minute steps, message, link; sorted by piece and variant; no e-mail subjects.
    assert [r[0] for r in rows] == ["04/03/2024 09:00", "04/03/2024 09:05", "04/03/2024 09:10"]
    assert [r[1] for r in rows] == [
        'Why "fast" closes fail & what works',
        "Is your close too slow?\nBody.",
        "Close in 5 days, not 12\nHow.",
    ]
    document = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert document["day"] == "2024-03-04" and [p["variant_id"] for p in document["pieces"]] == ["p1-a", "p2-a", "p2-b", "p3-a"]
    assert document["pieces"][3]["scheduled_at"] is None and document["pieces"][0]["scheduled_at"] == "2024-03-04T09:00"
    for row, piece in zip(rows, document["pieces"], strict=False):
        assert row[2] == piece["link"] and variant_from_link(row[2]) == piece["variant_id"]
    query = parse_qs(urlsplit(document["pieces"][3]["link"]).query)
    assert query == {
        "ref": ["x"],
        "utm_source": ["newsletter"],
        "utm_medium": ["email"],
        "utm_campaign": ["brightwave content"],
    } | {"utm_content": ["p3-a"]}
    assert "utm_campaign=brightwave+content" in document["pieces"][3]["link"]  # encoded, not raw
    assert list(read_published(result.folder)["variant_id"]) == ["p1-a", "p2-a", "p2-b", "p3-a"]


def test_utm_link_replaces_existing_utm_parameters_and_refuses_non_http() -> None:
    link = utm_link("https://a.example/p?utm_source=old&x=1#top", "v-1", "linkedin_post", "c&d")
    assert link == "https://a.example/p?x=1&utm_source=linkedin&utm_medium=social&utm_campaign=c%26d&utm_content=v-1#top"
    with pytest.raises(PublishError, match="not an http"):
        utm_link("javascript:alert(1)", "v", "headline", "c")


def test_republishing_is_byte_for_byte_and_order_free(tmp_path: Path) -> None:
    first = publish_day(pieces(), DAY, tmp_path)
    before = (first.csv_path.read_bytes(), first.json_path.read_bytes())
    again = publish_day(pieces().iloc[::-1], DAY, tmp_path)
    assert not again.changed and (again.csv_path.read_bytes(), again.json_path.read_bytes()) == before
    assert sorted(p.name for p in first.folder.iterdir()) == ["bulk_upload.csv", "pieces.json"]  # no temp files left
    edited = pieces()
    edited.loc[0, "text"] = "Close in 4 days"
    assert publish_day(edited, DAY, tmp_path).changed and first.csv_path.read_bytes() != before[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant_id": "bad id"}, r"row 1, column variant_id: 'bad id'"),
        ({"variant_id": "p1-a"}, r"row 2, column variant_id: 'p1-a' repeats row 1"),
        ({"channel": "tiktok"}, r"row 1, column channel: 'tiktok'"),
        ({"text": "  "}, r"row 1, column text: empty"),
        ({"url": "ftp://x"}, r"variant p2-b, column url"),
    ],
)
def test_bad_pieces_are_refused_naming_row_and_column(tmp_path: Path, change: dict, message: str) -> None:
    frame = pieces()
    for column, value in change.items():
        frame.loc[0, column] = value
    with pytest.raises(PublishError, match=message):
        publish_day(frame, DAY, tmp_path)
    assert not (tmp_path / "2024-03-04").exists()


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="lack column"):
        publish_day(pieces().drop(columns=["text"]), DAY, tmp_path)
