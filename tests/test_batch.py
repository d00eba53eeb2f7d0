"""The Batch API round trip: the real `openai` client against the local server, plus the odd files a real batch can return."""

from __future__ import annotations

import json
from datetime import date
from types import SimpleNamespace

import httpx2
import openai
import pytest
from openai.types import Batch, FileObject

from factory_dagster.campaign.spec import load_spec
from factory_dagster.drafting.draft import draft_brief, lead_payload, parse_draft
from factory_dagster.intake.sample_leads import generate_leads
from factory_dagster.models.batch import (
    NO_RESULT,
    BatchRequest,
    BatchTimeoutError,
    build_jsonl,
    run_batch,
    split_for_batch,
    wait_for_batch,
)
from factory_dagster.models.local_server import Faults, serving
from factory_dagster.models.offline import OfflineModel
from factory_dagster.models.prompts import build_messages
from factory_dagster.settings import DEFAULT_SPEC_PATH

SPEC = load_spec(DEFAULT_SPEC_PATH)
MODEL = "gpt-4o-mini"
KEY = "local-test-key"
MODELS = {"gpt-4o": 0.0, MODEL: 0.15}


def draft_requests(n: int, model: str = MODEL, prefix: str = "draft") -> list[BatchRequest]:
    """Realistic draft requests: the example campaign's brief, one sample lead each."""
    angle = SPEC.angles[0]
    brief = draft_brief(SPEC, angle.name, "Month-end close still takes two weeks.", list(angle.claims), "draft-v1")
    leads = generate_leads(date(2026, 1, 5), n=n)
    return [
        BatchRequest(
            custom_id=f"{prefix}-{i:04d}",
            model=model,
            messages=build_messages("draft-v1", brief, lead_payload(lead)),
            response_format={"type": "json_object"},
            temperature=0.7,
        )
        for i, lead in enumerate(leads.itertuples())
    ]


# --- the input file --------------------------------------------------------------------------------------------------


def test_the_input_file_has_one_request_line_per_request():
    requests = draft_requests(3)
    requests[2] = BatchRequest("plain", MODEL, [{"role": "user", "content": "Grüße"}], max_tokens=50)
    lines = [json.loads(line) for line in build_jsonl(requests).decode("utf-8").splitlines()]
    assert [line["custom_id"] for line in lines] == ["draft-0000", "draft-0001", "plain"]
    assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
    assert lines[0]["body"] == {
        "model": MODEL,
        "messages": requests[0].messages,
        "response_format": {"type": "json_object"},
        "temperature": 0.7,
    }
    # Unset parameters are not sent; text stays UTF-8, not escaped.
    assert lines[2]["body"] == {"model": MODEL, "messages": [{"role": "user", "content": "Grüße"}], "max_tokens": 50}
    assert "Grüße".encode() in build_jsonl(requests)


def test_duplicate_or_empty_custom_ids_are_rejected():
    requests = draft_requests(3)
    with pytest.raises(ValueError, match="unique.*draft-0001"):
        build_jsonl([*requests, requests[1]])
    with pytest.raises(ValueError, match="non-empty"):
        build_jsonl([BatchRequest("", MODEL, [])])
    with pytest.raises(ValueError, match="at least one"):
        build_jsonl([])


