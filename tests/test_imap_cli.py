"""`factory fetch-replies`, as the lead's cli.py will call it: settings from the environment, a real dovecot."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_imap import running_dovecot

from factory_dagster.feedback import imap_cli
from factory_dagster.settings import Paths


def factory(argv: list[str], paths: Paths) -> int:
    root = argparse.ArgumentParser(prog="factory")
    imap_cli.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(argv)
    return args.run(args, paths)


def test_fetch_replies_stores_new_messages_and_exits_0_then_finds_nothing_new(tmp_path: Path, monkeypatch, capsys) -> None:
    paths = Paths.under(tmp_path / "data")
    with running_dovecot(tmp_path) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        server.append(
            b"From: a@example.com\r\nMessage-ID: <cli-1@example.com>\r\n\r\nhello\r\n", datetime(2026, 3, 3, tzinfo=UTC)
        )

        assert factory(["fetch-replies", "--batch-size", "10"], paths) == 0
        first = capsys.readouterr().out
        assert factory(["fetch-replies"], paths) == 0
        second = capsys.readouterr().out

        monkeypatch.setenv("FACTORY_IMAP_PASSWORD", "Wr0ng-" + server.password)
        assert factory(["fetch-replies"], paths) == 1
        refused = capsys.readouterr()

    assert f"imap 127.0.0.1:{server.port} folder 'INBOX': 1 new message(s) stored of 1 found, in 1 batch(es)" in first
    assert f"stored in {paths.replies_inbox}" in first
    assert len(list(paths.replies_inbox.glob("*.eml"))) == 1
    assert "0 new message(s) stored of 0 found" in second
    assert refused.err.startswith("error: IMAP server 127.0.0.1:") and "refused the login" in refused.err
    assert server.password not in refused.out + refused.err


def test_fetch_replies_without_settings_exits_2_naming_the_variable(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("FACTORY_IMAP_HOST", "FACTORY_IMAP_USERNAME", "FACTORY_IMAP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert factory(["fetch-replies"], Paths.under(tmp_path)) == 2
    assert "FACTORY_IMAP_HOST" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        factory(["fetch-replies", "--batch-size", "0"], Paths.under(tmp_path))
