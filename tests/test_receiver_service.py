"""The feedback receiver as a running service: uvicorn on loopback, posted to with a real HTTP client.

Each check that something is refused also checks that nothing was stored (no file, no temp
file left behind); each accepted request is checked on disk, byte for byte where the receiver
promises to keep the payload as sent.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers_receiver import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    UNSUBSCRIBE_SECRET,
    basic_auth,
    files_under,
    mailgun_body,
    mailgun_event,
    multipart,
    postmark_event,
    receiver_env,
    reply_mime,
    request,
    sendgrid_event,
    sendgrid_headers,
    sendgrid_key_pair,
)

from factory_dagster.delivery.unsubscribe import make_token
from factory_dagster.receiver import cli as receiver_cli
from factory_dagster.receiver.app import build_app
from factory_dagster.receiver.config import ReceiverConfig, ReceiverConfigError
from factory_dagster.receiver.server import serve_in_thread
from factory_dagster.receiver.verify import VerificationError, load_sendgrid_public_key, verify_sendgrid
from factory_dagster.settings import Paths

SEND = "snd_4f0c1a9e8b7d6c5b4a39"
EMAIL = "ingrid.solberg@solvik.example"


@dataclass(frozen=True)
class Service:
    url: str
    paths: Paths
    sendgrid_private: ec.EllipticCurvePrivateKey

    @property
    def inbox(self) -> Path:
        return self.paths.home / "inbox"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    paths = Paths.under(tmp_path_factory.mktemp("receiver"))
    private, public = sendgrid_key_pair()
    app = build_app(paths, ReceiverConfig.from_env(receiver_env(public)))
    with serve_in_thread(app) as url:
        yield Service(url, paths, private)


@pytest.fixture
def unchanged(service: Service) -> Iterator[None]:
    """The test must leave the inbox exactly as it found it."""
    before = files_under(service.inbox)
    yield
    assert files_under(service.inbox) == before


def new_files(service: Service, before: set[Path]) -> list[Path]:
    return sorted(files_under(service.inbox) - before)


def stored_events(path: Path) -> tuple[dict, list[dict]]:
    header, *events = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return header, events


def token(send_id: str = SEND, email: str = EMAIL, secret: str = UNSUBSCRIBE_SECRET) -> str:
    return make_token(secret.encode(), send_id, email)


# --- health and one-click unsubscribe ----------------------------------------------------------------


def test_healthz_says_which_routes_are_configured(service: Service) -> None:
    answer = request("GET", f"{service.url}/healthz")

    assert answer.status == 200
    assert answer.json() == {
        "status": "ok",
        "configured": {"unsubscribe": True, "sendgrid": True, "mailgun": True, "postmark": True, "inbound": True},
    }


def test_unsubscribe_get_shows_a_confirmation_form_and_stores_nothing(service: Service, unchanged: None) -> None:
    answer = request("GET", f"{service.url}/unsubscribe/{token(email='o.brien+news@example.com')}")

    page = answer.body.decode()
    assert answer.status == 200
    assert '<form method="post">' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert "o.brien+news@example.com" in page
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_one_click_post_stores_one_unsubscribe_event(service: Service) -> None:
    before = files_under(service.inbox)

    answer = request(
        "POST",
        f"{service.url}/unsubscribe/{token()}",
        b"List-Unsubscribe=One-Click",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert answer.status == 200
    assert "You are unsubscribed" in answer.body.decode()
    (path,) = new_files(service, before)
    assert path.parent == service.paths.esp_events_inbox / "oneclick" and path.suffix == ".jsonl"
    header, events = stored_events(path)
    assert (header["format"], header["provider"], header["events"]) == ("factory-esp-events/1", "oneclick", 1)
    assert [(e["event"], e["send_id"], e["email"]) for e in events] == [("unsubscribe", SEND, EMAIL)]


def test_one_click_post_as_multipart_form_is_accepted(service: Service) -> None:
    before = files_under(service.inbox)
    body, content_type = multipart({"List-Unsubscribe": "One-Click"})

    answer = request(
        "POST", f"{service.url}/unsubscribe/{token('snd_aa11bb22cc33dd44ee55')}", body, {"Content-Type": content_type}
    )

    assert answer.status == 200
    (path,) = new_files(service, before)
    assert stored_events(path)[1][0]["send_id"] == "snd_aa11bb22cc33dd44ee55"


@pytest.mark.parametrize(
    "bad_token",
    [
        "not-a-token",
        token()[:-3] + ("AAA" if not token().endswith("AAA") else "BBB"),  # signature tampered
        token(secret="an-attacker-secret-of-enough-length-0123456789"),  # signed with another secret
        token().split(".")[0] + "." + token("snd_other00000000000000").split(".")[1],  # payload and signature mixed
    ],
    ids=["garbage", "tampered", "other-secret", "mixed"],
)
def test_bad_unsubscribe_tokens_get_400_and_store_nothing(service: Service, unchanged: None, bad_token: str) -> None:
    get = request("GET", f"{service.url}/unsubscribe/{bad_token}")
    post = request("POST", f"{service.url}/unsubscribe/{bad_token}", b"List-Unsubscribe=One-Click")

    assert (get.status, post.status) == (400, 400)
    assert "not valid" in get.body.decode() and "<form" not in get.body.decode()


def test_unsubscribe_post_without_the_rfc_8058_body_stores_nothing(service: Service, unchanged: None) -> None:
    answer = request("POST", f"{service.url}/unsubscribe/{token()}", b"confirm=yes")

    assert answer.status == 400
    assert "List-Unsubscribe=One-Click" in answer.body.decode()


# --- SendGrid ------------------------------------------------------------------------------------


def test_sendgrid_signed_batch_is_stored_as_sent(service: Service) -> None:
    events = [
        sendgrid_event("processed", SEND, EMAIL),
        sendgrid_event("delivered", SEND, EMAIL, response="250 OK"),
        sendgrid_event("open", SEND, EMAIL, sg_machine_open=False, useragent="Mozilla/5.0", ip="255.255.255.255"),
    ]
    body = json.dumps(events).encode()
    before = files_under(service.inbox)

    answer = request("POST", f"{service.url}/webhooks/sendgrid", body, sendgrid_headers(service.sendgrid_private, body))

    assert (answer.status, answer.json()) == (200, {"stored": 3})
    (path,) = new_files(service, before)
    assert path.parent == service.paths.esp_events_inbox / "sendgrid"
    header, stored = stored_events(path)
    assert header["events"] == 3 and stored == events


def test_sendgrid_bad_signatures_get_401_and_store_nothing(service: Service, unchanged: None) -> None:
    body = json.dumps([sendgrid_event("delivered", SEND, EMAIL)]).encode()
    other_key, _ = sendgrid_key_pair()
    url = f"{service.url}/webhooks/sendgrid"
    tampered = body.replace(b"delivered", b"bounce\x20\x20\x20")

    answers = {
        "other key": request("POST", url, body, sendgrid_headers(other_key, body)),
        "tampered body": request("POST", url, tampered, sendgrid_headers(service.sendgrid_private, body)),
        "stale timestamp": request(
            "POST", url, body, sendgrid_headers(service.sendgrid_private, body, timestamp=int(time.time()) - 3600)
        ),
        "no headers": request("POST", url, body, {"Content-Type": "application/json"}),
        "not base64": request(
            "POST",
            url,
            body,
            {**sendgrid_headers(service.sendgrid_private, body), "X-Twilio-Email-Event-Webhook-Signature": "%%%"},
        ),
    }

    assert {name: a.status for name, a in answers.items()} == dict.fromkeys(answers, 401)
    assert "timestamp" in answers["stale timestamp"].json()["error"]


def test_sendgrid_verified_but_not_an_array_is_400(service: Service, unchanged: None) -> None:
    body = json.dumps({"event": "delivered"}).encode()

    answer = request("POST", f"{service.url}/webhooks/sendgrid", body, sendgrid_headers(service.sendgrid_private, body))

    assert answer.status == 400


def test_sendgrid_oversized_body_is_refused_before_it_is_read(service: Service, unchanged: None) -> None:
    parts = urlsplit(service.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", "/webhooks/sendgrid")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(6 * 1024 * 1024))
    connection.endheaders()

    response = connection.getresponse()

    assert response.status == 413
    connection.close()


def test_sendgrid_verification_matches_sendgrids_published_example() -> None:
    """The known-answer example of SendGrid's own libraries: our check accepts their signature, and only theirs."""
    key = load_sendgrid_public_key(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
    )
    signature = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
    timestamp = "1600112502"
    event = {
        "email": "hello@world.com",
        "event": "dropped",
        "reason": "Bounced Address",
        "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
        "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
        "timestamp": 1600112492,
    }
    payload = (json.dumps([event], sort_keys=True, separators=(",", ":")) + "\r\n").encode()

    verify_sendgrid(key, payload, signature, timestamp, now=1600112502.0 + 5)

    with pytest.raises(VerificationError, match="bad signature"):
        verify_sendgrid(key, payload.replace(b"dropped", b"dropper"), signature, timestamp, now=1600112507.0)
    with pytest.raises(VerificationError, match="timestamp"):
        verify_sendgrid(key, payload, signature, timestamp, now=1600112502.0 + 601)


