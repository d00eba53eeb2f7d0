"""The content approval queue and the `factory content` CLI on both warehouses, and the content marts built by dbt."""

from __future__ import annotations

import argparse
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from factory_dagster.content import cli as content_cli
from factory_dagster.content.publish import publish_day
from factory_dagster.content.review import (
    ContentReviewError,
    approve,
    approved_variants,
    auto_approve,
    edit,
    find_variant,
    history,
    queue,
    reject,
    store_pieces,
    text_sha256,
    variants,
)
from factory_dagster.content.spec import load_content_spec
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.review.analysis import word_edit_distance
from factory_dagster.settings import PROJECT_ROOT, Paths
from factory_dagster.warehouse.store import connect, open_warehouse

SPEC_PATH = PROJECT_ROOT / "campaigns" / "content_brightwave.yaml"
SPEC = load_content_spec(SPEC_PATH)
CONTENT = SPEC.content_id
DAY, DAY2 = date(2026, 3, 2), date(2026, 3, 3)


def piece(variant: str, text: str, verdict: str = "passed", codes: tuple[str, ...] = (), **extra: object) -> dict:
    row = {
        "piece_id": extra.pop("piece_id", "p1"),
        "variant_id": variant,
        "topic": "close_speed",
        "segment": "controllers",
        "channel": extra.pop("channel", "headline"),
        "text": text,
        "gate_verdict": verdict,
        "violation_codes": list(codes),
        "claims_used": ["close_4_days_faster"],
        "model": "cheap-model",
    }
    return row | extra


PIECES = pd.DataFrame(
    [
        piece("v-pass", "Close the month 4 days faster"),
        piece("v-banned", "A revolutionary way to close the month", "flagged", ("banned_phrase",)),
        piece("v-excl", "Close the month 4 days faster, really!", "flagged", ("voice_exclamation",)),
        piece("v-audit", "Close your month up to 4 days faster"),
        piece("s-pass", "Your close, 4 days shorter", piece_id="p2", channel="email_subject"),
    ]
)
AUDITS = pd.DataFrame(  # content.stages' audit shape: pass/fail, and rows without a verdict (deferred, unusable)
    [
        {"variant_id": "v-audit", "audit_verdict": "fail", "reasons": "truthfulness 2: 'up to' dropped in spirit"},
        {"variant_id": "s-pass", "audit_verdict": "pass", "reasons": "fine"},
        {"variant_id": "v-pass", "audit_verdict": None, "audit_status": "deferred", "reasons": "budget spent"},
    ]
)


def stored(path: Path, pieces: pd.DataFrame = PIECES, day: date = DAY, url: str | None = None) -> Path:
    with connect(path, url=url) as con:
        store_pieces(con, pieces, content_id=CONTENT, day=day, run_id="run-1", spec_version="s1", audits=AUDITS)
    return path


@pytest.fixture
def con(tmp_path: Path, engine_url: str | None):
    with connect(stored(tmp_path / "warehouse.duckdb", url=engine_url), url=engine_url) as connection:
        yield connection


