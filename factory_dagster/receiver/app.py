"""The receiver's HTTP routes (Starlette): verify, store durably, answer.

| route | who calls it | check | stores |
|---|---|---|---|
| `GET /healthz` | monitoring | none | nothing |
| `GET /unsubscribe/{token}` | a person following the link | token signature | nothing: a confirmation form (mail scanners follow links, so a GET never unsubscribes) |
| `POST /unsubscribe/{token}` | the mail client (RFC 8058, body `List-Unsubscribe=One-Click`) or the form | token signature | `inbox/esp_events/oneclick/` |
| `POST /webhooks/sendgrid` | SendGrid Event Webhook (JSON array) | ECDSA signature, fresh timestamp | `inbox/esp_events/sendgrid/` |
| `POST /webhooks/mailgun` | Mailgun webhook (`signature` + `event-data`) | HMAC, fresh timestamp, token bound to its event | `inbox/esp_events/mailgun/` (a retry: nothing new) |
| `POST /webhooks/postmark` | Postmark webhook (one JSON object with `RecordType`) | basic auth | `inbox/esp_events/postmark/` |
| `POST /inbound` | inbound-parse route (multipart/form-data) | basic auth | `inbox/replies/` |

Answers: 2xx only after the file is fsynced; 401 for a bad signature, token-less or wrong
credentials (nothing stored); 400 for a verified payload that is not the documented shape;
413 for an oversized body; 503 when the route's secret is not configured (ESPs retry, so
events wait at the ESP until it is). Logs name the route and the outcome, never a token,
secret or payload: the token carries the recipient's address.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from factory_dagster.delivery.unsubscribe import BadToken, UnsubscribeRequest, read_token
from factory_dagster.receiver.config import INBOUND_ENV, MAILGUN_KEY_ENV, POSTMARK_ENV, SENDGRID_KEY_ENV, ReceiverConfig
from factory_dagster.receiver.inbound import InboundError, form_fields, raw_message
from factory_dagster.receiver.inbox import ONECLICK, iso_utc, store_events, store_reply
from factory_dagster.receiver.verify import (
    BasicCredentials,
    TokenLedger,
    VerificationError,
    basic_auth_matches,
    verify_mailgun,
    verify_sendgrid,
)
from factory_dagster.settings import Paths

log = logging.getLogger("factory.receiver")

MAX_WEBHOOK_BYTES = 5 * 1024 * 1024  # SendGrid batches stay far below this
MAX_INBOUND_BYTES = 30 * 1024 * 1024  # SendGrid Inbound Parse's own limit for a whole message
MAX_UNSUBSCRIBE_BYTES = 64 * 1024
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"
_PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


class Refusal(Exception):
    """A request we answer with an error and store nothing for."""

    def __init__(self, status: int, message: str, html_page: bool = False, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.html_page, self.headers = status, message, html_page, headers or {}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A small self-contained page (no scripts, no external resources)."""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    route = request.url.path.split("/unsubscribe/")[0] + ("/unsubscribe/…" if "/unsubscribe/" in request.url.path else "")
    log.warning("refused %s %s: %d %s", request.method, route, exc.status, exc.message)
    if exc.html_page:
        page = _page("This link does not work", f"<p>{html.escape(exc.message)}</p>", exc.status)
        page.headers.update(exc.headers)
        return page
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything larger than `limit` before reading all of it."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise Refusal(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal(400, f"body is not JSON: {exc}") from exc


def _not_configured(route: str, *variables: str) -> Refusal:
    return Refusal(503, f"{route} is not configured on this receiver: set {' and '.join(variables)}")


def _require_basic_auth(request: Request, credentials: BasicCredentials) -> None:
    if not basic_auth_matches(request.headers.get("authorization"), credentials):
        raise Refusal(401, "bad or missing credentials", headers={"WWW-Authenticate": 'Basic realm="factory"'})