# --- Mailgun and Postmark ------------------------------------------------------------------------


def test_mailgun_signed_event_is_stored(service: Service) -> None:
    event = mailgun_event("delivered", SEND, EMAIL, **{"delivery-status": {"code": 250, "message": "OK", "attempt-no": 1}})
    before = files_under(service.inbox)

    answer = request("POST", f"{service.url}/webhooks/mailgun", mailgun_body(event), {"Content-Type": "application/json"})

    assert (answer.status, answer.json()) == (200, {"stored": 1})
    (path,) = new_files(service, before)
    assert path.parent.name == "mailgun" and stored_events(path)[1] == [event]


def test_mailgun_bad_or_stale_signatures_get_401_and_store_nothing(service: Service, unchanged: None) -> None:
    event = mailgun_event("opened", SEND, EMAIL)
    url = f"{service.url}/webhooks/mailgun"
    signed = json.loads(mailgun_body(event))

    answers = {
        "wrong key": request("POST", url, mailgun_body(event, key="key-not-the-right-one")),
        "stale": request("POST", url, mailgun_body(event, timestamp=int(time.time()) - 3600)),
        "unsigned": request("POST", url, json.dumps({"event-data": event}).encode()),
        "bad hex": request(
            "POST", url, json.dumps({**signed, "signature": {**signed["signature"], "signature": "00" * 32}}).encode()
        ),
        "not json": request("POST", url, b"signature=abc"),
    }

    assert {name: a.status for name, a in answers.items()} == {**dict.fromkeys(answers, 401), "not json": 400}