def test_requests_are_split_within_the_count_and_size_limits():
    requests = draft_requests(10)
    assert [len(c) for c in split_for_batch(requests, max_requests=4)] == [4, 4, 2]
    line_bytes = len(build_jsonl(requests[:1]))
    chunks = split_for_batch(requests, max_bytes=int(line_bytes * 3.5))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert all(len(build_jsonl(c)) <= line_bytes * 3.5 for c in chunks)
    assert [r for c in chunks for r in c] == requests  # order kept, nothing lost
    assert split_for_batch(requests) == [requests]
    with pytest.raises(ValueError, match="more than a batch file may hold"):
        split_for_batch(requests, max_bytes=line_bytes // 2)
    with pytest.raises(ValueError, match="unique"):
        split_for_batch([*requests, requests[0]], max_requests=4)


def test_metadata_beyond_the_api_limits_is_rejected_before_any_upload():
    client = StubClient([])
    with pytest.raises(ValueError, match="metadata"):
        run_batch(client, draft_requests(1), sleep=no_sleep, metadata={"k" * 65: "v"})
    assert client.calls == []


# --- odd batch files, through a stub of the client's files/batches resources ------------------------------------------


def no_sleep(_seconds: float) -> None:
    pass


def _batch(status: str, **fields) -> Batch:
    return Batch(
        id="batch_1",
        object="batch",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        created_at=0,
        input_file_id="file-in",
        status=status,
        **fields,
    )


def _ok_line(custom_id: str, text: str = '{"subject": "s", "body": "b"}', finish_reason: str = "stop", **message) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return json.dumps({"id": "req", "custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None})


class StubClient:
    """`files` and `batches` as the openai client exposes them, answering from canned batches and files."""

    def __init__(self, statuses: list[Batch | Exception], files: dict[str, str | Exception] | None = None) -> None:
        self.statuses = list(statuses)
        self.file_texts = files or {}
        self.calls: list[str] = []
        self.files = SimpleNamespace(create=self._upload, content=self._content)
        self.batches = SimpleNamespace(create=self._next("create"), retrieve=self._next("retrieve"), cancel=self._cancel)

    def _upload(self, file, purpose):
        self.calls.append("files.create")
        return FileObject(
            id="file-in", bytes=len(file[1]), created_at=0, filename=file[0], object="file", purpose=purpose, status="processed"
        )

    def _content(self, file_id):
        self.calls.append(f"files.content {file_id}")
        value = self.file_texts[file_id]
        if isinstance(value, Exception):
            raise value
        return SimpleNamespace(content=value.encode("utf-8"))

    def _next(self, name):
        def call(*args, **kwargs):
            self.calls.append(f"batches.{name}")
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            if isinstance(status, Exception):
                raise status
            return status

        return call

    def _cancel(self, batch_id):
        self.calls.append("batches.cancel")
        return _batch("cancelling")


def test_every_odd_line_maps_to_its_request_and_none_is_lost():
    ids = [f"r{i}" for i in range(9)]
    requests = [BatchRequest(cid, MODEL, [{"role": "user", "content": cid}]) for cid in ids]
    output = "\n".join(
        [
            _ok_line("r0"),
            _ok_line("r1", text='{"subject": "cut', finish_reason="length"),
            _ok_line("r2", text=None, refusal="I can't help with that."),
            '{"custom_id": "r3", "response": {"status_code": 200, "body": {"choi',  # cut mid-line: id recoverable
            "%%% not json at all %%%",  # not attributable: logged as a problem
            json.dumps({"custom_id": "r4", "response": {"status_code": 200, "body": "<html>oops</html>"}, "error": None}),
            _ok_line("stranger"),  # not one of ours
            _ok_line("r5"),
            _ok_line("r5", text="second answer for r5"),  # duplicate: the first ok answer stays
            "",
        ]
    )
    errors = "\n".join(
        [
            json.dumps(
                {
                    "custom_id": "r6",
                    "response": {"status_code": 429, "body": {"error": {"message": "Rate limit reached", "code": "rate_limit"}}},
                    "error": None,
                }
            ),
            json.dumps({"custom_id": "r7", "response": None, "error": {"code": "batch_expired", "message": "not run in time"}}),
        ]
    )
    client = StubClient([_batch("in_progress"), _batch("completed", output_file_id="file-out", error_file_id="file-err")])
    client.file_texts = {"file-out": output, "file-err": errors}
    run = run_batch(client, requests, sleep=no_sleep)

    assert list(run.results) == ids  # exactly one result per request, in request order
    r = run.results
    assert (r["r0"].status, r["r0"].text, r["r0"].tokens_in, r["r0"].tokens_out) == ("ok", '{"subject": "s", "body": "b"}', 11, 7)
    assert (
        r["r1"].status == "error"
        and "truncated" in r["r1"].error
        and r["r1"].finish_reason == "length"
        and r["r1"].tokens_out == 7
    )
    assert r["r2"].status == "error" and "refused" in r["r2"].error
    assert r["r3"].status == "error" and "not valid JSON" in r["r3"].error
    assert r["r4"].status == "error" and "not a chat completion" in r["r4"].error
    assert r["r5"].status == "ok" and r["r5"].text == '{"subject": "s", "body": "b"}'
    assert r["r6"].status == "error" and "HTTP 429" in r["r6"].error and "Rate limit" in r["r6"].error
    assert r["r7"].status == "error" and "batch_expired: not run in time" in r["r7"].error
    assert r["r8"].status == "error" and r["r8"].error == NO_RESULT
    assert len(run.problems) == 3 and any("stranger" in p for p in run.problems)
    assert (run.status, run.polls, run.output_file_id, run.error_file_id) == ("completed", 1, "file-out", "file-err")


def test_a_failed_batch_gives_every_request_the_batch_errors():
    requests = draft_requests(4)
    failed = _batch(
        "failed",
        errors={"object": "list", "data": [{"code": "invalid_json_line", "message": "line is not valid", "line": 3}]},
    )
    run = run_batch(StubClient([_batch("validating"), failed]), requests, sleep=no_sleep)
    assert set(run.results) == {r.custom_id for r in requests}
    assert all(
        r.status == "error" and r.error == "batch failed: invalid_json_line: line is not valid (line 3)"
        for r in run.results.values()
    )


def test_an_expired_batch_keeps_the_answers_it_produced():
    requests = draft_requests(3)
    client = StubClient(
        [_batch("in_progress"), _batch("expired", output_file_id="file-out")], {"file-out": _ok_line("draft-0001")}
    )
    run = run_batch(client, requests, sleep=no_sleep)
    assert {cid: r.status for cid, r in run.results.items()} == {"draft-0000": "error", "draft-0001": "ok", "draft-0002": "error"}
    assert run.results["draft-0000"].error.startswith("batch expired")


def test_an_unreadable_output_file_is_an_error_per_request_not_a_crash():
    requests = draft_requests(2)
    boom = openai.APIConnectionError(request=httpx2.Request("GET", "http://127.0.0.1/v1/files/file-out/content"))
    run = run_batch(StubClient([_batch("completed", output_file_id="file-out")], {"file-out": boom}), requests, sleep=no_sleep)
    assert "could not be downloaded" in run.problems[0]
    assert all(
        r.status == "error" and "file-out could not be downloaded: APIConnectionError" in r.error for r in run.results.values()
    )


def test_a_poll_that_does_not_get_through_is_retried_and_a_refused_one_names_the_batch():
    requests = draft_requests(2)
    request = httpx2.Request("GET", "http://127.0.0.1/v1/batches/batch_1")
    flaky = openai.APIConnectionError(request=request)
    client = StubClient(
        [_batch("in_progress"), flaky, _batch("completed", output_file_id="file-out")], {"file-out": _ok_line("draft-0000")}
    )
    run = run_batch(client, requests, sleep=no_sleep)
    assert run.polls == 2 and "poll 1 failed: APIConnectionError" in run.problems[0]
    assert [r.status for r in run.results.values()] == ["ok", "error"]

    denied = openai.NotFoundError("no such batch", response=httpx2.Response(404, request=request), body=None)
    with pytest.raises(openai.NotFoundError) as caught:
        run_batch(StubClient([_batch("in_progress"), denied]), requests, sleep=no_sleep)
    assert any("batch_1" in note for note in caught.value.__notes__)


# --- the real client against the local server -------------------------------------------------------------------------


def client_for(server, api_key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=server.base_url, max_retries=0, timeout=10)


def expected_text(request: BatchRequest) -> str:
    """What the offline model behind the server answers to this request (batch lines carry no seed)."""
    return OfflineModel(request.model, MODELS[request.model]).complete(request.messages, seed_key="")


def test_thirty_requests_make_the_round_trip_and_come_back_by_custom_id():
    requests = draft_requests(30)
    sleeps: list[float] = []
    with serving(MODELS, api_key=KEY, faults=Faults(batch_polls_to_complete=2)) as server:
        run = run_batch(client_for(server), requests, poll_interval_s=5.0, sleep=sleeps.append, metadata={"stage": "draft"})
        uploaded = server.files[run.input_file_id]["data"]
        batch = server.batches[run.batch_id]
        paths = [(path.split("/")[2], status) for path, _, status in server.log]

    assert uploaded == build_jsonl(requests)  # the multipart upload arrives byte for byte
    assert batch["metadata"] == {"stage": "draft"} and batch["endpoint"] == "/v1/chat/completions"
    # in_progress on polls 1 and 2, completed on poll 3; one sleep before each poll.
    assert (run.status, run.polls, sleeps) == ("completed", 3, [5.0, 5.0, 5.0])
    assert run.output_file_id and run.error_file_id is None and run.problems == []
    assert paths == [("files", 200), ("batches", 200)] + [("batches", 200)] * 3 + [("files", 200)]

    assert list(run.results) == [r.custom_id for r in requests]
    for request in requests:
        result = run.results[request.custom_id]
        assert result.status == "ok" and result.error is None and result.finish_reason == "stop"
        assert result.tokens_in > 0 and result.tokens_out > 0
        # Mapped to the right request: the answer is the one the offline model gives to *these* messages.
        assert result.text == expected_text(request)
        assert parse_draft(result.text)[2] is None


def test_scripted_failures_fail_their_lines_only():
    script = ["ok", "429", "ok", "500", "503", "junk_body", "truncated", "refusal", "malformed", "wrong_schema", "timeout"]
    requests = draft_requests(20)
    with serving(MODELS, api_key=KEY, faults=Faults(script={MODEL: list(script)}, batch_polls_to_complete=0)) as server:
        run = run_batch(client_for(server), requests, sleep=no_sleep)
    assert run.polls == 1 and run.error_file_id is not None
    results = [run.results[r.custom_id] for r in requests]
    assert len(run.results) == 20
    status = [r.status for r in results]
    assert status[:11] == ["ok", "error", "ok", "error", "error", "error", "error", "error", "ok", "ok", "ok"]
    assert status[11:] == ["ok"] * 9
    errors = [r.error for r in results]
    assert "HTTP 429" in errors[1] and "rate_limit_exceeded" in errors[1]
    assert "HTTP 500" in errors[3] and "HTTP 503" in errors[4] and "HTTP 502" in errors[5]
    assert "truncated" in errors[6] and results[6].finish_reason == "length" and results[6].tokens_out > 0
    assert "refused" in errors[7]
    # Malformed and wrong-schema answers are complete answers: the transport says ok, the gate catches them.
    assert results[8].text.startswith("Sure!") and parse_draft(results[8].text)[2] is not None
    assert parse_draft(results[9].text)[2] is not None
    ok = [r for r in results if r.status == "ok"]
    assert all(r.error is None and r.tokens_in > 0 for r in ok)


def test_several_models_and_an_unknown_one_share_a_batch():
    requests = (
        draft_requests(4) + draft_requests(3, model="gpt-4o", prefix="premium") + draft_requests(1, model="gpt-9", prefix="x")
    )
    with serving(MODELS, api_key=KEY, faults=Faults(batch_polls_to_complete=1)) as server:
        run = run_batch(client_for(server), requests, sleep=no_sleep)
    assert set(run.results) == {r.custom_id for r in requests}
    assert [r.custom_id for r in requests if run.results[r.custom_id].status == "error"] == ["x-0000"]
    assert "HTTP 404" in run.results["x-0000"].error and "gpt-9" in run.results["x-0000"].error
    assert all(run.results[r.custom_id].text == expected_text(r) for r in requests[:7])


def test_split_batches_together_return_every_request():
    requests = draft_requests(25)
    chunks = split_for_batch(requests, max_requests=10)
    with serving(MODELS, api_key=KEY, faults=Faults(batch_polls_to_complete=0)) as server:
        client = client_for(server)
        runs = [run_batch(client, chunk, sleep=no_sleep) for chunk in chunks]
    merged = {cid: r for run in runs for cid, r in run.results.items()}
    assert [len(c) for c in chunks] == [10, 10, 5] and len({run.batch_id for run in runs}) == 3
    assert list(merged) == [r.custom_id for r in requests] and all(r.status == "ok" for r in merged.values())


def test_a_duplicate_custom_id_is_rejected_before_anything_is_sent():
    requests = draft_requests(3)
    with serving(MODELS, api_key=KEY) as server:
        with pytest.raises(ValueError, match="unique"):
            run_batch(client_for(server), [*requests, requests[0]], sleep=no_sleep)
        assert server.requests == 0


def test_a_batch_still_running_at_the_deadline_is_cancelled_and_its_requests_are_not_lost():
    requests = draft_requests(5)
    sleeps: list[float] = []
    with serving(MODELS, api_key=KEY, faults=Faults(batch_polls_to_complete=10**9)) as server:
        client = client_for(server)
        with pytest.raises(TimeoutError, match="still 'in_progress'.*cancellation requested") as caught:
            run_batch(client, requests, poll_interval_s=5.0, timeout_s=30.0, sleep=sleeps.append)
        error = caught.value
        assert isinstance(error, BatchTimeoutError) and error.batch_id in str(error)
        assert (error.polls, sleeps) == (6, [5.0] * 6)
        assert server.batches[error.batch_id]["status"] == "cancelled"
        assert server.log[-1][0] == f"/v1/batches/{error.batch_id}/cancel"
        # Resuming the cancelled batch still gives every request its one result.
        run = wait_for_batch(client, error.batch_id, requests, sleep=no_sleep)
    assert run.status == "cancelled" and run.polls == 0
    assert list(run.results) == [r.custom_id for r in requests]
    assert all(r.status == "error" and r.error.startswith("batch cancelled") for r in run.results.values())


def test_a_refused_upload_raises_the_clients_error_and_never_leaks_the_key():
    secret = "sk-never-in-an-error-message"
    with serving(MODELS, api_key=KEY) as server:
        with pytest.raises(openai.AuthenticationError) as caught:
            run_batch(client_for(server, api_key=secret), draft_requests(2), sleep=no_sleep)
        assert server.count(401) == 1 and not server.batches
    assert secret not in str(caught.value)
