"""File importers against a real DuckDB file: leads, outcome events and suppression lists.

Each inbox file is imported once (by content), every row is accounted for, and a file
that cannot be read is recorded as rejected with an incident while the others go on.
"""

from __future__ import annotations

import csv
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_db import CAMPAIGN, DAY, LEADS, OTHER_CAMPAIGN, SPEC, add_message, add_send, count, query, run_for

from factory_dagster.feedback.importer import import_event_files
from factory_dagster.feedback.suppression import import_suppression_files, suppress_from_events
from factory_dagster.intake.importer import import_lead_files
from factory_dagster.intake.reading import LEAD_COLUMNS, read_lead_file
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.intake.validation import lead_id_for
from factory_dagster.warehouse.store import connect
from factory_dagster.warehouse.suppressed import suppressed_sql

NEXT_DAY = DAY + timedelta(days=1)
EVENT_HEADER = ["event_id", "send_id", "event_type", "occurred_at"]


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def lead_record(email: str, first_name: str = "Ingrid", company: str = "Solvik Analytics AB", **extra: str) -> dict[str, str]:
    record = {
        "email": email,
        "first_name": first_name,
        "last_name": "Solberg",
        "company": company,
        "industry": "Software",
        "company_size": "140",
        "role": "Head of Finance",
        "seniority": "Director",
        "region": "Nordics",
        "note": "",
    }
    return {**record, **extra}


def write_leads(path: Path, records: list[dict[str, str]], columns: tuple[str, ...] = LEAD_COLUMNS) -> Path:
    return write_csv(path, list(columns), [[r[c] for c in columns] for r in records])


def intake_file_rows(con, kind: str) -> list[tuple]:
    return query(
        con,
        """SELECT file_path, status, rows_total, rows_accepted, rows_quarantined, error
           FROM raw.intake_files WHERE kind = ? ORDER BY file_path""",
        [kind],
    )


def incidents(con, kind: str) -> list[tuple]:
    return query(con, "SELECT severity, detail, run_id, partition_day FROM raw.incidents WHERE kind = ?", [kind])


# --- leads -------------------------------------------------------------------------------------