def reviews(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM raw.content_reviews").fetchone()[0]


def test_the_queue_holds_what_the_gate_flagged_or_the_audit_failed(con) -> None:
    waiting = queue(con, CONTENT)
    assert [i.variant_id for i in waiting] == ["v-audit", "v-banned", "v-excl"]
    assert waiting[0].why_flagged().startswith("audit failed: truthfulness 2")
    assert waiting[1].why_flagged() == "gate: banned_phrase"
    assert queue(con, CONTENT, DAY2) == [] and queue(con, "other-content") == []
    reject(con, SPEC, "v-banned", "ana", "off brand")
    assert [i.variant_id for i in queue(con, CONTENT, DAY)] == ["v-audit", "v-excl"]  # decided: out of the queue


def test_store_pieces_is_idempotent_and_names_bad_rows(con) -> None:
    assert store_pieces(con, PIECES, content_id=CONTENT, day=DAY, run_id="run-2", spec_version="s1") == 0
    stored_row = con.execute("SELECT audit_verdict, hook, claim_ids FROM raw.content_pieces WHERE variant_id = 'v-audit'")
    assert stored_row.fetchone() == ("failed", "Close your month up to 4 days faster", ["close_4_days_faster"])
    bad = PIECES.head(2).assign(text=["ok text", " "])
    with pytest.raises(ContentReviewError, match="pieces row 2, column text: empty"):
        store_pieces(con, bad.assign(variant_id=["n1", "n2"]), content_id=CONTENT, day=DAY, run_id="r", spec_version="s1")
    with pytest.raises(ContentReviewError, match="lack column"):
        store_pieces(con, PIECES.drop(columns="model"), content_id=CONTENT, day=DAY, run_id="r", spec_version="s1")
    assert con.execute("SELECT count(*) FROM raw.content_pieces").fetchone()[0] == len(PIECES)


def test_approve_refuses_a_hard_rule_and_needs_a_reason_to_override_a_judgement(con) -> None:
    with pytest.raises(ContentReviewError, match="banned_phrase"):
        approve(con, SPEC, "v-banned", "ana")
    with pytest.raises(ContentReviewError, match="needs a --reason"):
        approve(con, SPEC, "v-excl", "ana")
    assert reviews(con) == 0
    decision = approve(con, SPEC, "v-excl", "ana", "the mark is the brand's tagline")
    assert (decision.action, decision.actor, decision.already) == ("approve", "ana", False)
    assert approve(con, SPEC, "v-excl", "bo").already and reviews(con) == 1  # again: nothing stored
    assert find_variant(con, CONTENT, "v-excl").status == "approved by ana"


def test_an_edit_is_rechecked_stored_with_its_diff_and_distance_and_published_as_edited(con) -> None:
    with pytest.raises(ContentReviewError, match="breaks the content gate's rules.*banned_phrase.*unsupported_number"):
        edit(con, SPEC, "v-banned", "A guaranteed way to close the month 9 days faster", "ana")
    with pytest.raises(ContentReviewError, match="changes nothing"):
        edit(con, SPEC, "v-banned", "A revolutionary way to close the month ", "ana")
    assert reviews(con) == 0
    new = "A calmer way to close the month"
    decision = edit(con, SPEC, "v-banned", new, "ana", "no hype")
    assert decision.edit_distance == pytest.approx(word_edit_distance("A revolutionary way to close the month", new))
    assert decision.edit_distance == pytest.approx(1 / 7)
    assert "-A revolutionary way to close the month" in decision.diff and f"+{new}" in decision.diff
    row = con.execute("SELECT action, edited_text, text_sha256 FROM raw.content_reviews WHERE variant_id = 'v-banned'")
    assert row.fetchone() == ("edit", new, text_sha256(new))
    # A second edit diffs against the first, and the latest text is what gets published.
    newer = "A calmer way to close your month"
    assert edit(con, SPEC, "v-banned", newer, "bo").diff.startswith("--- before\n+++ after")
    day = approved_variants(con, DAY)
    assert day.set_index("variant_id").loc["v-banned", ["text", "edited", "decision"]].tolist() == [newer, True, "edit"]
    assert [h["action"] for h in history(con, "v-banned")] == ["edit", "edit"]


def test_reject_needs_a_reason_and_decisions_on_a_moved_on_variant_are_refused(con, tmp_path: Path) -> None:
    with pytest.raises(ContentReviewError, match="needs a reason"):
        reject(con, SPEC, "v-audit", "ana", "  ")
    reject(con, SPEC, "v-audit", "ana", "the audit is right")
    for decide in (
        lambda: approve(con, SPEC, "v-audit", "bo"),
        lambda: edit(con, SPEC, "v-audit", "Close the month faster", "bo"),
        lambda: reject(con, SPEC, "v-audit", "bo", "again"),
    ):
        with pytest.raises(ContentReviewError, match="was rejected by ana"):
            decide()
    assert reviews(con) == 1
    # The text changed since the person looked: refused.
    seen = find_variant(con, CONTENT, "v-excl").sha256
    edit(con, SPEC, "v-excl", "Close the month 4 days faster", "ana")
    with pytest.raises(ContentReviewError, match="changed since you looked"):
        reject(con, SPEC, "v-excl", "bo", "too close to v-pass", seen_sha256=seen[:12])
    # Published (its day's pieces.json names it, or engagement came back): refused.
    auto_approve(con, CONTENT, DAY)
    folder = tmp_path / "published"
    publish_day(approved_variants(con, DAY), DAY, folder)
    count = reviews(con)
    with pytest.raises(ContentReviewError, match="already published"):
        reject(con, SPEC, "v-pass", "bo", "late thoughts", published_dir=folder)
    con.execute(
        "INSERT INTO raw.content_engagement VALUES ('s-pass', 'email_subject', 'opened', 1, ?, 'email', 'raw.events', 1, ?, "
        "'run-9', ?, now())",
        [DAY, DAY, CONTENT],
    )
    with pytest.raises(ContentReviewError, match="already published"):
        edit(con, SPEC, "s-pass", "Your close, up to 4 days shorter", "bo")
    assert reviews(con) == count


def test_auto_approve_records_only_clean_undecided_variants(con) -> None:
    approve(con, SPEC, "v-excl", "ana", "tagline")
    assert auto_approve(con, CONTENT, DAY) == ["v-pass", "s-pass"]
    assert auto_approve(con, CONTENT, DAY) == []
    rows = con.execute(
        "SELECT variant_id, actor, reason FROM raw.content_reviews WHERE action = 'auto_approve' ORDER BY variant_id"
    ).fetchall()
    assert rows == [
        ("s-pass", "factory", "passed the gate and the audit"),
        ("v-pass", "factory", "passed the gate (not sampled by the audit)"),
    ]
    states = {i.variant_id: i.status for i in variants(con, CONTENT, DAY)}
    assert states["v-pass"] == "auto-approved" and states["v-banned"] == "waiting for a person"
    assert sorted(approved_variants(con, DAY, CONTENT)["variant_id"]) == ["s-pass", "v-excl", "v-pass"]
    assert approved_variants(con, DAY2).empty


def test_an_approved_text_of_an_earlier_day_makes_a_near_duplicate(con) -> None:
    auto_approve(con, CONTENT, DAY)
    copy = pd.DataFrame([piece("v-copy", "Close the month 4 days faster", piece_id="p9")])
    store_pieces(con, copy, content_id=CONTENT, day=DAY2, run_id="run-2", spec_version="s1")
    with pytest.raises(ContentReviewError, match="needs a --reason.*near_duplicate"):
        approve(con, SPEC, "v-copy", "ana")
    assert approve(con, SPEC, "v-copy", "ana", "a repeat on purpose: a different segment reads it").action == "approve"


def run_cli(argv: list[str], paths: Paths) -> int:
    parser = argparse.ArgumentParser(prog="factory")
    content_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args, paths)