class Receiver:
    """The routes, bound to one data folder, one configuration and one clock (tests pass their own)."""

    def __init__(self, paths: Paths, config: ReceiverConfig, clock: Callable[[], float] = time.time) -> None:
        self.paths, self.config, self.clock = paths, config, clock
        self.mailgun_tokens = TokenLedger()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def _store(self, provider: str, events: list[dict[str, Any]]) -> JSONResponse:
        if events:
            path = await run_in_threadpool(store_events, self.paths.esp_events_inbox, provider, events, self._now())
            log.info("stored %d %s event(s) in %s", len(events), provider, path.name)
        return JSONResponse({"stored": len(events)})

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "configured": self.config.configured()})

    def _token(self, request: Request) -> UnsubscribeRequest:
        if self.config.unsubscribe_secret is None:
            raise Refusal(503, "One-click unsubscribe is not configured on this server.", html_page=True)
        try:
            return read_token(self.config.unsubscribe_secret, request.path_params["token"])
        except BadToken as exc:
            raise Refusal(400, "This unsubscribe link is not valid. Reply to the message to be removed.", html_page=True) from exc

    async def unsubscribe_form(self, request: Request) -> HTMLResponse:
        target = self._token(request)
        body = (
            f"<p>Stop all messages to <strong>{html.escape(target.email)}</strong>?</p>"
            f'<form method="post"><input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return _page("Unsubscribe", body)

    async def unsubscribe(self, request: Request) -> HTMLResponse:
        target = self._token(request)
        body = await _read_body(request, MAX_UNSUBSCRIBE_BYTES)
        if _one_click_value(request.headers.get("content-type", ""), body) != ONE_CLICK_VALUE:
            raise Refusal(400, f"Expected the form field {ONE_CLICK_FIELD}={ONE_CLICK_VALUE} (RFC 8058).", html_page=True)
        occurred = iso_utc(self._now())
        await self._store(
            ONECLICK, [{"event": "unsubscribe", "send_id": target.send_id, "email": target.email, "occurred_at": occurred}]
        )
        return _page("You are unsubscribed", f"<p>We will not write to {html.escape(target.email)} again.</p>")

    async def sendgrid(self, request: Request) -> JSONResponse:
        if self.config.sendgrid_key is None:
            raise _not_configured("the SendGrid webhook", SENDGRID_KEY_ENV)
        body = await _read_body(request, MAX_WEBHOOK_BYTES)
        try:
            verify_sendgrid(
                self.config.sendgrid_key,
                body,
                request.headers.get("x-twilio-email-event-webhook-signature"),
                request.headers.get("x-twilio-email-event-webhook-timestamp"),
                self.clock(),
            )
        except VerificationError as exc:
            raise Refusal(401, str(exc)) from exc
        events = _json(body)
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise Refusal(400, "expected a JSON array of event objects")
        return await self._store("sendgrid", events)

    async def mailgun(self, request: Request) -> JSONResponse:
        if self.config.mailgun_key is None:
            raise _not_configured("the Mailgun webhook", MAILGUN_KEY_ENV)
        payload = _json(await _read_body(request, MAX_WEBHOOK_BYTES))
        if not isinstance(payload, dict):
            raise Refusal(400, "expected a JSON object with 'signature' and 'event-data'")
        event = payload.get("event-data")
        try:
            verify_mailgun(self.config.mailgun_key, payload.get("signature"), self.clock())
            digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
            first = self.mailgun_tokens.first_use(str(payload["signature"]["token"]), digest, self.clock())
        except VerificationError as exc:
            raise Refusal(401, str(exc)) from exc
        if not isinstance(event, dict):
            raise Refusal(400, "expected an 'event-data' object")
        return await self._store("mailgun", [event] if first else [])

    async def postmark(self, request: Request) -> JSONResponse:
        if self.config.postmark is None:
            raise _not_configured("the Postmark webhook", *POSTMARK_ENV)
        _require_basic_auth(request, self.config.postmark)
        event = _json(await _read_body(request, MAX_WEBHOOK_BYTES))
        if not isinstance(event, dict) or not isinstance(event.get("RecordType"), str):
            raise Refusal(400, "expected a JSON object with a RecordType")
        return await self._store("postmark", [event])

    async def inbound(self, request: Request) -> JSONResponse:
        if self.config.inbound is None:
            raise _not_configured("the inbound-parse route", *INBOUND_ENV)
        _require_basic_auth(request, self.config.inbound)
        body = await _read_body(request, MAX_INBOUND_BYTES)
        try:
            message = raw_message(form_fields(request.headers.get("content-type", ""), body))
        except InboundError as exc:
            raise Refusal(400, str(exc)) from exc
        path = await run_in_threadpool(store_reply, self.paths.replies_inbox, message, self._now(), "inbound-parse")
        log.info("stored an inbound message in %s", path.name)
        return JSONResponse({"stored": 1})


def _one_click_value(content_type: str, body: bytes) -> str | None:
    """The List-Unsubscribe field of a urlencoded or multipart form (RFC 8058 allows both)."""
    if content_type.lower().startswith("multipart/form-data"):
        try:
            value = form_fields(content_type, body).get(ONE_CLICK_FIELD)
        except InboundError:
            return None
        return value.decode("utf-8", errors="replace").strip() if value is not None else None
    values = parse_qs(body.decode("utf-8", errors="replace")).get(ONE_CLICK_FIELD, [])
    return values[0].strip() if values else None


def build_app(paths: Paths, config: ReceiverConfig, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app for one data folder."""
    receiver = Receiver(paths, config, clock)
    routes = [
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/unsubscribe/{token}", receiver.unsubscribe_form, methods=["GET"]),
        Route("/unsubscribe/{token}", receiver.unsubscribe, methods=["POST"]),
        Route("/webhooks/sendgrid", receiver.sendgrid, methods=["POST"]),
        Route("/webhooks/mailgun", receiver.mailgun, methods=["POST"]),
        Route("/webhooks/postmark", receiver.postmark, methods=["POST"]),
        Route("/inbound", receiver.inbound, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={Refusal: _refused})
