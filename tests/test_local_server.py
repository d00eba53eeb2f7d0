"""The local OpenAI-compatible server, driven by the real `openai` client: faults, limits, files, batches.

What the client (openai 3.x, max_retries=0) does with each scripted outcome:
  429         -> openai.RateLimitError, `exc.response.headers["retry-after"]`, `exc.code == "rate_limit_exceeded"`
  503 / 500   -> openai.InternalServerError (`exc.status_code` tells them apart; 503 carries retry-after)
  timeout     -> openai.APITimeoutError (a subclass of APIConnectionError) once the client timeout passes
  malformed   -> a ChatCompletion whose content is prose around the JSON (json.loads fails)
  truncated   -> a ChatCompletion with finish_reason "length"; `.parse()` raises openai.LengthFinishReasonError
  refusal     -> a ChatCompletion with content None and message.refusal set; `.parse()` gives parsed None
  junk_body   -> NO exception: `create()` returns the body as a `str` (text/html is not parsed);
                 only a client made with `_strict_response_validation=True` raises openai.APIResponseValidationError
  wrong_schema-> a ChatCompletion with valid JSON of the wrong shape; `.parse()` raises pydantic.ValidationError
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pydantic
import pytest

from factory_dagster.models.local_server import (
    JUNK_BODY,
    JUNK_JSON_CONTENT,
    PROSE_CONTENT,
    REFUSAL,
    Faults,
    LocalOpenAIServer,
    fetch_stats,
    serving,
    serving_in_subprocess,
)

KEY = "local-test-key"
MODELS = {"gpt-4o": 0.0, "gpt-4o-mini": 0.15}
BRIEF = {"task": "plan", "segments": [{"name": "smb"}], "angles": [{"name": "close_speed", "claims": ["Close in 3 days."]}]}
MESSAGES = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": f"<brief>{json.dumps(BRIEF)}</brief>"}]
CHAT = "/v1/chat/completions"


class Angle(pydantic.BaseModel):
    angle: str
    hook: str
    claims: list[str]


class Segment(pydantic.BaseModel):
    segment: str
    angles: list[Angle]


class Plan(pydantic.BaseModel):
    segments: list[Segment]


def client(server_or_url: LocalOpenAIServer | str, **kwargs) -> openai.OpenAI:
    base_url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("api_key", KEY)
    return openai.OpenAI(base_url=base_url, **kwargs)


def ask(c: openai.OpenAI, model: str = "gpt-4o", **kwargs):
    return c.chat.completions.create(model=model, messages=MESSAGES, response_format={"type": "json_object"}, **kwargs)


@pytest.fixture
def server():
    with serving(MODELS, api_key=KEY, faults=Faults()) as srv:
        yield srv


def test_a_normal_answer_is_the_offline_json_with_usage_and_is_logged(server):
    answer = ask(client(server))
    plan = json.loads(answer.choices[0].message.content)
    assert plan["segments"][0]["segment"] == "smb" and answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert server.requests == 1 and server.log == [(CHAT, "gpt-4o", 200)] and server.count(200) == 1


def test_json_schema_response_format_parses_into_a_pydantic_model(server):
    parsed = client(server).chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Plan)
    plan = parsed.choices[0].message.parsed
    assert isinstance(plan, Plan) and plan.segments[0].angles[0].claims == ["Close in 3 days."]


def test_bad_key_unknown_model_and_bad_response_format_are_api_errors(server):
    with pytest.raises(openai.AuthenticationError):
        ask(client(server, api_key="sk-wrong"))
    with pytest.raises(openai.NotFoundError) as missing:
        ask(client(server), model="gpt-9")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="gpt-4o", messages=MESSAGES, response_format={"type": "yaml"})
    assert [status for _, _, status in server.log] == [401, 404, 400]
    assert server.log[1] == (CHAT, "gpt-9", 404)


def test_scripted_429_and_503_carry_retry_after_and_500_does_not(server):
    server.faults.retry_after_s = 1.5
    server.faults.script["gpt-4o"] = ["429", "503", "500"]
    c = client(server)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(c)
    assert limited.value.status_code == 429 and limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1.5"
    with pytest.raises(openai.InternalServerError) as overloaded:
        ask(c)
    assert overloaded.value.status_code == 503 and overloaded.value.response.headers["retry-after"] == "1.5"
    with pytest.raises(openai.InternalServerError) as broken:
        ask(c)
    assert broken.value.status_code == 500 and "retry-after" not in broken.value.response.headers
    assert ask(c).choices[0].finish_reason == "stop"  # the script is used up: normal answers again
    assert (server.count(429), server.count(503), server.count(500), server.count(200)) == (1, 1, 1, 1)


def test_the_script_is_per_model(server):
    server.faults.script = {"gpt-4o-mini": ["500"]}
    c = client(server)
    assert ask(c, model="gpt-4o").choices[0].message.content
    with pytest.raises(openai.InternalServerError):
        ask(c, model="gpt-4o-mini")
    assert server.faults.script == {"gpt-4o-mini": []}


def test_the_client_retries_a_scripted_429_after_its_retry_after(server):
    server.faults.retry_after_s = 0.3
    server.faults.script["gpt-4o"] = ["429"]
    started = time.perf_counter()
    raw = client(server, max_retries=2).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.retries_taken == 1 and raw.status_code == 200 and time.perf_counter() - started >= 0.3
    assert json.loads(raw.parse().choices[0].message.content)["segments"]


def test_a_scripted_timeout_outlasts_the_client_timeout(server):
    server.faults.timeout_s = 1.0
    server.faults.script["gpt-4o"] = ["timeout"]
    started = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        ask(client(server, timeout=0.3))
    assert time.perf_counter() - started < 0.9


def test_malformed_truncated_refusal_and_wrong_schema_are_200s_the_caller_must_catch(server):
    server.faults.script["gpt-4o"] = ["malformed", "truncated", "refusal", "wrong_schema"]
    c = client(server)
    full = ask(c, model="gpt-4o-mini").choices[0].message.content  # another model: a normal answer
    malformed = ask(c).choices[0].message.content
    assert malformed.startswith("Sure! Here is the email") and _not_json(malformed)
    truncated = ask(c).choices[0]
    assert truncated.finish_reason == "length" and _not_json(truncated.message.content)
    assert 0 < len(truncated.message.content) < len(full)
    refused = ask(c).choices[0].message
    assert refused.content is None and refused.refusal == REFUSAL
    assert json.loads(ask(c).choices[0].message.content) == {"message": "hello"}
    assert server.count(200) == 5


def test_structured_parse_raises_or_refuses_on_the_bad_200s(server):
    server.faults.script["gpt-4o"] = ["truncated", "refusal", "wrong_schema"]
    c = client(server)

    def parse():
        return c.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Plan)

    with pytest.raises(openai.LengthFinishReasonError):
        parse()
    refused = parse().choices[0].message
    assert refused.parsed is None and refused.refusal == REFUSAL
    with pytest.raises(pydantic.ValidationError):
        parse()


def test_a_junk_body_comes_back_as_a_string_unless_the_client_is_strict(server):
    server.faults.script["gpt-4o"] = ["junk_body", "junk_body", "junk_body"]
    answer = ask(client(server))
    assert isinstance(answer, str) and answer == JUNK_BODY.decode()  # no exception: `.choices` is an AttributeError
    with pytest.raises(openai.APIResponseValidationError) as strict:
        ask(client(server, _strict_response_validation=True))
    assert strict.value.response.status_code == 200
    raw = client(server).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/html")


def test_the_rpm_limit_is_enforced_per_model_over_a_rolling_window(server):
    server.faults.rpm_limit = 3
    c = client(server)
    for _ in range(3):
        ask(c)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(c)
    assert 59 < float(limited.value.response.headers["retry-after"]) <= 60
    ask(c, model="gpt-4o-mini")  # another model has its own window
    assert server.count(429) == 1 and server.count(200) == 4

    server.faults.rpm_window_s = 0.5  # a short window shows the slot freeing up
    time.sleep(0.5)
    ask(c)


def test_latency_is_added_and_concurrent_requests_really_overlap(server):
    # One after another, the 20 requests would take 20 x LATENCY = 10 s; the bound leaves room for a loaded machine.
    server.faults.latency_s = LATENCY = 0.5
    c = client(server)
    started = time.perf_counter()
    ask(c)
    assert time.perf_counter() - started >= LATENCY
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: ask(c), range(20)))
    elapsed = time.perf_counter() - started
    assert all(a.choices[0].message.content for a in answers)
    assert elapsed < 8 * LATENCY, f"20 requests at {LATENCY} s took {elapsed:.2f} s: not concurrent"
    assert server.count(200) == 21


def test_files_round_trip_byte_for_byte(server, tmp_path):
    c = client(server)
    data = b'{"custom_id": "a"}\r\n--not-the-boundary\r\n\x00\xff\xfe binary tail\n'
    uploaded = c.files.create(file=("leads batch.jsonl", data, "application/jsonl"), purpose="batch")
    assert uploaded.object == "file" and uploaded.bytes == len(data) and uploaded.filename == "leads batch.jsonl"
    assert uploaded.purpose == "batch" and uploaded.id.startswith("file-")
    assert c.files.retrieve(uploaded.id).bytes == len(data)
    assert c.files.content(uploaded.id).content == data
    path = tmp_path / "input.jsonl"
    path.write_bytes(data)
    from_path = c.files.create(file=path, purpose="batch")
    assert from_path.filename == "input.jsonl" and c.files.content(from_path.id).content == data
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve("file-nope")
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("x.jsonl", data), purpose="nonsense")


def batch_line(custom_id: str, model: str = "gpt-4o-mini") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": {"model": model, "messages": MESSAGES}})


def test_a_batch_round_trip_puts_failing_lines_in_the_error_file(server):
    server.faults.script["gpt-4o-mini"] = ["ok", "500"]  # the second line fails
    c = client(server)
    lines = [batch_line("lead-1"), batch_line("lead-2"), batch_line("lead-3"), "{this is not json", batch_line("lead-5", "gpt-9")]
    source = c.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = c.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"day": "2026-01-05"}
    )
    assert batch.status == "validating" and batch.output_file_id is None and batch.metadata == {"day": "2026-01-05"}
    polls = [c.batches.retrieve(batch.id) for _ in range(3)]
    assert [b.status for b in polls] == ["in_progress", "in_progress", "completed"]
    done = polls[-1]
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 2, 3)
    assert done.usage.total_tokens > 0

    output = [json.loads(x) for x in c.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["lead-1", "lead-3"]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    assert json.loads(output[0]["response"]["body"]["choices"][0]["message"]["content"])["segments"]

    errors = [json.loads(x) for x in c.files.content(done.error_file_id).text.splitlines()]
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id["lead-2"]["response"]["status_code"] == 500 and by_id["lead-2"]["response"]["body"]["error"]
    assert by_id["lead-5"]["response"]["status_code"] == 404
    assert by_id[None]["response"] is None and by_id[None]["error"]["code"] == "invalid_request"
    assert c.batches.retrieve(batch.id).status == "completed"  # stays completed


def test_a_batch_can_be_cancelled_and_unknown_ids_are_404(server):
    server.faults.batch_polls_to_complete = 5
    c = client(server)
    source = c.files.create(file=("in.jsonl", batch_line("a").encode()), purpose="batch")
    batch = c.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert c.batches.retrieve(batch.id).status == "in_progress"
    assert c.batches.cancel(batch.id).status == "cancelled"
    assert c.batches.retrieve(batch.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


# -- answer modes: a bad model behind a good server ------------------------------------------


def test_junk_json_mode_answers_every_request_with_the_same_unrelated_json(server):
    server.faults.answer_mode = "junk_json"
    c = client(server)
    answers = [ask(c, model=m).choices[0] for m in ("gpt-4o", "gpt-4o-mini", "gpt-4o")]
    plain = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Write me a haiku."}])
    for choice in [*answers, plain.choices[0]]:
        assert choice.finish_reason == "stop" and json.loads(choice.message.content) == {"status": "ok", "items": []}
    assert answers[0].message.content == JUNK_JSON_CONTENT
    with pytest.raises(pydantic.ValidationError):  # well-formed JSON, but not what was asked for
        c.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Plan)
    assert server.count(200) == 5 and plain.usage.completion_tokens > 0


def test_prose_mode_answers_text_that_is_not_json_also_in_a_batch(server):
    server.faults.answer_mode = "prose"
    c = client(server)
    content = ask(c).choices[0].message.content
    assert content == PROSE_CONTENT and _not_json(content) and "{" not in content
    source = c.files.create(file=("in.jsonl", batch_line("lead-1").encode()), purpose="batch")
    batch = c.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status != "completed":
        batch = c.batches.retrieve(batch.id)
    line = json.loads(c.files.content(batch.output_file_id).text)
    assert line["response"]["body"]["choices"][0]["message"]["content"] == PROSE_CONTENT


def test_an_answer_mode_can_be_limited_to_some_models_and_faults_still_apply(server):
    server.faults.answer_mode, server.faults.answer_mode_models = "prose", ["gpt-4o"]
    server.faults.script["gpt-4o"] = ["truncated"]
    c = client(server)
    cut = ask(c).choices[0]
    assert cut.finish_reason == "length" and PROSE_CONTENT.startswith(cut.message.content)
    assert ask(c).choices[0].message.content == PROSE_CONTENT
    assert json.loads(ask(c, model="gpt-4o-mini").choices[0].message.content)["segments"]  # not limited: the real answer
    with pytest.raises(ValueError, match="unknown answer mode"):
        Faults(answer_mode="gibberish")


def test_the_cli_answer_mode_reaches_a_server_in_another_process():
    with serving_in_subprocess(MODELS, api_key=KEY, extra_args=["--answer-mode", "junk_json"]) as base_url:
        assert ask(client(base_url)).choices[0].message.content == JUNK_JSON_CONTENT


def test_unknown_scripted_outcomes_are_refused_up_front():
    with pytest.raises(ValueError, match="unknown scripted outcome"):
        Faults(script={"gpt-4o": ["explode"]})


def test_the_subprocess_server_answers_with_its_faults_and_stops():
    faults = Faults(latency_s=0.1, script={"gpt-4o": ["429"]}, retry_after_s=2)
    with serving_in_subprocess(MODELS, api_key=KEY, faults=faults) as base_url:
        c = client(base_url)
        with pytest.raises(openai.RateLimitError) as limited:
            ask(c)
        assert limited.value.response.headers["retry-after"] == "2"
        started = time.perf_counter()
        assert json.loads(ask(c).choices[0].message.content)["segments"]
        assert time.perf_counter() - started >= 0.1
        stats = fetch_stats(base_url)
        assert stats["requests"] == 2 and stats["by_status"] == {"429": 1, "200": 1}
    with pytest.raises(openai.APIConnectionError):
        ask(client(base_url, timeout=2))


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False