def test_a_day_of_sample_leads_imports_every_row_once(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox" / "leads"
    path = write_sample_file(inbox, DAY, n=200, defect_rate=0.1)
    run = run_for()

    summary = import_lead_files(con, [inbox], SPEC, run)

    file_rows = len(pd.read_csv(path, dtype=str, keep_default_na=False))
    assert summary.files == [str(path)] and summary.rejected_files == {}
    assert summary.rows == file_rows == 200
    assert summary.accepted + summary.quarantined == summary.rows
    assert summary.quarantined >= 10  # the defects the generator planted
    assert count(con, "leads") == summary.accepted
    assert count(con, "leads_quarantine") == summary.quarantined

    # Every row lands in exactly one table, traceable to its line in the file.
    source_rows = set(read_lead_file(path)["source_row"])
    accepted = query(con, "SELECT source_row FROM raw.leads WHERE source_file = ?", [str(path)])
    quarantined = query(con, "SELECT source_row FROM raw.leads_quarantine WHERE source_file = ?", [str(path)])
    accepted_rows, quarantined_rows = {r[0] for r in accepted}, {r[0] for r in quarantined}
    assert len(accepted_rows) == len(accepted) and len(quarantined_rows) == len(quarantined)
    assert accepted_rows | quarantined_rows == source_rows
    assert not accepted_rows & quarantined_rows

    # A lead's source_row points at the line its address came from.
    by_row = read_lead_file(path).set_index("source_row")["email"]
    for lead_id, email, source_row in query(con, "SELECT lead_id, email, source_row FROM raw.leads"):
        raw_email = by_row[source_row].translate(dict.fromkeys(map(ord, "\u200b\u200c\u200d\ufeff"))).strip().lower()
        assert raw_email == email
        assert lead_id == lead_id_for(email)

    # The run's ids are stamped on every row, and the file is registered with its counts.
    assert query(con, "SELECT DISTINCT partition_day, run_id, campaign_id FROM raw.leads") == [(DAY, run.run_id, CAMPAIGN)]
    assert query(con, "SELECT count(*) FROM raw.leads_quarantine WHERE reason = '' OR reason_code = ''") == [(0,)]
    assert intake_file_rows(con, "leads") == [(str(path), "imported", 200, summary.accepted, summary.quarantined, None)]


def test_rerunning_the_import_adds_nothing(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_sample_file(inbox, DAY, n=60)
    first = import_lead_files(con, [inbox], SPEC, run_for())
    before = (count(con, "leads"), count(con, "leads_quarantine"), count(con, "intake_files"))

    again = import_lead_files(con, [inbox], SPEC, run_for(run_id="run-2026-03-02-retry"))

    assert first.accepted > 0
    assert again.files == [] and again.rows == again.accepted == again.quarantined == 0
    assert (count(con, "leads"), count(con, "leads_quarantine"), count(con, "intake_files")) == before


def test_the_same_content_under_another_name_is_imported_once(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    original = write_sample_file(inbox, DAY, n=40)
    shutil.copy(original, inbox / "leads_2026-03-02 (1).csv")  # the same export dropped twice, in one run

    summary = import_lead_files(con, [inbox], SPEC, run_for())

    assert len(summary.files) == 1 and summary.rows == 40
    assert count(con, "intake_files") == 1
    assert count(con, "leads") + count(con, "leads_quarantine") == 40

    # ... and renamed again on a later day.
    shutil.copy(original, inbox / "crm_export_final.csv")
    later = import_lead_files(con, [inbox], SPEC, run_for(NEXT_DAY))
    assert later.files == [] and count(con, "leads") + count(con, "leads_quarantine") == 40


def test_a_file_missing_a_required_column_is_rejected_and_the_others_import(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    columns = tuple(c for c in LEAD_COLUMNS if c != "company_size")
    broken = write_leads(inbox / "a_crm_export.csv", [lead_record("ingrid.solberg@solvik.example")], columns)
    good = write_sample_file(inbox, DAY, n=30)
    run = run_for()

    summary = import_lead_files(con, [inbox], SPEC, run)

    assert summary.files == [str(good)] and summary.accepted > 0
    assert list(summary.rejected_files) == [str(broken)]
    (path, status, total, accepted, quarantined, error), imported = intake_file_rows(con, "leads")
    assert (path, status, total, accepted, quarantined) == (str(broken), "rejected", 0, 0, 0)
    assert str(broken) in error and "'company_size'" in error
    assert imported[:2] == (str(good), "imported")
    assert incidents(con, "lead_file_rejected") == [("warning", error, run.run_id, DAY)]
    assert count(con, "leads", "source_file = ?", [str(broken)]) == 0
    assert count(con, "leads_quarantine", "source_file = ?", [str(broken)]) == 0

    # The rejected file keeps its verdict: a re-run neither retries it nor raises a second incident.
    again = import_lead_files(con, [inbox], SPEC, run_for(run_id="run-2026-03-02-retry"))
    assert again.files == [] and again.rejected_files == {}
    assert count(con, "incidents") == 1

    # A corrected file is new content, so it is imported.
    fixed = write_leads(inbox / "a_crm_export_fixed.csv", [lead_record("ingrid.solberg@solvik.example")])
    assert import_lead_files(con, [inbox], SPEC, run).files == [str(fixed)]
    assert count(con, "leads", "email = 'ingrid.solberg@solvik.example'") == 1


def test_an_address_imported_on_an_earlier_day_is_quarantined_as_duplicate(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_sample_file(inbox, DAY, n=30, defect_rate=0.0)
    import_lead_files(con, [inbox], SPEC, run_for(DAY))
    lead_id, email, first_name, company = query(
        con, "SELECT lead_id, email, first_name, company FROM raw.leads ORDER BY source_row LIMIT 1"
    )[0]

    records = [
        lead_record(f"  {email.upper()} ", first_name=first_name, company=company, note="Re-exported by the CRM"),
        lead_record("ingrid.solberg@solvik.example"),
    ]
    second = write_leads(inbox / f"leads_{NEXT_DAY.isoformat()}.csv", records)
    summary = import_lead_files(con, [inbox], SPEC, run_for(NEXT_DAY))

    assert (summary.rows, summary.accepted, summary.quarantined) == (2, 1, 1)
    quarantined = query(
        con,
        "SELECT source_file, source_row, column_name, reason_code, reason, partition_day FROM raw.leads_quarantine",
    )
    assert len(quarantined) == 1
    source_file, source_row, column, code, reason, day = quarantined[0]
    assert (source_file, source_row, column, code, day) == (str(second), 2, "email", "duplicate", NEXT_DAY)
    assert email in reason and "already imported" in reason
    # The original lead is untouched.
    assert query(
        con, "SELECT partition_day, note IS NULL OR note <> 'Re-exported by the CRM' FROM raw.leads WHERE lead_id = ?", [lead_id]
    ) == [(DAY, True)]
    assert query(con, "SELECT partition_day FROM raw.leads WHERE email = 'ingrid.solberg@solvik.example'") == [(NEXT_DAY,)]


def test_an_address_in_two_files_of_one_run_is_imported_once(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_leads(
        inbox / "a_webinar.csv", [lead_record("ingrid.solberg@solvik.example"), lead_record("ola.nordmann@solvik.example")]
    )
    second = write_leads(
        inbox / "b_trade_show.csv",
        [
            lead_record("Ingrid.Solberg@Solvik.example", note="Met at Nordic Finance Week"),
            lead_record("kari.hansen@solvik.example"),
        ],
    )

    summary = import_lead_files(con, [inbox], SPEC, run_for())

    assert (summary.rows, summary.accepted, summary.quarantined) == (4, 3, 1)
    assert query(con, "SELECT source_file, source_row, reason_code FROM raw.leads_quarantine") == [(str(second), 2, "duplicate")]
    assert count(con, "leads", "email = 'ingrid.solberg@solvik.example'") == 1


def test_a_parquet_file_imports_with_typed_columns(con, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    table = pa.table(
        {
            "Email": ["anna.berg@northwind-labs.example", "jmueller@kranwerk", "pvandijk@grachtlogistics.example"],
            "First Name": ["Anna", "Jürgen", "Pieter"],
            "last_name": ["Berg", None, "van Dijk"],
            "company": ["Northwind Labs AB", "Kranwerk GmbH", "Gracht Logistics B.V."],
            "industry": ["software", "Manufacturing", "Logistics"],
            "company_size": pa.array([250, 640, 1800], type=pa.int64()),
            "role": ["Finance Director", "Financial Controller", "Head of Finance"],
            "seniority": ["Director", "Manager", "Director"],
            "region": ["Nordics", "DACH", "Benelux"],
            "crm_owner": ["maya", "maya", "tom"],  # extra columns are ignored
        }
    )
    path = inbox / "leads_2026-03-02.parquet"
    pq.write_table(table, path)

    summary = import_lead_files(con, [inbox], SPEC, run_for())

    assert summary.files == [str(path)] and (summary.rows, summary.accepted, summary.quarantined) == (3, 2, 1)
    leads = query(
        con,
        "SELECT source_row, email, last_name, industry, company_size, segment FROM raw.leads WHERE source_file = ? ORDER BY source_row",
        [str(path)],
    )
    assert leads == [
        (1, "anna.berg@northwind-labs.example", "Berg", "Software", 250, "scaleup_finance_leaders"),
        (3, "pvandijk@grachtlogistics.example", "van Dijk", "Logistics", 1800, "enterprise_finance"),
    ]
    assert query(con, "SELECT source_row, reason_code FROM raw.leads_quarantine") == [(2, "invalid_email")]


# --- outcome events ----------------------------------------------------------------------------


@pytest.fixture
def sent(con) -> dict[str, str]:
    """Three sends of the campaign (lead email -> send_id) and one of another campaign."""
    sends = {lead.email: add_send(con, add_message(con, lead)) for lead in LEADS[:3]}
    sends["other"] = add_send(con, add_message(con, LEADS[3], campaign_id=OTHER_CAMPAIGN))
    return sends


def event_rows(sent: dict[str, str]) -> list[list[str]]:
    anna, juergen, siobhan = (sent[lead.email] for lead in LEADS[:3])
    return [
        ["evt_5c1e0a9f3b2d4e61", anna, "delivered", "2026-03-02T09:01:12Z"],
        ["evt_8d0b7a6c5e4f3a21", anna, "opened", "2026-03-02T11:45:03+01:00"],
        ["evt_a1b2c3d4e5f60718", juergen, "replied", "2026-03-03T08:15:00Z"],
        ["evt_0f9e8d7c6b5a4932", "snd_00000000000000000000", "opened", "2026-03-03T10:00:00Z"],
        ["evt_1234abcd5678ef90", siobhan, "clicked", "2026-03-03T10:00:00Z"],
        ["evt_77aa88bb99cc00dd", sent["other"], "delivered", "2026-03-02T09:00:00Z"],
    ]


def test_events_for_known_sends_are_accepted_and_the_rest_quarantined(con, sent, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events" / "esp_export_2026-03-03.csv", EVENT_HEADER, event_rows(sent))
    run = run_for(NEXT_DAY)

    summary = import_event_files(con, tmp_path / "events", run)

    assert summary.files == [str(path)]
    assert (summary.accepted, summary.quarantined, summary.already_imported) == (4, 2, 0)
    events = query(
        con,
        """SELECT event_id, send_id, event_type, occurred_at, source_row, partition_day, run_id, campaign_id
           FROM raw.events ORDER BY source_row""",
    )
    anna, juergen = sent[LEADS[0].email], sent[LEADS[1].email]
    assert [e[:3] + (e[4],) for e in events] == [
        ("evt_5c1e0a9f3b2d4e61", anna, "delivered", 2),
        ("evt_8d0b7a6c5e4f3a21", anna, "opened", 3),
        ("evt_a1b2c3d4e5f60718", juergen, "replied", 4),
        ("evt_77aa88bb99cc00dd", sent["other"], "delivered", 7),
    ]
    assert str(events[1][3]) == "2026-03-02 10:45:03"  # stored as naive UTC
    assert {e[5:] for e in events[:3]} == {(NEXT_DAY, run.run_id, CAMPAIGN)}
    # The inbox is shared: another campaign's send gets its event under that campaign, whichever run imported it.
    assert events[3][5:] == (NEXT_DAY, run.run_id, OTHER_CAMPAIGN)

    quarantine = query(
        con, "SELECT source_row, column_name, reason_code, reason, raw_record FROM raw.events_quarantine ORDER BY source_row"
    )
    assert [q[:3] for q in quarantine] == [(5, "send_id", "unknown_send_id"), (6, "event_type", "bad_event_type")]
    assert "snd_00000000000000000000" in quarantine[0][3] and "evt_0f9e8d7c6b5a4932" in quarantine[0][4]
    assert "'clicked'" in quarantine[1][3]
    assert intake_file_rows(con, "events") == [(str(path), "imported", 6, 4, 2, None)]


def test_reimporting_events_is_a_no_op(con, sent, tmp_path: Path) -> None:
    inbox = tmp_path / "events"
    rows = event_rows(sent)
    path = write_csv(inbox / "esp_export_2026-03-03.csv", EVENT_HEADER, rows)
    import_event_files(con, inbox, run_for(NEXT_DAY))
    before = (count(con, "events"), count(con, "events_quarantine"), count(con, "intake_files"))

    # The same file (and a renamed copy) again: skipped by content hash.
    shutil.copy(path, inbox / "esp_export_2026-03-03 copy.csv")
    again = import_event_files(con, inbox, run_for(NEXT_DAY, run_id="run-retry"))
    assert again.files == [] and again.accepted == again.quarantined == 0
    assert (count(con, "events"), count(con, "events_quarantine"), count(con, "intake_files")) == before

    # A re-delivered export with one new event: only the new one is added.
    new = [f"evt_{'9' * 16}", sent[LEADS[2].email], "unsubscribed", "2026-03-04T07:30:00Z"]
    later = write_csv(inbox / "esp_export_2026-03-04.csv", EVENT_HEADER, rows[:3] + [new])
    summary = import_event_files(con, inbox, run_for(NEXT_DAY + timedelta(days=1)))
    assert summary.files == [str(later)]
    assert (summary.accepted, summary.quarantined, summary.already_imported) == (1, 0, 3)
    assert count(con, "events") == before[0] + 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"event_id,send_id,type,occurred_at\nevt_1,snd_1,opened,2026-03-03T10:00:00Z\n", "event_type"),
        (b"event_id,send_id,event_type,occurred_at\nevt_1,snd_1,opened,2026-03-03T10:00:00Z,extra\n", "row 2"),
        (b"event_id,send_id,event_type,occurred_at\nevt_1,snd_1,op\xe9ned,2026-03-03T10:00:00Z\n", "not valid UTF-8"),
        (b"", "empty file"),
    ],
    ids=["missing-column", "extra-field", "bad-bytes", "empty"],
)
def test_a_corrupt_event_file_is_rejected_with_an_incident(con, sent, tmp_path: Path, content: bytes, expected: str) -> None:
    inbox = tmp_path / "events"
    inbox.mkdir()
    corrupt = inbox / "a_corrupt.csv"
    corrupt.write_bytes(content)
    good = write_csv(inbox / "b_good.csv", EVENT_HEADER, event_rows(sent)[:2])
    run = run_for(NEXT_DAY)

    summary = import_event_files(con, inbox, run)

    assert list(summary.rejected_files) == [str(corrupt)] and summary.files == [str(good)]
    rejected, imported = intake_file_rows(con, "events")
    assert rejected[:5] == (str(corrupt), "rejected", 0, 0, 0)
    assert str(corrupt) in rejected[5] and expected in rejected[5]
    assert imported[:2] == (str(good), "imported")
    assert incidents(con, "event_file_rejected") == [("warning", rejected[5], run.run_id, NEXT_DAY)]
    assert count(con, "events") == 2
    # Not retried (and no second incident) on the next run.
    assert import_event_files(con, inbox, run_for(NEXT_DAY, run_id="run-retry")).rejected_files == {}
    assert count(con, "incidents") == 1


# --- suppression -------------------------------------------------------------------------------


def test_unsubscribes_complaints_and_bounces_suppress_the_recipient_once(con, tmp_path: Path) -> None:
    sends = {lead.email: add_send(con, add_message(con, lead)) for lead in LEADS[:5]}
    anna, juergen, siobhan, pieter, maria = (sends[lead.email] for lead in LEADS[:5])
    rows = [
        ["evt_0000000000000001", anna, "delivered", "2026-03-02T09:00:00Z"],
        ["evt_0000000000000002", anna, "unsubscribed", "2026-03-02T12:00:00Z"],
        ["evt_0000000000000003", anna, "complained", "2026-03-03T12:00:00Z"],  # a second reason, same person
        ["evt_0000000000000004", juergen, "complained", "2026-03-02T15:00:00Z"],
        ["evt_0000000000000005", siobhan, "bounced", "2026-03-02T09:00:05Z"],
        ["evt_0000000000000006", pieter, "replied", "2026-03-03T08:00:00Z"],
        ["evt_0000000000000007", maria, "opened", "2026-03-03T08:00:00Z"],
    ]
    import_event_files(con, write_csv(tmp_path / "events" / "e.csv", EVENT_HEADER, rows).parent, run_for(NEXT_DAY))
    assert count(con, "events") == 7

    assert suppress_from_events(con, run_for(NEXT_DAY)) == 3
    suppressed = query(con, "SELECT email, reason, source, partition_day FROM raw.suppression ORDER BY email")
    assert suppressed == sorted(
        [
            (LEADS[0].email, "unsubscribed", "event:evt_0000000000000002", NEXT_DAY),  # the first reason wins
            (LEADS[1].email, "complained", "event:evt_0000000000000004", NEXT_DAY),
            (LEADS[2].email, "bounced", "event:evt_0000000000000005", NEXT_DAY),
        ]
    )
    # Idempotent: the next runs add nothing and change nothing.
    assert suppress_from_events(con, run_for(NEXT_DAY + timedelta(days=1))) == 0
    assert query(con, "SELECT email, reason, source, partition_day FROM raw.suppression ORDER BY email") == suppressed


def test_suppress_from_events_with_no_events_adds_nothing(con) -> None:
    assert suppress_from_events(con, run_for()) == 0
    assert count(con, "suppression") == 0


def test_a_do_not_contact_file_suppresses_its_addresses(con, tmp_path: Path) -> None:
    inbox = tmp_path / "suppression"
    con.execute(
        "INSERT INTO raw.suppression VALUES ('maria.garcia@cedarpay.example', 'complained', 'event:evt_x', ?, now()::TIMESTAMP)",
        [DAY],
    )
    path = write_csv(
        inbox / "dnc_legal_2026-03.csv",
        ["email", "reason"],
        [
            ["  Anna.Berg@Northwind-Labs.example ", "gdpr_erasure"],
            ["jmueller@kranwerk.example", ""],
            ["", "blank line from the spreadsheet"],
            ["anna.berg@northwind-labs.example", "gdpr_erasure"],  # the same address again
            ["MARIA.GARCIA@cedarpay.example", "competitor"],  # already suppressed
        ],
    )
    run = run_for()

    assert import_suppression_files(con, inbox, run) == 2
    assert query(con, "SELECT email, reason, source FROM raw.suppression ORDER BY email") == [
        ("anna.berg@northwind-labs.example", "gdpr_erasure", "file:dnc_legal_2026-03.csv"),
        ("jmueller@kranwerk.example", "do_not_contact", "file:dnc_legal_2026-03.csv"),
        ("maria.garcia@cedarpay.example", "complained", "event:evt_x"),  # the first suppression stands
    ]
    assert intake_file_rows(con, "suppression") == [(str(path), "imported", 5, 4, 1, None)]
    assert import_suppression_files(con, inbox, run_for(run_id="run-retry")) == 0
    assert count(con, "intake_files") == 1


def test_a_bare_domain_suppresses_every_address_at_it(con, tmp_path: Path) -> None:
    write_csv(
        tmp_path / "suppression" / "dnc_domains.csv",
        ["email", "reason"],
        [["Kranwerk.example", "customer"], ["@cedarpay.example", ""]],
    )
    assert import_suppression_files(con, tmp_path / "suppression", run_for()) == 2
    assert query(con, "SELECT email FROM raw.suppression ORDER BY email") == [("@cedarpay.example",), ("@kranwerk.example",)]
    addresses = ["JMueller@kranwerk.example", "anna@sub.kranwerk.example", "maria@cedarpay.example", "ana@notkranwerk.example"]
    flags = [con.execute(f"SELECT {suppressed_sql('$address')}", {"address": a}).fetchone()[0] for a in addresses]
    assert flags == [True, False, True, False]  # the domain itself, not its subdomains nor look-alikes


def test_a_suppression_file_without_an_email_column_is_rejected_with_an_incident(con, tmp_path: Path) -> None:
    inbox = tmp_path / "suppression"
    bad = write_csv(inbox / "a_dnc.csv", ["address", "reason"], [["anna.berg@northwind-labs.example", "gdpr_erasure"]])
    good = write_csv(inbox / "b_dnc.csv", ["email"], [["jmueller@kranwerk.example"]])
    run = run_for()

    assert import_suppression_files(con, inbox, run) == 1

    rejected, imported = intake_file_rows(con, "suppression")
    assert rejected[:5] == (str(bad), "rejected", 0, 0, 0)
    assert str(bad) in rejected[5] and "'email'" in rejected[5]
    assert imported[:2] == (str(good), "imported")
    assert incidents(con, "suppression_file_rejected") == [("warning", rejected[5], run.run_id, DAY)]
    assert query(con, "SELECT email FROM raw.suppression") == [("jmueller@kranwerk.example",)]
    # The rejected file is not retried on every run.
    assert import_suppression_files(con, inbox, run_for(run_id="run-retry")) == 0
    assert count(con, "incidents") == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"email\nanna.berg@northwind-labs.example\nm\xfcller@kranwerk.example\n"],
    ids=["empty", "not-utf8"],
)
def test_an_unreadable_suppression_file_is_rejected_and_the_others_import(con, tmp_path: Path, content: bytes) -> None:
    inbox = tmp_path / "suppression"
    inbox.mkdir()
    bad = inbox / "a_dnc.csv"
    bad.write_bytes(content)
    write_csv(inbox / "b_dnc.csv", ["email"], [["jmueller@kranwerk.example"]])

    assert import_suppression_files(con, inbox, run_for()) == 1

    rejected, _ = intake_file_rows(con, "suppression")
    assert rejected[:2] == (str(bad), "rejected") and str(bad) in rejected[5]
    assert len(incidents(con, "suppression_file_rejected")) == 1
    assert import_suppression_files(con, inbox, run_for(run_id="run-retry")) == 0


def test_the_same_suppression_list_under_two_names_is_imported_once(con, tmp_path: Path) -> None:
    inbox = tmp_path / "suppression"
    first = write_csv(inbox / "dnc.csv", ["email"], [["anna.berg@northwind-labs.example"], ["jmueller@kranwerk.example"]])
    shutil.copy(first, inbox / "dnc (copy).csv")

    assert import_suppression_files(con, inbox, run_for()) == 2
    assert count(con, "intake_files") == 1
    assert count(con, "suppression") == 2


def test_an_event_export_with_an_upper_case_suffix_is_imported(con, sent, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events" / "ESP_EXPORT.CSV", EVENT_HEADER, event_rows(sent))
    assert import_event_files(con, tmp_path / "events", run_for(NEXT_DAY)).files == [str(path)]


def test_the_same_bytes_in_two_inboxes_are_registered_once_per_kind(con, sent, tmp_path: Path) -> None:
    content = "email\nanna.berg@northwind-labs.example\n"
    (tmp_path / "suppression").mkdir()
    (tmp_path / "suppression" / "dnc.csv").write_text(content, encoding="utf-8")
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "dnc.csv").write_text(content, encoding="utf-8")
    assert import_suppression_files(con, tmp_path / "suppression", run_for()) == 1
    import_event_files(con, tmp_path / "events", run_for(NEXT_DAY))
    assert [r[1] for r in intake_file_rows(con, "suppression")] == ["imported"]
    assert [r[1] for r in intake_file_rows(con, "events")] == ["rejected"]  # no event columns: its own verdict


def test_two_runs_importing_a_shared_inbox_at_once_on_postgresql_import_each_event_once(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Campaign runs write the PostgreSQL warehouse at once, and each imports the shared inboxes: the second
    importer waits for the first (store.exclusive), then finds every file registered."""
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con:
        send_ids = [add_send(con, add_message(con, lead)) for lead in LEADS[:3]]
    inbox = tmp_path / "events"
    rows = [[f"evt_{i:016x}", send_ids[i % 3], "opened", f"2026-03-03T{i % 24:02d}:00:00Z"] for i in range(3000)]
    for part in range(4):
        write_csv(inbox / f"export_{part}.csv", EVENT_HEADER, rows[part::4])
    start, errors = threading.Barrier(2), []

    def import_once(run_id: str) -> None:
        try:
            with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as own:
                start.wait()
                import_event_files(own, inbox, run_for(NEXT_DAY, run_id=run_id))
        except Exception as exc:  # noqa: BLE001 -- the test reports what either importer raised
            errors.append(exc)

    threads = [threading.Thread(target=import_once, args=(f"run-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con:
        assert count(con, "events") == len(rows)
        assert count(con, "intake_files", "kind = 'events'") == 4
    assert not (tmp_path / "unused.duckdb").exists()
