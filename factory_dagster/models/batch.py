"""OpenAI Batch API round trip for non-urgent daily work (half the price, answers within 24 h).

`run_batch` uploads the requests as a JSONL file, creates a batch on
`/v1/chat/completions`, polls it to an end state, downloads the output and error
files and maps every line back to its request by `custom_id`.

The contract: every request gets exactly one `BatchItemResult`, whatever happens.
A line in the error file, a non-200 response, a refusal, a truncated or unreadable
answer, a line that is not JSON, a request absent from both files, a batch that
failed, expired or was cancelled — each becomes an "error" result naming the cause,
never an exception and never a silently missing request. Only a batch that is still
running at `timeout_s` raises (`BatchTimeoutError`, after asking the server to cancel
it); the error carries the batch id so `wait_for_batch` can collect what it produced.

Status "ok" means the server produced a complete answer (finish_reason "stop"); the
caller still validates the text before using or caching it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

ENDPOINT = "/v1/chat/completions"
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 200 * 1024 * 1024
NO_RESULT = "no result in the batch output"
_MAX_ERROR_CHARS = 1000
_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    model: str
    messages: list[dict[str, str]]
    response_format: dict | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def body(self) -> dict[str, Any]:
        """The chat completion request body; unset parameters are left out."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        for name in ("response_format", "temperature", "max_tokens", "seed"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


@dataclass
class BatchItemResult:
    custom_id: str
    status: str  # "ok" | "error"
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None
    error: str | None


@dataclass
class BatchRun:
    batch_id: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    status: str
    polls: int
    results: dict[str, BatchItemResult]
    # Output lines that could not be tied to a request, duplicates, download failures: for the run's log.
    problems: list[str] = field(default_factory=list)

    def ok(self) -> dict[str, BatchItemResult]:
        return {cid: r for cid, r in self.results.items() if r.status == "ok"}

    def errors(self) -> dict[str, BatchItemResult]:
        return {cid: r for cid, r in self.results.items() if r.status != "ok"}


class BatchTimeoutError(TimeoutError):
    """The batch was still running at the deadline; cancellation was requested."""

    def __init__(self, message: str, batch_id: str, input_file_id: str, status: str, polls: int) -> None:
        super().__init__(message)
        self.batch_id = batch_id
        self.input_file_id = input_file_id
        self.status = status
        self.polls = polls


