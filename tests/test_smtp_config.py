"""Sending settings from the environment, and the message every transport sends (headers, HTML, one-click link)."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from helpers_db import SPEC
from test_transport import make_message as message

from factory_dagster.delivery.config import (
    DEFAULT_PER_MINUTE,
    ConfigError,
    Mailbox,
    SmtpSettings,
    UnsubscribeLinks,
    is_loopback,
    mailboxes_from_env,
    transport_name,
)
from factory_dagster.delivery.eml import FileTransport, build_email, email_bytes, message_id_for, text_to_html
from factory_dagster.delivery.smtp import SmtpTransport
from factory_dagster.delivery.stage import DeliverySetup
from factory_dagster.delivery.unsubscribe import MissingSecret, read_token

SECRET = "s3cret-for-tests-0123456789-abcdefghij"
PASSWORD = "hunter2-correct-horse"
DEFAULT = Mailbox("maya@brightwave-ledger.example", "Maya Okafor")


# --- the message --------------------------------------------------------------------------------


def test_one_click_headers_carry_a_token_the_receiver_verifies() -> None:
    links = UnsubscribeLinks("https://feedback.brightwave.example/", SECRET.encode())
    url = links.url_for("snd_0001", "Ana@Northwind.example")
    raw = email_bytes(message(unsubscribe_url=url))
    email = message_from_bytes(raw, policy=policy.default)

    mailto, https = (part.strip() for part in str(email["List-Unsubscribe"]).split(","))
    assert mailto == "<mailto:maya@brightwave-ledger.example?subject=unsubscribe>"
    assert https.startswith("<https://feedback.brightwave.example/unsubscribe/") and https.endswith(">")
    token = https[1:-1].rsplit("/", 1)[1]
    request = read_token(SECRET.encode(), token)
    assert (request.send_id, request.email) == ("snd_0001", "ana@northwind.example")
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The long link is folded between the two URIs, never RFC 2047-encoded (that would break one-click).
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in header_block.split("List-Unsubscribe:", 1)[1].split("List-Unsubscribe-Post", 1)[0]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_without_a_link_only_the_mailto_is_offered() -> None:
    email = build_email(message())
    assert email["List-Unsubscribe"] == "<mailto:maya@brightwave-ledger.example?subject=unsubscribe>"
    assert email["List-Unsubscribe-Post"] is None
    assert email["Message-ID"] == message_id_for("snd_0001") == "<snd_0001@factory.invalid>"


def test_plain_text_with_an_escaped_html_alternative_and_clickable_links() -> None:
    body = 'Hi <Ana> & "team",\nSee https://brightwave.example/demo?a=1&b=2.\n\nBook: https://cal.example/maya), thanks'
    email = message_from_bytes(email_bytes(message(body=body)), policy=policy.default)

    assert email.get_content_type() == "multipart/alternative"
    plain = email.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain.startswith(body) and SPEC.sender.postal_address in plain
    html = email.get_body(("html",)).get_content()
    assert "<p>Hi &lt;Ana&gt; &amp; &quot;team&quot;,<br>" in html
    assert '<a href="https://brightwave.example/demo?a=1&amp;b=2">https://brightwave.example/demo?a=1&amp;b=2</a>.' in html
    assert '<a href="https://cal.example/maya">https://cal.example/maya</a>), thanks' in html
    assert html.count("<p>") == 3  # two paragraphs of the body and the postal address
    assert "<Ana>" not in html


def test_html_escapes_markup_in_links_and_text() -> None:
    html = text_to_html('<script>alert(1)</script> https://x.example/"><img src=x>')
    assert "<script>" not in html and "<img" not in html
    assert '<a href="https://x.example/">https://x.example/</a>&quot;&gt;&lt;img src=x&gt;' in html


def test_the_same_message_is_the_same_bytes_and_7bit_clean() -> None:
    body = "Hola Íñigo — naïve 😊 " * 20
    msg = message(from_name="Zoë Ångström", subject="Café ☕: un cierre más rápido", body=body)
    first, second = email_bytes(msg), email_bytes(msg)
    assert first == second  # no random MIME boundary: a file and an SMTP send of one message are identical
    assert first.isascii()  # no 8BITMIME needed
    email = message_from_bytes(first, policy=policy.default)
    assert email["Subject"] == msg.subject and email["From"].addresses[0].display_name == "Zoë Ångström"
    assert email.get_body(("plain",)).get_content().startswith(msg.body.rstrip())
    assert email.get_body(("html",)).get_content().count("naïve") == 20


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"unsubscribe_url": "http://feedback.example/unsubscribe/x"}, "https"),
        ({"message_id": "snd_0001@factory.invalid"}, "Message-ID"),
        ({"message_id": "<a@b>\r\nBcc: x@y.example"}, "Message-ID"),
        ({"unsubscribe_url": "https://feedback.example/unsubscribe/é"}, "ASCII"),
    ],
)
def test_bad_links_and_message_ids_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_email(message(**overrides))


# --- the environment ----------------------------------------------------------------------------


def smtp_env(**overrides: str) -> dict[str, str]:
    env = {
        "FACTORY_TRANSPORT": "smtp",
        "FACTORY_SMTP_HOST": "smtp.brightwave.example",
        "FACTORY_SMTP_USERNAME": "maya",
        "FACTORY_SMTP_PASSWORD": PASSWORD,
        "FACTORY_UNSUBSCRIBE_BASE_URL": "https://feedback.brightwave.example",
        "FACTORY_UNSUBSCRIBE_SECRET": SECRET,
    }
    return {k: v for k, v in {**env, **overrides}.items() if v is not None}


def test_smtp_settings_defaults_and_the_password_is_never_shown() -> None:
    settings = SmtpSettings.from_env(smtp_env())
    assert (settings.host, settings.port, settings.tls, settings.username) == ("smtp.brightwave.example", 587, "starttls", "maya")
    assert (settings.retry.retries, settings.retry.delay(1), settings.retry.delay(3), settings.retry.delay(10)) == (
        3,
        2.0,
        8.0,
        60.0,
    )
    assert PASSWORD not in repr(settings)
    assert SmtpSettings.from_env(smtp_env(FACTORY_SMTP_TLS="implicit")).port == 465
    assert SmtpSettings.from_env(smtp_env(FACTORY_SMTP_TLS="IMPLICIT", FACTORY_SMTP_PORT="2465")).port == 2465
    links = UnsubscribeLinks.from_env(smtp_env(), required=True)
    assert links is not None and SECRET not in repr(links)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"FACTORY_SMTP_HOST": ""}, "FACTORY_SMTP_HOST"),
        ({"FACTORY_SMTP_TLS": "ssl"}, "FACTORY_SMTP_TLS must be one of"),
        ({"FACTORY_SMTP_TLS": "none"}, "only allowed for a loopback host"),
        ({"FACTORY_SMTP_TLS": "none", "FACTORY_SMTP_HOST": "10.0.0.5"}, "only allowed for a loopback host"),
        ({"FACTORY_SMTP_PASSWORD": None}, "both FACTORY_SMTP_USERNAME and FACTORY_SMTP_PASSWORD"),
        ({"FACTORY_SMTP_PORT": "587x"}, "FACTORY_SMTP_PORT must be a whole number"),
        ({"FACTORY_SMTP_PORT": "70000"}, "port number"),
        ({"FACTORY_SMTP_RETRIES": "-1"}, "FACTORY_SMTP_RETRIES must be at least 0"),
        ({"FACTORY_SMTP_TIMEOUT_S": "soon"}, "FACTORY_SMTP_TIMEOUT_S must be a number"),
    ],
)
def test_bad_smtp_settings_name_the_variable(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        SmtpSettings.from_env(smtp_env(**overrides))
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_clear_text_is_allowed_on_loopback_only(host: str) -> None:
    assert is_loopback(host)
    assert SmtpSettings.from_env(smtp_env(FACTORY_SMTP_TLS="none", FACTORY_SMTP_HOST=host)).port == 25


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.1", "localhost.example.com", "0.0.0.0"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_transport_choice_defaults_to_file() -> None:
    assert transport_name({}) == "file"
    assert transport_name({"FACTORY_TRANSPORT": " SMTP "}) == "smtp"
    with pytest.raises(ConfigError, match="FACTORY_TRANSPORT must be one of file, smtp, got 'sendgrid'"):
        transport_name({"FACTORY_TRANSPORT": "sendgrid"})


def test_sender_mailboxes_from_json_with_their_own_caps_and_pacing() -> None:
    env = {
        "FACTORY_SMTP_SENDERS": '[{"email": "maya@bw.example", "name": "Maya", "daily_cap": 50, "per_minute": 10},'
        ' {"email": "sam@bw.example", "name": " Sam ", "daily_cap": null},'
        ' {"email": "ops@bw.example", "name": "Ops", "per_minute": null}]'
    }
    assert mailboxes_from_env(DEFAULT, env) == [
        Mailbox("maya@bw.example", "Maya", 50, 10.0),
        Mailbox("sam@bw.example", "Sam", None, DEFAULT_PER_MINUTE),
        Mailbox("ops@bw.example", "Ops", None, None),
    ]
    assert mailboxes_from_env(DEFAULT, {}) == [DEFAULT]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('{"email": "a@b.example"}', "non-empty JSON list"),
        ('["a@b.example"]', r"FACTORY_SMTP_SENDERS\[0\] must be an object"),
        ('[{"email": "a@b.example", "name": "A", "cap": 5}]', r"FACTORY_SMTP_SENDERS\[0\] has unknown keys \['cap'\]"),
        ('[{"email": "a@b.example", "name": "A"}, {"email": "nope", "name": "B"}]', r"\[1\]\.email must be an email"),
        ('[{"email": "a@b.example", "name": ""}]', r"\[0\]\.name"),
        ('[{"email": "a@b.example", "name": "A", "daily_cap": -1}]', r"\[0\]\.daily_cap"),
        ('[{"email": "a@b.example", "name": "A", "daily_cap": true}]', r"\[0\]\.daily_cap"),
        ('[{"email": "a@b.example", "name": "A", "per_minute": 0}]', r"\[0\]\.per_minute"),
        ('[{"email": "a@b.example", "name": "A"}, {"email": "A@b.example", "name": "B"}]', "twice"),
    ],
)
def test_bad_sender_mailboxes_name_the_entry(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        mailboxes_from_env(DEFAULT, {"FACTORY_SMTP_SENDERS": value})


def test_smtp_refuses_to_start_without_the_unsubscribe_secret_or_link(tmp_path: Path) -> None:
    with pytest.raises(MissingSecret, match="FACTORY_UNSUBSCRIBE_SECRET is not set"):
        DeliverySetup.from_env(SPEC, tmp_path, smtp_env(FACTORY_UNSUBSCRIBE_SECRET=None))
    with pytest.raises(MissingSecret, match="has 5 characters"):
        DeliverySetup.from_env(SPEC, tmp_path, smtp_env(FACTORY_UNSUBSCRIBE_SECRET="short"))
    with pytest.raises(ConfigError, match="needs FACTORY_UNSUBSCRIBE_BASE_URL"):
        DeliverySetup.from_env(SPEC, tmp_path, smtp_env(FACTORY_UNSUBSCRIBE_BASE_URL=None))
    with pytest.raises(ConfigError, match="must be an https URL"):
        DeliverySetup.from_env(SPEC, tmp_path, smtp_env(FACTORY_UNSUBSCRIBE_BASE_URL="http://feedback.example"))


def test_smtp_setup_rotates_the_configured_mailboxes_or_the_specs_sender(tmp_path: Path) -> None:
    setup = DeliverySetup.from_env(SPEC, tmp_path, smtp_env())
    assert isinstance(setup.transport, SmtpTransport) and not setup.transport.idempotent
    assert setup.mailboxes == [Mailbox(SPEC.sender.email, SPEC.sender.name, None, DEFAULT_PER_MINUTE)]
    assert setup.links is not None and setup.retry.retries == 3
    env = smtp_env(FACTORY_SMTP_SENDERS='[{"email": "sam@bw.example", "name": "Sam", "daily_cap": 3}]')
    assert [m.email for m in DeliverySetup.from_env(SPEC, tmp_path, env).mailboxes] == ["sam@bw.example"]


def test_the_file_transport_stays_the_default_and_gains_the_one_click_link_when_configured(tmp_path: Path) -> None:
    plain = DeliverySetup.from_env(SPEC, tmp_path, {})
    assert isinstance(plain.transport, FileTransport) and plain.transport.idempotent and plain.links is None
    assert plain.mailboxes == [Mailbox(SPEC.sender.email, SPEC.sender.name, None, None)]

    env = {"FACTORY_UNSUBSCRIBE_BASE_URL": "https://feedback.brightwave.example", "FACTORY_UNSUBSCRIBE_SECRET": SECRET}
    linked = DeliverySetup.from_env(SPEC, tmp_path, env)
    assert linked.links is not None
    path = linked.transport.deliver(message(unsubscribe_url=linked.links.url_for("snd_0001", "ana@northwind.example")))
    email = message_from_bytes(Path(path).read_bytes(), policy=policy.default)
    assert re.search(r"<https://feedback\.brightwave\.example/unsubscribe/[^>]+>", str(email["List-Unsubscribe"]))
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    with pytest.raises(MissingSecret):
        DeliverySetup.from_env(SPEC, tmp_path, {"FACTORY_UNSUBSCRIBE_BASE_URL": "https://feedback.brightwave.example"})