def test_mailgun_token_is_bound_to_its_event_retries_store_nothing_new(service: Service) -> None:
    """Mailgun signs the token, not the event: a captured signature must not carry another event."""
    body = mailgun_body(mailgun_event("delivered", "snd_bb22cc33dd44ee55ff66", EMAIL))
    forged = json.loads(body)
    forged["event-data"]["event"] = "complained"
    url = f"{service.url}/webhooks/mailgun"
    before = files_under(service.inbox)

    first, retry, forgery = (request("POST", url, b) for b in (body, body, json.dumps(forged).encode()))

    assert (first.status, first.json()) == (200, {"stored": 1})
    assert (retry.status, retry.json()) == (200, {"stored": 0})
    assert forgery.status == 401 and "replayed" in forgery.json()["error"]
    assert len(new_files(service, before)) == 1


def test_postmark_event_with_the_right_credentials_is_stored(service: Service) -> None:
    event = postmark_event("Delivery", SEND, EMAIL, DeliveredAt="2026-03-03T09:00:02.9070259Z", Details="Test delivery")
    before = files_under(service.inbox)

    answer = request(
        "POST",
        f"{service.url}/webhooks/postmark",
        json.dumps(event).encode(),
        {"Content-Type": "application/json", **basic_auth(POSTMARK_USER, POSTMARK_PASSWORD)},
    )

    assert (answer.status, answer.json()) == (200, {"stored": 1})
    (path,) = new_files(service, before)
    assert path.parent.name == "postmark" and stored_events(path)[1] == [event]


