"""`factory replies classify FILE --out OUT.csv`: every row comes back, bad files are refused by name, the ledger lands in the warehouse (DuckDB or PostgreSQL)."""

from __future__ import annotations

import argparse
import csv

import duckdb
import pandas as pd
import pytest

from factory_dagster.replies.cli import register
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

QUOTED = (
    "Yes, Thursday at 2pm works.\n\nOn Tue, 3 Mar 2026 at 09:14, Maya Okafor <maya@brightwave-ledger.example> wrote:\n"
    '> Hi Jo,\n> Would a 20-minute call next week be useful?\n> Not relevant for you? Reply "unsubscribe" and we will not email you again.'
)


def run(paths: Paths, *argv: str) -> int:
    root = argparse.ArgumentParser(prog="factory")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(list(argv))
    return args.run(args, paths)


def write_csv(path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths.under(tmp_path / "home")


def test_every_row_is_classified_or_quarantined_and_the_ledger_is_in_the_warehouse(engine_paths, tmp_path, capsys):
    paths = engine_paths  # the DuckDB file, or the PostgreSQL warehouse FACTORY_WAREHOUSE_URL would name
    source, out = tmp_path / "replies.csv", tmp_path / "out" / "classified.csv"
    rows = [
        ("Re: A calmer close", QUOTED, "yes"),
        ("Re: A calmer close", "Please take me off your list.", "unsub"),
        ("Re: A calmer close", "", "blank"),
        ("Automatic reply: A calmer close", "I am out of the office until 16 March.", "ooo"),
        ("Re: A calmer close", "How much is it for three entities? Does it work with Xero?", "question"),
        ("Re: A calmer close", "Looks interesting, but the timing is bad for us.", "later"),
    ]
    write_csv(source, ["subject", "text", "class"], rows)  # a team's own labels in a column named like ours
    assert run(paths, "replies", "classify", str(source), "--out", str(out)) == 0
    result = pd.read_csv(out, dtype=str, keep_default_na=False)
    # The first record spans six lines (its quoted thread): each row is named by the line it starts on.
    assert len(result) == len(rows) and result.source_row.tolist() == ["2", "8", "9", "10", "11", "12"]
    assert result.input_class.tolist() == [r[2] for r in rows]  # kept, renamed
    assert result.reply_id.tolist() == ["row-2", "row-8", "row-9", "row-10", "row-11", "row-12"]
    by_label = result.set_index("input_class")
    assert by_label.loc["unsub", "class"] == "unsubscribe" and by_label.loc["unsub", "rule"] == "unsubscribe_request"
    assert by_label.loc["yes", "class"] == "positive"  # the quoted footer is not read as an unsubscribe
    assert by_label.loc["ooo", ["class", "decided_by"]].tolist() == ["out_of_office", "rule"]
    assert by_label.loc["blank", "class"] == "" and "empty reply" in by_label.loc["blank", "quarantine_reason"]
    assert by_label.loc["question", "model"].startswith("offline-")
    classified = result[result["class"] != ""]
    assert (classified.confidence.astype(float).between(0, 1)).all() and (classified.model != "").all()
    assert paths.warehouse.exists() == (paths.warehouse_url is None)
    with open_warehouse(paths, read_only=True) as con:
        calls = con.execute("SELECT call_id, stage, model, run_id, cost_usd FROM raw.llm_calls").df()
        versions = con.execute("SELECT prompt_version, stage FROM raw.prompt_versions").fetchall()
    assert len(calls) >= 3 and set(calls.stage) <= {"classify", "classify_escalate"}
    assert calls.run_id.str.startswith("replies-cli-").all() and (calls.cost_usd > 0).all()
    assert {i for cell in result.llm_call_ids for i in cell.split(";") if i} == set(calls.call_id)  # every call, and only those
    assert ("classify-v1", "classify") in versions
    printed = capsys.readouterr().out
    assert "classified 5 of 6 replies" in printed and "1 quarantined" in printed and str(out) in printed
    assert f"in raw.llm_calls of {'postgresql://' if paths.warehouse_url else paths.warehouse}" in printed


def test_a_file_without_a_text_column_is_refused_naming_the_file_and_its_columns(paths, tmp_path, capsys):
    source, out = tmp_path / "export.csv", tmp_path / "classified.csv"
    write_csv(source, ["subject", "body"], [("Re: x", "Sounds good")])
    assert run(paths, "replies", "classify", str(source), "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert str(source) in error and "no 'text' column" in error and "subject, body" in error
    assert not out.exists() and not paths.warehouse.exists()


def test_bad_bytes_and_broken_rows_are_refused_with_the_row(paths, tmp_path, capsys):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("subject,text\nRe: x,fine\nRe: y,Grüße\n".encode("latin-1"))
    assert run(paths, "replies", "classify", str(latin), "--out", str(tmp_path / "a.csv")) == 2
    assert f"{latin}, row 3" in capsys.readouterr().err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("subject,text\nRe: x,fine\nRe: y,one,two\n", encoding="utf-8")
    assert run(paths, "replies", "classify", str(ragged), "--out", str(tmp_path / "b.csv")) == 2
    assert f"{ragged}, row 3: 3 fields, but the header has 2" in capsys.readouterr().err
    missing = tmp_path / "nowhere.csv"
    assert run(paths, "replies", "classify", str(missing), "--out", str(tmp_path / "c.csv")) == 2
    assert str(missing) in capsys.readouterr().err


def test_the_escalation_threshold_is_an_option(paths, tmp_path):
    source = tmp_path / "replies.csv"
    write_csv(source, ["text"], [("Looks interesting, but the timing is bad for us.",), ("Not interested.",)])
    assert run(paths, "replies", "classify", str(source), "--out", str(tmp_path / "o.csv"), "--escalate-below", "1") == 0
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        stages = dict(con.execute("SELECT stage, count(*) FROM raw.llm_calls GROUP BY 1").fetchall())
    assert stages == {"classify": 2, "classify_escalate": 2}
    assert run(paths, "replies", "classify", str(source), "--out", str(tmp_path / "p.csv"), "--escalate-below", "7") == 2


def test_the_help_states_the_settings_default_threshold() -> None:
    from factory_dagster.replies.classify import ClassifySettings

    commands = argparse.ArgumentParser().add_subparsers()
    register(commands)
    helps = (
        commands.choices["replies"].format_help()
        + commands.choices["replies"]._subparsers._group_actions[0].choices["classify"].format_help()
    )
    assert f"default {ClassifySettings().escalate_below}" in helps
