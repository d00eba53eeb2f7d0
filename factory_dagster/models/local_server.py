"""An OpenAI-compatible HTTP server on 127.0.0.1, answered by the offline models.

It speaks enough of the OpenAI API for the real `openai` client to be exercised end to
end without a key or a network: the tests and benchmarks point `OPENAI_BASE_URL` at it.

- `POST /v1/chat/completions`: bearer auth, `usage` token counts, `response_format`
  (`json_object` / `json_schema`: the offline model's JSON answer is the content either way).
- `POST /v1/files` (multipart), `GET /v1/files[/{id}[/content]]`, `DELETE /v1/files/{id}`.
- `POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`: a batch is
  `in_progress` for `Faults.batch_polls_to_complete` polls, then runs every input line
  through the chat logic and completes with an output file (and an error file if any failed).
- `GET /v1/_local/stats` (no auth, not counted): request counts, for a server in another process.

`models` maps the requested model name to the offline defect rate that answers it.
`Faults` injects what real endpoints do under load: latency, rate limits (scripted or
enforced per model over a rolling window), 5xx, timeouts and answers the caller cannot use.
Its `answer_mode` stands in for a bad model rather than a bad server: every answer is then
the same well-formed but unrelated JSON (`junk_json`) or prose that is not JSON (`prose`).
`serving` runs the server on a thread of this process; `serving_in_subprocess` in another
process (own GIL, for benchmarks). `python -m factory_dagster.models.local_server` is the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from factory_dagster.models.offline import OfflineModel, estimate_tokens

OUTCOMES: tuple[str, ...] = (
    "ok",
    "429",
    "500",
    "503",
    "timeout",
    "malformed",
    "truncated",
    "refusal",
    "junk_body",
    "wrong_schema",
)
REFUSAL = "I can't help with that."
JUNK_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream error</p></body></html>"
WRONG_SCHEMA_CONTENT = json.dumps({"message": "hello"})
MALFORMED_PREFIX = "Sure! Here is the email you asked for:\n\n"
# What a junk model answers to every request, whatever it was asked (see `Faults.answer_mode`).
ANSWER_MODES: tuple[str, ...] = ("model", "junk_json", "prose")
JUNK_JSON_CONTENT = json.dumps({"status": "ok", "items": []})
PROSE_CONTENT = (
    "Thanks for reaching out! Happy to help with this. In short, a clear subject line, a friendly opening and "
    "one concrete next step usually work best. Let me know if you would like me to expand on any of these points."
)
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BANNER = "LISTENING "
DEFAULT_MODELS: dict[str, float] = {"gpt-4o": 0.0, "gpt-4o-mini": 0.15}


@dataclass
class Faults:
    """What the server does wrong, on purpose. Mutable while the server runs."""

    latency_s: float = 0.0
    """Added to every admitted chat completion (slept in the handler thread)."""
    script: dict[str, list[str]] = field(default_factory=dict)
    """Per requested model, outcomes (see `OUTCOMES`) consumed in order, one per chat request
    for that model (batch lines included), before normal answers. The lists are popped."""
    retry_after_s: float = 1.0
    """`Retry-After` of a scripted 429 or 503."""
    rpm_limit: int | None = None
    """Requests per rolling `rpm_window_s` per model; the next one gets 429 + `Retry-After`."""
    timeout_s: float = 5.0
    """How long a scripted "timeout" sleeps before answering normally."""
    batch_polls_to_complete: int = 2
    """`GET /v1/batches/{id}` says in_progress this many times, then the batch completes."""
    rpm_window_s: float = 60.0
    """The rolling window of `rpm_limit` (shorten it in tests to see a slot free up)."""
    answer_mode: str = "model"
    """The content of every chat answer (see `ANSWER_MODES`): "model" (the offline model's answer),
    "junk_json" (always `JUNK_JSON_CONTENT`) or "prose" (always `PROSE_CONTENT`, not JSON). Scripted
    outcomes still apply on top (a "truncated" junk answer is cut in half)."""
    answer_mode_models: list[str] | None = None
    """The requested models `answer_mode` applies to (None: every model)."""

    def __post_init__(self) -> None:
        if self.answer_mode not in ANSWER_MODES:
            raise ValueError(f"unknown answer mode {self.answer_mode!r}; expected one of {ANSWER_MODES}")
        for model, outcomes in self.script.items():
            unknown = [o for o in outcomes if o not in OUTCOMES]
            if unknown:
                raise ValueError(f"unknown scripted outcome(s) {unknown} for {model!r}; expected one of {OUTCOMES}")


@dataclass
class _Reply:
    status: int
    payload: Any = None
    """A JSON-serialisable value, or raw bytes sent as they are."""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        if isinstance(self.payload, bytes):
            return self.payload
        return json.dumps(self.payload, ensure_ascii=False).encode("utf-8")


def _error(
    status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> _Reply:
    return _Reply(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _seconds(value: float) -> str:
    """A Retry-After value: an integer when whole ("1"), else a decimal ("0.5", "59.9")."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _text(content: Any) -> str:
    """A message's content as text (content may be a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class LocalOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of connections (then a 1 s SYN retry)

    def __init__(
        self,
        models: Mapping[str, float],
        api_key: str = "local-test-key",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.models = dict(models)
        self.api_key = api_key
        self.faults = faults if faults is not None else Faults()
        self.requests = 0
        self.log: list[tuple[str, str, int]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._ids = count(1)
        self._windows: dict[str, deque[float]] = {}
        self._polls: Counter[str] = Counter()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count(self, status: int) -> int:
        """How many requests were answered with this HTTP status."""
        with self._lock:
            return sum(1 for _, _, s in self.log if s == status)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_status = Counter(str(s) for _, _, s in self.log)
            return {"requests": self.requests, "by_status": dict(by_status), "log": [list(e) for e in self.log]}

    def record(self, path: str, model: str, status: int) -> None:
        with self._lock:
            self.log.append((path, model, status))

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    # -- chat completions ---------------------------------------------------------------

    def answer(self, body: dict) -> tuple[int, dict]:
        """One chat completion without latency, rate limit or scripted faults (kept for callers)."""
        reply = self._validate(body) or self._complete(body, "ok")
        return reply.status, reply.payload

    def chat(self, body: Any, *, live: bool = True) -> _Reply:
        """A chat completion. `live` (an HTTP request, not a batch line) adds rate limit, latency, sleeps."""
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        model = body["model"]
        faults = self.faults
        if live:
            wait = self._admit(model)
            if wait is not None:
                reply = _error(
                    429,
                    f"Rate limit reached for {model} on requests per min (RPM): Limit {faults.rpm_limit}. "
                    f"Please try again in {_seconds(wait)}s.",
                    "requests",
                    "rate_limit_exceeded",
                )
                reply.headers["Retry-After"] = _seconds(wait)
                return reply
            if faults.latency_s > 0:
                time.sleep(faults.latency_s)
        outcome = self._next_outcome(model)
        if outcome == "429":
            reply = _error(
                429,
                f"Rate limit reached for {model}. Please try again in {_seconds(faults.retry_after_s)}s.",
                "requests",
                "rate_limit_exceeded",
            )
            reply.headers["Retry-After"] = _seconds(faults.retry_after_s)
            return reply
        if outcome == "503":
            reply = _error(503, "The server is overloaded or not ready yet.", "server_error", "service_unavailable")
            reply.headers["Retry-After"] = _seconds(faults.retry_after_s)
            return reply
        if outcome == "500":
            return _error(500, "The server had an error while processing your request. Sorry about that!", "server_error")
        if outcome == "junk_body":
            return _Reply(200, JUNK_BODY, "text/html; charset=utf-8")
        if outcome == "timeout" and live:
            time.sleep(faults.timeout_s)
        return self._complete(body, outcome)

    def _validate(self, body: Any) -> _Reply | None:
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or model not in self.models:
            return _error(
                404, f"The model '{model}' does not exist or you do not have access to it.", code="model_not_found", param="model"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a non-empty array of message objects.", param="messages")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by the local server.", param="stream")
        fmt = body.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in {"text", "json_object", "json_schema"}:
                return _error(400, f"Invalid response_format type {kind!r}.", param="response_format.type")
            if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
                return _error(
                    400, "Missing required parameter: 'response_format.json_schema'.", param="response_format.json_schema"
                )
        return None

    def _admit(self, model: str) -> float | None:
        """None when the request fits in the model's rolling window, else seconds until a slot frees."""
        limit, window = self.faults.rpm_limit, self.faults.rpm_window_s
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            stamps = self._windows.setdefault(model, deque())
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
            if len(stamps) < limit:
                stamps.append(now)
                return None
            wait = stamps[0] + window - now if stamps else window
            return max(0.1, math.ceil(wait * 10) / 10)

    def _next_outcome(self, model: str) -> str:
        with self._lock:
            queue = self.faults.script.get(model)
            outcome = queue.pop(0) if queue else "ok"
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown scripted outcome {outcome!r}")
        return outcome

    def _model_answer(self, model: str, messages: list[dict[str, str]], seed: Any) -> str:
        """What the model says before any scripted fault: the offline model's answer, or the junk of `answer_mode`."""
        faults = self.faults
        mode = faults.answer_mode if faults.answer_mode_models is None or model in faults.answer_mode_models else "model"
        if mode == "junk_json":
            return JUNK_JSON_CONTENT
        if mode == "prose":
            return PROSE_CONTENT
        return OfflineModel(model, self.models[model]).complete(messages, seed_key=str(seed))

    def _complete(self, body: dict, outcome: str) -> _Reply:
        model = body["model"]
        messages = [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))} for m in body["messages"]]
        text = self._model_answer(model, messages, body.get("seed", ""))
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        content: str | None = text
        refusal: str | None = None
        finish_reason = "stop"
        if outcome == "malformed":
            content = MALFORMED_PREFIX + text
        elif outcome == "truncated":
            content, finish_reason = text[: len(text) // 2], "length"
        elif outcome == "refusal":
            content, refusal = None, REFUSAL
        elif outcome == "wrong_schema":
            content = WRONG_SCHEMA_CONTENT
        completion_tokens = estimate_tokens(content if content is not None else refusal or "")
        return _Reply(
            200,
            {
                "id": f"chatcmpl-local-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": refusal},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "local-offline",
            },
        )

    # -- files ----------------------------------------------------------------------------

    def upload(self, content_type: str, raw: bytes) -> _Reply:
        try:
            fields = _parse_multipart(content_type, raw)
        except ValueError as exc:
            return _error(400, f"Could not parse multipart/form-data: {exc}")
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in FILE_PURPOSES:
            return _error(400, f"Invalid purpose {purpose!r}; expected one of {sorted(FILE_PURPOSES)}.", param="purpose")
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.", param="file")
        filename, data = fields["file"]
        return _Reply(200, self.store_file(filename or "upload", data, purpose))

    def store_file(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        meta = {
            "id": _new_id("file-"),
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self._lock:
            self.files[meta["id"]] = {"meta": meta, "data": data}
        return meta

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, body: Any) -> _Reply:
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        input_file_id = body.get("input_file_id")
        if input_file_id not in self.files:
            return _error(404, f"No such File object: {input_file_id}", code="not_found", param="input_file_id")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, f"Unsupported endpoint {body.get('endpoint')!r}; only /v1/chat/completions.", param="endpoint")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'.", param="completion_window")
        now = int(time.time())
        batch = {
            "id": _new_id("batch_"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            self.batches[batch["id"]] = batch
            return _Reply(200, dict(batch))

    def poll_batch(self, batch_id: str) -> _Reply:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", code="not_found")
            if batch["status"] in {"validating", "in_progress"}:
                self._polls[batch_id] += 1
                batch["status"] = "in_progress"
                if batch["in_progress_at"] is None:
                    lines = self.files[batch["input_file_id"]]["data"].splitlines()
                    batch["in_progress_at"] = int(time.time())
                    batch["request_counts"] = {"total": sum(1 for x in lines if x.strip()), "completed": 0, "failed": 0}
                if self._polls[batch_id] > self.faults.batch_polls_to_complete:
                    self._run_batch(batch)
            return _Reply(200, dict(batch))

    def cancel_batch(self, batch_id: str) -> _Reply:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", code="not_found")
            if batch["status"] in {"validating", "in_progress"}:
                now = int(time.time())
                batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            elif batch["status"] != "cancelled":
                return _error(400, f"Cannot cancel a batch with status '{batch['status']}'.")
            return _Reply(200, dict(batch))

    def _run_batch(self, batch: dict[str, Any]) -> None:
        data = self.files[batch["input_file_id"]]["data"]
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        tokens_in = tokens_out = 0
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            custom_id = None
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("the line is not a JSON object")
                custom_id = item.get("custom_id")
                if not isinstance(custom_id, str) or not custom_id:
                    raise ValueError("missing custom_id")
                if item.get("method") != "POST":
                    raise ValueError(f"method must be POST, not {item.get('method')!r}")
                if item.get("url") != batch["endpoint"]:
                    raise ValueError(f"url must be {batch['endpoint']}, not {item.get('url')!r}")
                if not isinstance(item.get("body"), dict):
                    raise ValueError("body must be a JSON object")
            except ValueError as exc:
                errors.append(
                    {
                        "id": _new_id("batch_req_"),
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": "invalid_request", "message": f"line {number}: {exc}"},
                    }
                )
                continue
            reply = self.chat(item["body"], live=False)
            request_id = _new_id("req_")
            if reply.status == 200 and isinstance(reply.payload, dict):
                usage = reply.payload["usage"]
                tokens_in += usage["prompt_tokens"]
                tokens_out += usage["completion_tokens"]
                response = {"status_code": 200, "request_id": request_id, "body": reply.payload}
                outputs.append({"id": _new_id("batch_req_"), "custom_id": custom_id, "response": response, "error": None})
            else:
                status, body = reply.status, reply.payload
                if not isinstance(body, dict):  # junk_body: a batch line's body must be JSON
                    status, body = 502, _error(502, "The upstream returned a body that is not JSON.", "server_error").payload
                response = {"status_code": status, "request_id": request_id, "body": body}
                errors.append({"id": _new_id("batch_req_"), "custom_id": custom_id, "response": response, "error": None})

        def jsonl(lines: list[dict[str, Any]]) -> bytes:
            return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode("utf-8")

        now = int(time.time())
        batch["output_file_id"] = self.store_file(f"{batch['id']}_output.jsonl", jsonl(outputs), "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self.store_file(f"{batch['id']}_error.jsonl", jsonl(errors), "batch_output")["id"]
        batch["request_counts"] = {"total": len(outputs) + len(errors), "completed": len(outputs), "failed": len(errors)}
        batch["usage"] = {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        }
        batch.update(status="completed", finalizing_at=now, completed_at=now)

    # -- routing --------------------------------------------------------------------------

    def route(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[str, _Reply]:
        """(model or "", reply) for one authenticated request."""
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/chat/completions":
            try:
                body = json.loads(raw)
            except ValueError:
                return "", _error(400, "We could not parse the JSON body of your request.")
            model = body.get("model") if isinstance(body, dict) else None
            return (model if isinstance(model, str) else ""), self.chat(body)
        if parts[:2] == ["v1", "files"]:
            if method == "POST" and len(parts) == 2:
                return "", self.upload(headers.get("Content-Type", ""), raw)
            if method == "GET" and len(parts) == 2:
                with self._lock:
                    data = [f["meta"] for f in self.files.values()]
                return "", _Reply(200, {"object": "list", "data": data, "has_more": False})
            with self._lock:
                stored = self.files.get(parts[2]) if len(parts) > 2 else None
            if len(parts) in {3, 4} and stored is None:
                return "", _error(404, f"No such File object: {parts[2]}", code="not_found")
            if method == "GET" and len(parts) == 3:
                return "", _Reply(200, stored["meta"])
            if method == "GET" and len(parts) == 4 and parts[3] == "content":
                return "", _Reply(200, stored["data"], "application/octet-stream")
            if method == "DELETE" and len(parts) == 3:
                with self._lock:
                    self.files.pop(parts[2], None)
                return "", _Reply(200, {"id": parts[2], "object": "file", "deleted": True})
        if parts[:2] == ["v1", "batches"]:
            if method == "POST" and len(parts) == 2:
                try:
                    body = json.loads(raw)
                except ValueError:
                    return "", _error(400, "We could not parse the JSON body of your request.")
                return "", self.create_batch(body)
            if method == "GET" and len(parts) == 2:
                with self._lock:
                    data = [dict(b) for b in reversed(self.batches.values())]
                return "", _Reply(200, {"object": "list", "data": data, "has_more": False})
            if method == "GET" and len(parts) == 3:
                return "", self.poll_batch(parts[2])
            if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
                return "", self.cancel_batch(parts[2])
        return "", _error(404, f"Invalid URL ({method} {path})")


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data fields: name -> (filename or None, bytes), byte-exact."""
    header = HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    if header.get_content_type() != "multipart/form-data":
        raise ValueError(f"expected multipart/form-data, got {content_type!r}")
    boundary = header.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ValueError("no boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + raw).split(delimiter)
    fields: dict[str, tuple[str | None, bytes]] = {}
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        _, _, piece = piece.partition(b"\r\n")  # transport padding and the delimiter line's end
        head, sep, content = piece.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a part has no header block")
        part = HeaderParser().parsestr(head.decode("utf-8", "replace"))
        name = part.get_param("name", header="content-disposition")
        if name is None:
            raise ValueError("a part has no name")
        fields[collapse_rfc2231_value(name)] = (part.get_filename(), content)
    if not closed:
        raise ValueError("no closing boundary")
    return fields


class _Handler(BaseHTTPRequestHandler):
    server: LocalOpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client's connection pool expects
    # Headers and body leave in two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (~40 ms a response). Real API servers set TCP_NODELAY too.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        raw = self._read_body()  # always, so a keep-alive connection stays in step
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if method == "GET" and path == "/v1/_local/stats":
            return self._send(_Reply(200, self.server.stats()))
        self.server.count_request()
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            model, reply = "", _error(401, "Incorrect API key provided.", code="invalid_api_key")
        else:
            model, reply = self.server.route(method, path, self.headers, raw)
        self.server.record(path, model, reply.status)
        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in {b"\r\n", b"\n", b""}:
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: _Reply) -> None:
        data = reply.body()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", _new_id("req_"))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a scripted timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: requests are counted and logged in `server.log`, not printed."""


@contextmanager
def serving(
    models: Mapping[str, float], api_key: str = "local-test-key", faults: Faults | None = None
) -> Iterator[LocalOpenAIServer]:
    """Run a server on a free loopback port, on a thread of this process, for the duration of the block."""
    server = LocalOpenAIServer(models, api_key, faults=faults)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-openai-server", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serving_in_subprocess(
    models: Mapping[str, float],
    api_key: str = "local-test-key",
    faults: Faults | None = None,
    startup_timeout_s: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run a server in another Python process (its own GIL) for the block; yields its base_url.

    The child is `python -m factory_dagster.models.local_server --port 0 ...` (plus `extra_args`,
    CLI options such as `--answer-mode prose`); it prints `LISTENING <base_url>` once bound. It
    is terminated (then killed) on exit. `fetch_stats(base_url)` reads its request counts.
    """
    command = [sys.executable, "-m", "factory_dagster.models.local_server", "--port", "0", "--api-key", api_key]
    for name, rate in models.items():
        command += ["--model", f"{name}={rate}"]
    if faults is not None:
        command += ["--faults-json", json.dumps(asdict(faults))]
    command += list(extra_args)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + startup_timeout_s
        line = ""
        while not line.startswith(BANNER):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"local server did not start within {startup_timeout_s} s")
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if ready:
                line = process.stdout.readline()
                if not line:
                    raise RuntimeError(f"local server exited with code {process.wait()} before listening")
        yield line[len(BANNER) :].strip()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        process.stdout.close()


def fetch_stats(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """{"requests", "by_status": {"200": n, ...}, "log": [[path, model, status], ...]} of a running server."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/_local/stats", timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def _model_arg(value: str) -> tuple[str, float]:
    name, sep, rate = value.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=DEFECT_RATE, got {value!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m factory_dagster.models.local_server",
        description="An OpenAI-compatible server on 127.0.0.1 answered by the offline models.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--model", type=_model_arg, action="append", metavar="NAME=DEFECT_RATE", help="repeatable")
    parser.add_argument("--api-key", default="local-test-key")
    parser.add_argument("--latency-ms", type=float, default=None, help="added to every chat completion")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per model, then 429")
    parser.add_argument(
        "--answer-mode",
        choices=ANSWER_MODES,
        default=None,
        help="what every chat answer is: the offline model's (model), the same unrelated JSON (junk_json) or prose (prose)",
    )
    parser.add_argument(
        "--answer-mode-model", action="append", metavar="NAME", help="apply --answer-mode to this model only (repeatable)"
    )
    parser.add_argument("--faults-json", default=None, help="a JSON object of Faults fields")
    args = parser.parse_args(argv)
    faults = Faults(**json.loads(args.faults_json)) if args.faults_json else Faults()
    if args.latency_ms is not None:
        faults.latency_s = args.latency_ms / 1000
    if args.rpm is not None:
        faults.rpm_limit = args.rpm
    if args.answer_mode is not None:
        faults.answer_mode = args.answer_mode
    if args.answer_mode_model:
        faults.answer_mode_models = list(args.answer_mode_model)
    models = dict(args.model) if args.model else DEFAULT_MODELS
    server = LocalOpenAIServer(models, args.api_key, args.port, faults)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{BANNER}{server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
