"""The IMAP settings come from the environment only, refuse what would leak the password, and never show it."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_dagster.delivery.config import ConfigError
from factory_dagster.feedback.imap_fetch import ImapSettings, _batches, _internaldate, imap_configured, imap_utf7

SECRET = "Imap-s3cret-" + "Qw9z" * 4
BASE = {"FACTORY_IMAP_HOST": "imap.brightwave.example", "FACTORY_IMAP_USERNAME": "replies", "FACTORY_IMAP_PASSWORD": SECRET}


def test_defaults_are_implicit_tls_on_993_reading_the_inbox() -> None:
    settings = ImapSettings.from_env(BASE)

    assert (settings.host, settings.port, settings.tls, settings.folder, settings.ca_file, settings.timeout_s) == (
        "imap.brightwave.example",
        993,
        "implicit",
        "INBOX",
        None,
        30.0,
    )
    assert SECRET not in repr(settings) and settings.password == SECRET
    assert settings.state_key == "replies@imap.brightwave.example:993/INBOX"


def test_each_setting_is_read(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = BASE | {
        "FACTORY_IMAP_TLS": "STARTTLS",
        "FACTORY_IMAP_FOLDER": "Réponses clients",
        "FACTORY_IMAP_CA_FILE": str(ca),
        "FACTORY_IMAP_TIMEOUT_S": "7.5",
    }
    settings = ImapSettings.from_env(env)
    assert (settings.port, settings.tls, settings.folder, settings.ca_file, settings.timeout_s) == (
        143,
        "starttls",
        "Réponses clients",
        str(ca),
        7.5,
    )
    assert ImapSettings.from_env(env | {"FACTORY_IMAP_PORT": "1143"}).port == 1143


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_clear_text_is_allowed_for_loopback_hosts(host: str) -> None:
    settings = ImapSettings.from_env(BASE | {"FACTORY_IMAP_HOST": host, "FACTORY_IMAP_TLS": "none"})
    assert (settings.tls, settings.port) == ("none", 143)


@pytest.mark.parametrize("host", ["imap.brightwave.example", "10.0.0.7", "localhost.example.com"])
def test_clear_text_is_refused_for_other_hosts(host: str) -> None:
    with pytest.raises(ConfigError, match=rf"FACTORY_IMAP_TLS=none .* only allowed for a loopback host .*'{host}'"):
        ImapSettings.from_env(BASE | {"FACTORY_IMAP_HOST": host, "FACTORY_IMAP_TLS": "none"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"FACTORY_IMAP_HOST": " "}, "needs FACTORY_IMAP_HOST"),
        ({"FACTORY_IMAP_PASSWORD": ""}, "set FACTORY_IMAP_USERNAME and FACTORY_IMAP_PASSWORD"),
        ({"FACTORY_IMAP_USERNAME": ""}, "set FACTORY_IMAP_USERNAME and FACTORY_IMAP_PASSWORD"),
        ({"FACTORY_IMAP_TLS": "ssl"}, "FACTORY_IMAP_TLS must be one of implicit, starttls, none, got 'ssl'"),
        ({"FACTORY_IMAP_PORT": "imaps"}, "FACTORY_IMAP_PORT must be a whole number, got 'imaps'"),
        ({"FACTORY_IMAP_PORT": "70000"}, "FACTORY_IMAP_PORT must be a port number, got 70000"),
        ({"FACTORY_IMAP_PORT": "0"}, "FACTORY_IMAP_PORT must be greater than 0"),
        ({"FACTORY_IMAP_TIMEOUT_S": "soon"}, "FACTORY_IMAP_TIMEOUT_S must be a number"),
        ({"FACTORY_IMAP_CA_FILE": "/nonexistent/ca.pem"}, "FACTORY_IMAP_CA_FILE names no file: /nonexistent/ca.pem"),
    ],
)
def test_a_bad_setting_names_the_variable_and_never_the_password(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ImapSettings.from_env(BASE | change)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_imap_is_configured_only_with_a_host() -> None:
    assert imap_configured(BASE)
    assert not imap_configured({"FACTORY_IMAP_USERNAME": "replies"})
    assert not imap_configured({"FACTORY_IMAP_HOST": "  "})


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Réponses", "R&AOk-ponses"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 section 5.1.3's example
    ],
)
def test_folder_names_are_sent_in_modified_utf7(name: str, encoded: str) -> None:
    assert imap_utf7(name) == encoded


def test_internaldate_is_read_whatever_the_locale_and_day_padding() -> None:
    assert _internaldate(b'1 (UID 4 INTERNALDATE " 3-Mar-2026 10:15:02 +0100" BODY[] {12}').isoformat() == (
        "2026-03-03T10:15:02+01:00"
    )
    assert _internaldate(b'INTERNALDATE "17-Jul-1996 02:44:25 -0700"').isoformat() == "1996-07-17T02:44:25-07:00"
    assert _internaldate(b'INTERNALDATE "31-Foo-2026 10:15:02 +0100"') is None
    assert _internaldate(b"UID 4") is None


def test_batches_hold_at_most_n_messages_and_about_max_bytes() -> None:
    listed = [(1, 10), (2, 10), (3, 30), (4, 1), (5, 1), (6, 1), (7, 1)]
    assert [[uid for uid, _ in b] for b in _batches(listed, 3, 25)] == [[1, 2], [3], [4, 5, 6], [7]]
    assert list(_batches([], 3, 25)) == []