def test_the_cli(engine_paths: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = engine_paths
    stored(paths.warehouse, url=paths.warehouse_url)
    spec = ["content", "--spec", str(SPEC_PATH)]
    assert run_cli([*spec, "list"], paths) == 0
    out = capsys.readouterr().out
    assert "v-banned" in out and "gate: banned_phrase" in out and "3 variants waiting for a person" in out
    assert "v-pass" not in out
    assert run_cli([*spec, "show", "v-banned"], paths) == 0
    out = capsys.readouterr().out
    assert "waiting for a person" in out and "A revolutionary way to close the month" in out
    with open_warehouse(paths, read_only=True) as con:
        sha = find_variant(con, CONTENT, "v-banned").sha256[:12]
    assert f"text sha: {sha}" in out
    assert run_cli([*spec, "approve", "v-banned", "--actor", "ana"], paths) == 1
    assert "cannot approve away" in capsys.readouterr().err
    argv = [*spec, "edit", "v-banned", "--text", "A calmer way to close the month", "--actor", "ana", "--seen", sha]
    assert run_cli(argv, paths) == 0
    assert "word edit distance 0.143" in capsys.readouterr().out
    assert run_cli([*spec, "reject", "v-audit", "--reason", "audit was right", "--actor", "bo"], paths) == 0
    assert run_cli([*spec, "approve", "v-audit", "--actor", "bo"], paths) == 1
    assert "was rejected by bo" in capsys.readouterr().err
    assert run_cli([*spec, "list", "--day", str(DAY), "--all"], paths) == 0
    out = capsys.readouterr().out
    assert "approved by ana, edited (1x)" in out and "rejected by bo: audit was right" in out and "5 variants of" in out
    with pytest.raises(SystemExit):
        run_cli([*spec, "reject", "v-excl"], paths)  # --reason is required
    assert run_cli(["content", "--spec", str(tmp_path / "missing.yaml"), "list"], paths) == 2


# -- the content marts, built by dbt on an empty and a filled warehouse ------------------------------------


def fill(path: Path) -> None:
    """v-pass (auto) and s-pass (auto) engage; v-banned edited; v-audit rejected; v-excl approved; p3 on DAY2 pending."""
    stored(path)
    with connect(path) as con:
        edit(con, SPEC, "v-banned", "A calmer way to close the month", "ana")
        reject(con, SPEC, "v-audit", "ana", "audit was right")
        approve(con, SPEC, "v-excl", "ana", "tagline")
        auto_approve(con, CONTENT, DAY)
        store_pieces(
            con,
            pd.DataFrame([piece("v-later", "Close the month faster", piece_id="p3")]),
            content_id=CONTENT,
            day=DAY2,
            run_id="run-2",
            spec_version="s1",
        )
        rows = [
            ("v-pass", "headline", "impressions", 1000, DAY, "linkedin"),
            ("v-pass", "headline", "impressions", 500, DAY2, "linkedin"),
            ("v-pass", "headline", "clicks", 30, DAY, "linkedin"),
            ("v-pass", "headline", "reactions", 7, DAY, "linkedin"),
            ("v-pass", "headline", "sessions", 12, DAY, "ga4"),
            ("v-pass", "headline", "key_events", 2, DAY, "ga4"),
            ("s-pass", "email_subject", "delivered", 40, DAY, "email"),
            ("s-pass", "email_subject", "opened", 10, DAY, "email"),
            ("s-pass", "email_subject", "clicked", 4, DAY, "email"),
        ]
        con.executemany(
            "INSERT INTO raw.content_engagement VALUES (?, ?, ?, ?, ?, ?, 'export.csv', 1, ?, 'run-9', ?, ?)",
            [[*r, DAY2, CONTENT, datetime(2026, 3, 4)] for r in rows],
        )


@pytest.fixture(scope="module")
def marts(tmp_path_factory: pytest.TempPathFactory, dbt_manifest) -> dict[str, Path]:
    """`dbt build --select tag:content` on an empty and a filled warehouse (same file name: one parse)."""
    built = {}
    for name in ("empty", "filled"):
        root = tmp_path_factory.mktemp(f"content_{name}")
        path = root / "warehouse.duckdb"
        if name == "filled":
            fill(path)
        else:
            with connect(path):
                pass
        run = invoke(["build", "--select", "tag:content"], path, root / "dbt_target")
        assert run.success, run.describe_failure()
        built[name] = path
    return built


def mart(path: Path, sql: str) -> list[dict]:
    with duckdb.connect(str(path), read_only=True) as con:
        frame = con.execute(sql).df()
    return frame.to_dict("records")


def test_the_content_marts_build_on_an_empty_warehouse(marts: dict[str, Path]) -> None:
    for table in ("content_variant_performance", "content_edit_patterns"):
        assert mart(marts["empty"], f"SELECT count(*) AS n FROM marts.{table}") == [{"n": 0}]


def test_content_variant_performance(marts: dict[str, Path]) -> None:
    rows = {r["variant_id"]: r for r in mart(marts["filled"], "SELECT * FROM marts.content_variant_performance")}
    assert sorted(rows) == ["s-pass", "v-banned", "v-excl", "v-pass"]  # approved only: not rejected, not pending
    v = rows["v-pass"]
    assert (v["impressions"], v["clicks"], v["reactions"], v["sessions"], v["key_events"], v["days_published"]) == (
        1500,
        30,
        7,
        12,
        2,
        2,
    )
    assert v["ctr"] == pytest.approx(30 / 1500) and v["review_state"] == "auto_approve" and not v["edited"]
    s = rows["s-pass"]
    assert (s["impressions"], s["clicks"], s["opens"], s["channel"], s["segment"]) == (40, 4, 10, "email_subject", "controllers")
    assert s["ctr"] == pytest.approx(0.1) and s["open_rate"] == pytest.approx(0.25)
    b = rows["v-banned"]
    assert (b["text"], b["edited"], b["impressions"], b["days_published"], b["text_words"]) == (
        "A calmer way to close the month",
        True,
        0,
        0,
        7,
    )
    assert pd.isna(b["ctr"])


def test_content_edit_patterns(marts: dict[str, Path]) -> None:
    rows = {(r["channel"], r["model"]): r for r in mart(marts["filled"], "SELECT * FROM marts.content_edit_patterns")}
    h = rows["headline", "cheap-model"]
    counts = ("variants_decided", "variants_flagged", "auto_approved", "variants_edited", "rejected")
    # Headlines: 5 variants (v-later pending), 4 decided; flagged or audit-failed: v-banned, v-excl, v-audit.
    assert tuple(h[k] for k in counts) == (4, 3, 1, 1, 1)
    assert (h["edit_rate"], h["reject_rate"]) == (pytest.approx(0.25), pytest.approx(0.25))
    assert h["mean_edit_distance"] == pytest.approx(1 / 7)
    e = rows["email_subject", "cheap-model"]
    assert tuple(e[k] for k in counts) == (1, 0, 1, 0, 0) and pd.isna(e["mean_edit_distance"])