def test_postmark_without_the_right_credentials_gets_401_and_stores_nothing(service: Service, unchanged: None) -> None:
    body = json.dumps(postmark_event("Open", SEND, EMAIL, ReceivedAt="2026-03-03T10:00:00Z")).encode()
    url = f"{service.url}/webhooks/postmark"

    answers = [
        request("POST", url, body, basic_auth(POSTMARK_USER, "wrong")),
        request("POST", url, body, basic_auth("someone", POSTMARK_PASSWORD)),
        request("POST", url, body, basic_auth(INBOUND_USER, INBOUND_PASSWORD)),  # another route's credentials
        request("POST", url, body),
    ]

    assert [a.status for a in answers] == [401] * 4
    assert all(a.headers["WWW-Authenticate"] == 'Basic realm="factory"' for a in answers)


# --- inbound replies -----------------------------------------------------------------------------


def test_inbound_raw_message_is_stored_byte_for_byte(service: Service) -> None:
    raw = reply_mime(
        SEND, "Ingrid Solberg <ingrid.solberg@solvik.example>", "Très bien, call me Thursday.\n", "<r1@solvik.example>"
    )
    raw_latin1 = raw.replace("Très".encode(), "Très".encode("latin-1")).replace(b"utf-8", b"iso-8859-1")
    body, content_type = multipart({"email": raw_latin1, "to": "outreach@brightwave.example", "from": "ingrid@solvik.example"})
    before = files_under(service.inbox)

    answer = request(
        "POST", f"{service.url}/inbound", body, {"Content-Type": content_type, **basic_auth(INBOUND_USER, INBOUND_PASSWORD)}
    )

    assert (answer.status, answer.json()) == (200, {"stored": 1})
    (path,) = new_files(service, before)
    assert path.parent == service.paths.replies_inbox and path.suffix == ".eml"
    trace, _, rest = path.read_bytes().partition(b"X-Factory-Received-Via: inbound-parse\r\n")
    assert trace.startswith(b"X-Factory-Received-At: ") and rest == raw_latin1
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["In-Reply-To"] == f"<{SEND}@factory.invalid>"
    assert "Très bien" in message.get_content()


def test_inbound_parsed_fields_are_rebuilt_into_a_message(service: Service) -> None:
    headers = (
        "Received: by mx.sendgrid.net with SMTP id abc\r\n"
        "Message-ID: <CAF=r2@mail.gmail.com>\r\n"
        f"In-Reply-To: <{SEND}@factory.invalid>\r\n"
        f"References: <{SEND}@factory.invalid>\r\n"
        "Date: Tue, 03 Mar 2026 11:02:00 +0000\r\n"
    )
    fields = {
        "headers": headers,
        "from": "Jürgen Weiß <juergen.weiss@example.de>",
        "to": "outreach@brightwave.example",
        "subject": "Re: Closing the month in fewer days",
        "text": "Gern, nächste Woche passt.\n\n> Hi Jürgen,",
        "charsets": json.dumps({"text": "utf-8", "from": "utf-8", "subject": "utf-8", "to": "utf-8", "headers": "utf-8"}),
        "envelope": json.dumps({"to": ["outreach@brightwave.example"], "from": "juergen.weiss@example.de"}),
    }
    body, content_type = multipart(fields)
    before = files_under(service.inbox)

    answer = request(
        "POST", f"{service.url}/inbound", body, {"Content-Type": content_type, **basic_auth(INBOUND_USER, INBOUND_PASSWORD)}
    )

    assert answer.status == 200
    (path,) = new_files(service, before)
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["Message-ID"] == "<CAF=r2@mail.gmail.com>"
    assert message["In-Reply-To"] == f"<{SEND}@factory.invalid>"
    assert message["From"].addresses[0].addr_spec == "juergen.weiss@example.de"
    assert "nächste Woche passt" in message.get_content()