def _line(request: BatchRequest) -> bytes:
    record = {"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT, "body": request.body()}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def _check_ids(requests: Sequence[BatchRequest]) -> None:
    if not requests:
        raise ValueError("a batch needs at least one request")
    seen: set[str] = set()
    duplicates: list[str] = []
    for r in requests:
        if not isinstance(r.custom_id, str) or not r.custom_id:
            raise ValueError(f"custom_id must be a non-empty string, got {r.custom_id!r}")
        if r.custom_id in seen:
            duplicates.append(r.custom_id)
        seen.add(r.custom_id)
    if duplicates:
        raise ValueError(f"custom_id must be unique in a batch; repeated: {sorted(set(duplicates))[:10]}")


def build_jsonl(requests: Sequence[BatchRequest]) -> bytes:
    """The batch input file: one JSON line per request, custom_ids unique (ValueError otherwise)."""
    _check_ids(requests)
    return b"".join(_line(r) for r in requests)


def split_for_batch(
    requests: Sequence[BatchRequest], max_requests: int = MAX_REQUESTS_PER_BATCH, max_bytes: int = MAX_BYTES_PER_BATCH
) -> list[list[BatchRequest]]:
    """Requests cut, in order, into chunks within the Batch API's per-file limits.

    custom_ids must be unique across all chunks (results are merged by custom_id).
    A single request larger than `max_bytes` cannot be batched: ValueError.
    """
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("max_requests and max_bytes must be positive")
    _check_ids(requests)
    chunks: list[list[BatchRequest]] = []
    current: list[BatchRequest] = []
    size = 0
    for r in requests:
        n = len(_line(r))
        if n > max_bytes:
            raise ValueError(f"request {r.custom_id} is {n} bytes, more than a batch file may hold ({max_bytes})")
        if current and (len(current) >= max_requests or size + n > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(r)
        size += n
    chunks.append(current)
    return chunks


def run_batch(
    client: openai.OpenAI,
    requests: Sequence[BatchRequest],
    poll_interval_s: float = 5.0,
    timeout_s: float = 24 * 3600,
    sleep: Callable[[float], Any] = time.sleep,
    metadata: dict[str, str] | None = None,
) -> BatchRun:
    """Upload, create, wait for and collect one batch; one result per request (see the module doc).

    Raises ValueError for invalid input (before anything is uploaded), `openai.OpenAIError`
    when the upload or the batch creation is refused, and `BatchTimeoutError` when the
    batch has not ended after `timeout_s`.
    """
    data = build_jsonl(requests)
    _check_metadata(metadata)
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata)
    return _wait_and_collect(client, batch, requests, poll_interval_s, timeout_s, sleep)


def wait_for_batch(
    client: openai.OpenAI,
    batch_id: str,
    requests: Sequence[BatchRequest],
    poll_interval_s: float = 5.0,
    timeout_s: float = 24 * 3600,
    sleep: Callable[[float], Any] = time.sleep,
) -> BatchRun:
    """Resume an existing batch (e.g. after a restart or a `BatchTimeoutError`): wait for it and collect its results."""
    _check_ids(requests)
    return _wait_and_collect(client, client.batches.retrieve(batch_id), requests, poll_interval_s, timeout_s, sleep)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    """The API's limits, checked before anything is uploaded: 16 pairs, keys ≤ 64 chars, string values ≤ 512 chars."""
    if metadata is None:
        return
    if len(metadata) > 16:
        raise ValueError(f"batch metadata holds at most 16 pairs, got {len(metadata)}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise ValueError(f"batch metadata {k!r}: keys must be strings ≤ 64 chars, values strings ≤ 512 chars")


def _wait_and_collect(
    client: openai.OpenAI,
    batch: Any,
    requests: Sequence[BatchRequest],
    poll_interval_s: float,
    timeout_s: float,
    sleep: Callable[[float], Any],
) -> BatchRun:
    # Time waited is the larger of the wall clock and the sum of the intervals slept, so the
    # deadline holds with a real clock and is deterministic with an injected no-op `sleep`.
    started = time.monotonic()
    slept = 0.0
    polls = 0
    problems: list[str] = []
    while batch.status not in TERMINAL_STATUSES:
        waited = max(time.monotonic() - started, slept)
        if waited >= timeout_s:
            _cancel_and_raise(client, batch, polls, waited)
        sleep(poll_interval_s)
        slept += poll_interval_s
        polls += 1
        try:
            batch = client.batches.retrieve(batch.id)
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
            # A poll that did not get through (after the client's own retries) changes nothing: the
            # batch runs on the server either way, so poll again rather than lose track of it.
            problems.append(f"poll {polls} failed: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS])
        except openai.OpenAIError as exc:
            exc.add_note(f"while polling batch {batch.id}; resume with wait_for_batch(client, '{batch.id}', requests)")
            raise
    run = BatchRun(
        batch_id=batch.id,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        status=batch.status,
        polls=polls,
        results={},
        problems=problems,
    )
    wanted = {r.custom_id for r in requests}
    unread = [
        failure
        for file_id in (batch.output_file_id, batch.error_file_id)
        if file_id and (failure := _read_file(client, file_id, wanted, run))
    ]
    missing_reason = NO_RESULT if batch.status == "completed" else _batch_failure(batch)
    if unread:
        missing_reason = f"{missing_reason}; {'; '.join(unread)}"[:_MAX_ERROR_CHARS]
    for r in requests:
        if r.custom_id not in run.results:
            run.results[r.custom_id] = _error(r.custom_id, missing_reason)
    # Keep the caller's order.
    run.results = {r.custom_id: run.results[r.custom_id] for r in requests}
    return run


def _cancel_and_raise(client: openai.OpenAI, batch: Any, polls: int, waited: float) -> None:
    note = "cancellation requested"
    try:
        client.batches.cancel(batch.id)
    except openai.OpenAIError as exc:
        note = f"cancellation failed ({type(exc).__name__}: {exc})"
    raise BatchTimeoutError(
        f"batch {batch.id} still '{batch.status}' after {waited:.0f}s ({polls} polls); {note}. "
        f"Collect what it produced with wait_for_batch(client, '{batch.id}', requests).",
        batch_id=batch.id,
        input_file_id=batch.input_file_id,
        status=batch.status,
        polls=polls,
    )


def _batch_failure(batch: Any) -> str:
    details = []
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    for e in errors:
        where = f" (line {e.line})" if getattr(e, "line", None) is not None else ""
        details.append(f"{e.code or 'error'}: {e.message or ''}{where}")
    text = f"batch {batch.status}" + (": " + "; ".join(details) if details else " before this request was answered")
    return text[:_MAX_ERROR_CHARS]


def _read_file(client: openai.OpenAI, file_id: str, wanted: set[str], run: BatchRun) -> str | None:
    """Take the results in one output or error file; a message when it could not be downloaded."""
    try:
        raw = client.files.content(file_id).content
    except openai.OpenAIError as exc:
        failure = f"file {file_id} could not be downloaded: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        run.problems.append(failure)
        return failure
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            _take(_parse_line(line, file_id, number, run), wanted, run)
    return None


def _parse_line(line: str, file_id: str, number: int, run: BatchRun) -> BatchItemResult | None:
    where = f"{file_id} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        match = _CUSTOM_ID.search(line)
        if match is None:
            run.problems.append(f"{where}: not JSON and no custom_id in it ({exc.msg})")
            return None
        try:
            custom_id = json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            custom_id = match.group(1)
        return _error(custom_id, f"the batch output line is not valid JSON ({exc.msg})")
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        run.problems.append(f"{where}: no custom_id")
        return None
    return _result(record)


def _result(record: dict[str, Any]) -> BatchItemResult:
    """One output/error-file record as a result."""
    custom_id = record["custom_id"]
    if record.get("error"):
        return _error(custom_id, _message(record["error"]))
    response = record.get("response")
    if not isinstance(response, dict):
        return _error(custom_id, "the batch output line has no response")
    body = response.get("body")
    status_code = response.get("status_code")
    if status_code != 200:
        detail = _message(body.get("error", body)) if isinstance(body, dict) else str(body)
        return _error(custom_id, f"HTTP {status_code}: {detail}")
    if not isinstance(body, dict):
        return _error(custom_id, f"the response body is not a chat completion: {str(body)[:200]!r}")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens_in, tokens_out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return _error(custom_id, "the response has no choices", tokens_in, tokens_out)
    choice = choices[0]
    finish_reason = choice.get("finish_reason")
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if message.get("refusal"):
        return _error(custom_id, f"the model refused: {message['refusal']}", tokens_in, tokens_out, finish_reason, text)
    if finish_reason not in (None, "stop"):
        why = "truncated at the token limit" if finish_reason == "length" else "the answer did not finish"
        return _error(custom_id, f"{why} (finish_reason={finish_reason})", tokens_in, tokens_out, finish_reason, text)
    if not text:
        return _error(custom_id, "the response has no text", tokens_in, tokens_out, finish_reason)
    return BatchItemResult(custom_id, "ok", text, tokens_in, tokens_out, finish_reason, None)


def _take(result: BatchItemResult | None, wanted: set[str], run: BatchRun) -> None:
    """Record a result: unknown ids are logged, an ok result is never replaced by a later one."""
    if result is None:
        return
    if result.custom_id not in wanted:
        run.problems.append(f"result for unknown custom_id {result.custom_id!r}")
        return
    previous = run.results.get(result.custom_id)
    if previous is not None:
        run.problems.append(f"more than one result for custom_id {result.custom_id!r}")
        if previous.status == "ok" or result.status != "ok":
            return
    run.results[result.custom_id] = result


def _error(
    custom_id: str,
    message: str,
    tokens_in: int = 0,
    tokens_out: int = 0,
    finish_reason: str | None = None,
    text: str = "",
) -> BatchItemResult:
    return BatchItemResult(custom_id, "error", text, tokens_in, tokens_out, finish_reason, message[:_MAX_ERROR_CHARS])


def _message(error: Any) -> str:
    """A readable message from an error object ({"code", "message"}) or anything else."""
    if isinstance(error, dict):
        code, message = error.get("code") or error.get("type"), error.get("message")
        if message:
            return f"{code}: {message}" if code else str(message)
        return json.dumps(error, ensure_ascii=False)[:_MAX_ERROR_CHARS]
    return str(error)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
