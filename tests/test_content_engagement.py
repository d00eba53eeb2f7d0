"""Engagement ingest: LinkedIn and GA4 exports and e-mail subject events, good rows kept, bad rows quarantined, none lost."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from factory_dagster.content.engagement import (
    EngagementFileError,
    Variants,
    email_subject_engagement,
    import_engagement_files,
    import_ga4,
    import_linkedin,
)
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import connect

DAY = date(2024, 3, 4)
VARIANTS = Variants.from_pieces(
    pd.DataFrame(
        {
            "variant_id": ["p1-a", "p1-b", "p2-a", "p3-a"],
            "channel": ["linkedin_post", "linkedin_post", "headline", "email_subject"],
            "text": [
                "Month-end close in five days, not twelve\nHere is how three teams did it.",
                "Is your month-end close taking too long?\nThree teams fixed it.",
                "The terrible truth about manual reconciliations",
                "Your close, shorter",
            ],
        }
    )
)
LINKEDIN_HEADER = "Date,Post title,Post link,Impressions,Clicks,Reactions,Comments,Reposts\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_linkedin_export_maps_posts_by_utm_or_title_and_quarantines_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path / "li.csv",
        LINKEDIN_HEADER
        + "03/04/2024,Month-end close in five days not twelve? no: Month-end close in five days,https://lnkd.in/x?utm_content=p1-b,"
        "1000,20,30,2,1\n"
        + '03/04/2024,"Month-end close in five days, not twelve Here is how",https://www.linkedin.com/feed/update/urn:li:activity:1,'
        '"1,200",12.0,10,1,0\n'
        + "03/04/2024,The terrible truth about manual reconciliations,https://li/2,800,900,5,0,0\n"  # clicks > impressions
        + "03/04/2024,The terrible truth about manual reconciliations,https://li/2,800,x,5,0,0\n"
        + "03/04/2024,Something we never published at all today,https://li/3,100,1,0,0,0\n"
        + "03/04/2024,Month-end close,https://li/4,100,1,0,0,0\n"  # too short a title to trust
        + "31/12/2024,The terrible truth about manual reconciliations,https://li/2,800,10,5,0,0\n"
        + "03/04/2024,The terrible truth about manual reconciliations,https://li/2,800,10,5,0,0\n"
        + "03/04/2024,The terrible truth about manual reconciliations,https://li/2,801,10,5,0,0\n",
    )
    result = import_linkedin(path, VARIANTS)
    accepted = result.accepted.pivot_table(index="variant_id", columns="metric", values="value")
    assert accepted.loc["p1-b", "impressions"] == 1000 and accepted.loc["p1-a", "impressions"] == 1200
    assert accepted.loc["p1-a", "clicks"] == 12 and accepted.loc["p2-a", "clicks"] == 10
    assert set(result.accepted["channel"]) == {"linkedin_post", "headline"} and set(result.accepted["day"]) == {DAY}
    assert set(result.accepted["metric"]) == {"impressions", "clicks", "reactions", "comments", "reposts"}
    quarantine = result.quarantined.set_index("source_row")
    assert quarantine["reason_code"].to_dict() == {
        4: "inconsistent",
        5: "bad_number",
        6: "unknown_post",
        7: "unknown_post",
        8: "bad_date",
        10: "duplicate_variant",
    }
    assert quarantine.loc[5, "column_name"] == "Clicks" and quarantine.loc[8, "column_name"] == "Date"
    assert "row 9" in quarantine.loc[10, "reason"] and '"Clicks": "x"' in quarantine.loc[5, "raw_record"]
    assert result.rows == 9 and result.accounted_rows() == 9


def test_linkedin_title_shared_by_two_variants_is_ambiguous(tmp_path: Path) -> None:
    twins = Variants(
        {"a": "linkedin_post", "b": "linkedin_post"}, {"a": "Close faster this quarter: A", "b": "Close faster this quarter: B"}
    )
    result = import_linkedin(
        write(tmp_path / "li.csv", LINKEDIN_HEADER + "03/04/2024,Close faster this quarter,u,10,1,0,0,0\n"), twins
    )
    assert result.accepted.empty and "matches 2 published variants" in result.quarantined["reason"].iloc[0]


GA4 = (
    "# ----------------------------------------\n# Traffic acquisition\n# Start date: 20240304\n# End date: 20240304\n\n"
    "Session manual ad content,Session source / medium,Session campaign,Sessions,Engaged sessions,Key events\n"
)


def test_ga4_export_keyed_by_utm_content(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ga4.csv",
        GA4
        + "p1-a,linkedin / social,factory-content,40,25,2\n"
        + "p1-a,lnkd.in / referral,factory-content,5,1,0\n"  # a second source of the same variant: both kept
        + "p2-a,linkedin / social,factory-content,30,12,1.00\n"
        + "p2-a,linkedin / social,factory-content,30,12,1\n"  # the same row again
        + "(not set),google / organic,(organic),900,450,20\n"
        + "p9-z,linkedin / social,factory-content,3,1,0\n"
        + "p1-b,linkedin / social,factory-content,-3,1,0\n"
        + "p1-b,linkedin / social,factory-content,3,4,0\n",
    )
    result = import_ga4(path, VARIANTS)
    sums = result.accepted.groupby(["variant_id", "metric"])["value"].sum()
    assert sums[("p1-a", "sessions")] == 45 and sums[("p1-a", "engaged_sessions")] == 26 and sums[("p2-a", "key_events")] == 1
    assert set(result.accepted["day"]) == {DAY} and set(result.accepted["source_row"]) == {7, 8, 9}  # preamble counted in rows
    codes = result.quarantined.set_index("source_row")["reason_code"].to_dict()
    assert codes == {10: "duplicate_row", 11: "no_utm_content", 12: "unknown_variant", 13: "bad_number", 14: "inconsistent"}
    assert result.rows == 8 and result.accounted_rows() == 8


@pytest.mark.parametrize(
    ("text", "encoding", "message"),
    [
        ("", "utf-8", r"empty file"),
        ("Post title,Impressions\nx,1\n", "utf-8", r"missing column\(s\) 'clicks'"),
        (LINKEDIN_HEADER + "03/04/2024,a,b,1,2\n", "utf-8", r"li\.csv, row 2: 5 fields, but the header has 8"),
        (LINKEDIN_HEADER + "03/04/2024,caf\u00e9 post,b,1,2,0,0,0\n", "latin-1", r"li\.csv, row 2, column Post title: byte 0xe9"),
        (LINKEDIN_HEADER.replace("Date,", "") + "a,b,1,2,0,0,0\n", "utf-8", r"no Date column and no day given"),
    ],
)
def test_bad_linkedin_files_are_named_with_row_and_column(tmp_path: Path, text: str, encoding: str, message: str) -> None:
    with pytest.raises(EngagementFileError, match=message):
        import_linkedin(write(tmp_path / "li.csv", text, encoding), VARIANTS)


def test_bad_ga4_file_and_a_ga4_file_without_a_day(tmp_path: Path) -> None:
    with pytest.raises(EngagementFileError, match=r"ga4\.csv, row 7: 3 fields"):
        import_ga4(write(tmp_path / "ga4.csv", GA4 + "p1-a,x,y\n"), VARIANTS)
    undated = write(tmp_path / "undated.csv", GA4.replace("20240304\n\n", "20240305\n\n") + "p1-a,l / s,c,1,1,0\n")
    with pytest.raises(EngagementFileError, match="no single-day"):
        import_ga4(undated, VARIANTS)
    assert import_ga4(undated, VARIANTS, day=DAY).accepted["day"].iloc[0] == DAY


def test_email_subject_events_count_once_per_send_and_type() -> None:
    events = pd.DataFrame(
        [
            ("e1", "s1", "delivered", "2024-03-04T09:00:00Z", "p3-a"),
            ("e2", "s1", "opened", "2024-03-04T10:00:00Z", "p3-a"),
            ("e3", "s1", "opened", "2024-03-05T10:00:00Z", "p3-a"),  # a second open of the same send
            ("e4", "s1", "clicked", "2024-03-04 10:05:00", "p3-a"),
            ("e5", "s2", "delivered", "2024-03-04T09:00:00Z", None),
            ("e6", "s3", "delivered", "2024-03-04T09:00:00Z", "p1-a"),  # not a subject-line variant
            ("e7", "s4", "forwarded", "2024-03-04T09:00:00Z", "p3-a"),
            ("e8", "s4", "opened", "yesterday", "p3-a"),
        ],
        columns=["event_id", "send_id", "event_type", "occurred_at", "variant_id"],
    )
    result = email_subject_engagement(events, VARIANTS)
    assert sorted(result.accepted["metric"]) == ["clicked", "delivered", "opened"] and set(result.accepted["day"]) == {DAY}
    codes = result.quarantined.set_index("source_row")["reason_code"].to_dict()
    assert codes == {3: "repeat_event", 5: "no_variant", 6: "unknown_variant", 7: "bad_event_type", 8: "bad_timestamp"}
    assert result.accounted_rows() == len(events) and '"event_id": "e3"' in result.quarantined["raw_record"].iloc[0]
    with pytest.raises(EngagementFileError, match="lack column"):
        email_subject_engagement(events.drop(columns=["variant_id"]), VARIANTS)


def test_import_into_the_warehouse_once_per_file(tmp_path: Path, engine_url: str | None) -> None:
    inbox = tmp_path / "inbox"
    write(
        inbox / "linkedin" / "li.csv",
        LINKEDIN_HEADER + "03/04/2024,The terrible truth about manual reconciliations,u,800,10,5,0,0\n",
    )
    write(inbox / "ga4" / "ga4.csv", GA4 + "p2-a,linkedin / social,c,8,4,0\n(not set),google / organic,(organic),9,4,0\n")
    write(inbox / "ga4" / "broken.csv", "Sessions\n1\n")
    run = RunContext("run-1", DAY, "content-test")
    with connect(tmp_path / "wh.duckdb", url=engine_url) as con:
        summary = import_engagement_files(con, inbox, run, VARIANTS)
        assert (summary.rows, summary.accepted_rows, summary.quarantined) == (3, 8, 1)
        assert list(summary.rejected_files) == [str(inbox / "ga4" / "broken.csv")]
        again = import_engagement_files(con, inbox, RunContext("run-2", DAY, "content-test"), VARIANTS)
        assert (again.files, again.rejected_files) == ([], {})
        stored = con.execute("SELECT metric, value FROM raw.content_engagement WHERE variant_id = 'p2-a' ORDER BY 1").fetchall()
        assert stored == [("clicks", 10.0), ("comments", 0.0), ("engaged_sessions", 4.0), ("impressions", 800.0)] + [
            ("key_events", 0.0),
            ("reactions", 5.0),
            ("reposts", 0.0),
            ("sessions", 8.0),
        ]
        assert con.execute("SELECT reason_code FROM raw.content_engagement_quarantine").fetchall() == [("no_utm_content",)]
        register = con.execute(
            "SELECT status, rows_total FROM raw.intake_files WHERE kind = 'content_engagement' ORDER BY 1"
        ).fetchall()
        assert sorted(register) == [("imported", 1), ("imported", 2), ("rejected", 0)]
        assert con.execute("SELECT count(*) FROM raw.incidents WHERE kind = 'engagement_file_rejected'").fetchone() == (1,)