def test_inbound_refuses_missing_credentials_and_unusable_forms(service: Service, unchanged: None) -> None:
    body, content_type = multipart({"email": reply_mime(SEND, "a@example.com", "ok", "<x@example.com>")})
    empty, empty_type = multipart({"subject": "nothing else"})
    url = f"{service.url}/inbound"

    no_auth = request("POST", url, body, {"Content-Type": content_type})
    wrong = request("POST", url, body, {"Content-Type": content_type, **basic_auth(INBOUND_USER, "nope")})
    unusable = request("POST", url, empty, {"Content-Type": empty_type, **basic_auth(INBOUND_USER, INBOUND_PASSWORD)})
    not_form = request("POST", url, b"{}", {"Content-Type": "application/json", **basic_auth(INBOUND_USER, INBOUND_PASSWORD)})

    assert (no_auth.status, wrong.status, unusable.status, not_form.status) == (401, 401, 400, 400)
    assert "email" in unusable.json()["error"]


# --- configuration ---------------------------------------------------------------------------------


def test_routes_without_their_secret_answer_503_naming_the_variable(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    with serve_in_thread(build_app(paths, ReceiverConfig.from_env({}))) as url:
        answers = {
            "sendgrid": request("POST", f"{url}/webhooks/sendgrid", b"[]"),
            "mailgun": request("POST", f"{url}/webhooks/mailgun", b"{}"),
            "postmark": request("POST", f"{url}/webhooks/postmark", b"{}"),
            "inbound": request("POST", f"{url}/inbound", b""),
            "unsubscribe": request("GET", f"{url}/unsubscribe/{token()}"),
        }

    assert {name: a.status for name, a in answers.items()} == dict.fromkeys(answers, 503)
    assert "FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY" in answers["sendgrid"].json()["error"]
    assert "FACTORY_MAILGUN_SIGNING_KEY" in answers["mailgun"].json()["error"]
    assert "FACTORY_POSTMARK_WEBHOOK_PASSWORD" in answers["postmark"].json()["error"]
    assert "FACTORY_INBOUND_USER" in answers["inbound"].json()["error"]
    assert files_under(tmp_path) == set()


def test_unusable_secrets_stop_the_start_up_without_echoing_them() -> None:
    _, public = sendgrid_key_pair()
    good = receiver_env(public)
    broken = {
        "FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(b"definitely not a key").decode(),
        "FACTORY_POSTMARK_WEBHOOK_PASSWORD": "",
        "FACTORY_UNSUBSCRIBE_SECRET": "short-secret",
    }

    for name, value in broken.items():
        with pytest.raises(ReceiverConfigError) as error:
            ReceiverConfig.from_env({**good, name: value})
        assert name in str(error.value)
        assert not value or value not in str(error.value)
    config = ReceiverConfig.from_env(good)
    assert MAILGUN_KEY not in repr(config) and UNSUBSCRIBE_SECRET not in repr(config) and POSTMARK_PASSWORD not in repr(config)
    assert POSTMARK_PASSWORD not in repr(config.postmark)


def test_cli_registers_serve_feedback_and_refuses_a_broken_key(monkeypatch, capsys, tmp_path: Path) -> None:
    root = argparse.ArgumentParser(prog="factory")
    receiver_cli.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["serve-feedback", "--port", "9123"])
    monkeypatch.setenv("FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY", "not-base64-der!")

    code = args.run(args, Paths.under(tmp_path))

    assert (args.host, args.port, code) == ("127.0.0.1", 9123, 2)
    assert "FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY" in capsys.readouterr().err


def test_odd_but_valid_json_strings_are_stored_and_read_back(service: Service) -> None:
    """A lone surrogate or a non-Latin subject must not turn a verified batch into a 500 (the ESP would retry forever)."""
    body = b'[{"event":"delivered","email":"a@example.com","timestamp":1772528400,"subject":"\\ud800 \xe6\x97\xa5\xe6\x9c\xac"}]'
    before = files_under(service.inbox)

    answer = request("POST", f"{service.url}/webhooks/sendgrid", body, sendgrid_headers(service.sendgrid_private, body))

    assert answer.status == 200
    (path,) = new_files(service, before)
    assert stored_events(path)[1] == json.loads(body)
