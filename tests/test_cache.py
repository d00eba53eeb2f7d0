"""The response cache against a real DuckDB warehouse file."""

from __future__ import annotations

import pytest

from factory_dagster.campaign.spec import load_spec
from factory_dagster.drafting.draft import draft_brief
from factory_dagster.models.cache import CachedAnswer, cache_key, lookup, store
from factory_dagster.models.prompts import build_messages
from factory_dagster.settings import DEFAULT_SPEC_PATH
from factory_dagster.warehouse.store import connect, fetch_one

SPEC = load_spec(DEFAULT_SPEC_PATH)
ANGLE = SPEC.angles[0]
BRIEF = draft_brief(SPEC, ANGLE.name, "Month-end takes too long.", list(ANGLE.claims), "draft-v1")
LEAD = {"first_name": "Ana", "company": "Acme", "role": "CFO"}
MESSAGES = build_messages("draft-v1", BRIEF, LEAD)
PARAMS = {"temperature": 0.7, "response_format": {"type": "json_object"}}
MODEL = "gpt-4o-mini"


def answer(i: int, model: str = MODEL) -> CachedAnswer:
    return CachedAnswer(text=f'{{"subject": "s{i}", "body": "b{i}"}}', tokens_in=100 + i, tokens_out=20 + i, model=model)


def key(i: int) -> str:
    return cache_key(MODEL, "draft-v1", build_messages("draft-v1", BRIEF, {**LEAD, "first_name": f"Lead{i}"}), PARAMS)


def test_the_key_is_a_stable_sha256_of_the_request():
    k = cache_key(MODEL, "draft-v1", MESSAGES, PARAMS)
    assert len(k) == 64 and int(k, 16) >= 0
    assert k == cache_key(MODEL, "draft-v1", [dict(m) for m in MESSAGES], dict(PARAMS))


def test_every_part_of_the_request_changes_the_key():
    base = cache_key(MODEL, "draft-v1", MESSAGES, PARAMS)
    edited = [MESSAGES[0], {**MESSAGES[1], "content": MESSAGES[1]["content"].replace("Acme", "Acne")}]
    variants = {
        "model": cache_key("gpt-4o", "draft-v1", MESSAGES, PARAMS),
        "prompt version": cache_key(MODEL, "draft-v2", MESSAGES, PARAMS),
        "message text": cache_key(MODEL, "draft-v1", edited, PARAMS),
        "message order": cache_key(MODEL, "draft-v1", MESSAGES[::-1], PARAMS),
        "temperature": cache_key(MODEL, "draft-v1", MESSAGES, {**PARAMS, "temperature": 0.2}),
        "response format": cache_key(MODEL, "draft-v1", MESSAGES, {**PARAMS, "response_format": {"type": "text"}}),
        "extra param": cache_key(MODEL, "draft-v1", MESSAGES, {**PARAMS, "max_tokens": 300}),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_dict_key_order_and_unset_params_do_not_change_the_key():
    reordered_messages = [{"content": m["content"], "role": m["role"]} for m in MESSAGES]
    reordered_params = {"response_format": {"type": "json_object"}, "temperature": 0.7}
    base = cache_key(MODEL, "draft-v1", MESSAGES, PARAMS)
    assert cache_key(MODEL, "draft-v1", reordered_messages, reordered_params) == base
    assert cache_key(MODEL, "draft-v1", MESSAGES, {**PARAMS, "seed": None}) == base


def test_a_value_that_is_not_json_is_refused_not_stringified():
    with pytest.raises(TypeError):
        cache_key(MODEL, "draft-v1", MESSAGES, {"temperature": object()})


def test_lookup_returns_the_hits_among_many_keys(tmp_path, engine_url):
    with connect(tmp_path / "w.duckdb", url=engine_url) as con:
        assert lookup(con, []) == {}
        assert lookup(con, [key(0)]) == {}
        assert store(con, [(key(i), MODEL, "draft-v1", answer(i)) for i in range(0, 40, 2)]) == 20
        wanted = [key(i) for i in range(40)] + [key(0)]  # a repeated key is fine
        found = lookup(con, wanted)
    assert set(found) == {key(i) for i in range(0, 40, 2)}
    assert found[key(4)] == answer(4)


def test_store_is_idempotent_and_keeps_the_first_answer(tmp_path, engine_url):
    with connect(tmp_path / "w.duckdb", url=engine_url) as con:
        assert store(con, [(key(1), MODEL, "draft-v1", answer(1)), (key(2), MODEL, "draft-v1", answer(2))]) == 2
        assert store(con, [(key(1), MODEL, "draft-v1", answer(1)), (key(2), MODEL, "draft-v1", answer(2))]) == 0
        # A later, different answer for a cached key does not overwrite it; a new key in the same call is written.
        assert store(con, [(key(1), MODEL, "draft-v1", answer(99)), (key(3), MODEL, "draft-v1", answer(3))]) == 1
        # Within one call, the first entry for a key wins.
        assert store(con, [(key(4), MODEL, "draft-v1", answer(4)), (key(4), MODEL, "draft-v1", answer(44))]) == 1
        assert store(con, []) == 0
        assert fetch_one(con, "SELECT count(*) FROM raw.llm_cache") == (4,)
        found = lookup(con, [key(1), key(4)])
    assert found[key(1)] == answer(1) and found[key(4)] == answer(4)


def test_store_refuses_entries_that_are_not_successful_answers(tmp_path, engine_url):
    with connect(tmp_path / "w.duckdb", url=engine_url) as con:
        with pytest.raises(ValueError, match="empty answer"):
            store(con, [(key(1), MODEL, "draft-v1", CachedAnswer("", 10, 0, MODEL))])
        with pytest.raises(ValueError, match="differs"):
            store(con, [(key(1), MODEL, "draft-v1", answer(1, model="gpt-4o"))])
        assert fetch_one(con, "SELECT count(*) FROM raw.llm_cache") == (0,)


def test_the_cache_survives_a_reconnect_and_reads_on_a_read_only_connection(tmp_path, engine_url):
    path = tmp_path / "w.duckdb"
    with connect(path, url=engine_url) as con:
        store(con, [(key(i), MODEL, "draft-v1", answer(i)) for i in range(5)])
    with connect(path, read_only=True, url=engine_url) as con:
        found = lookup(con, [key(i) for i in range(10)])
        row = fetch_one(con, "SELECT model, prompt_version, created_at IS NOT NULL FROM raw.llm_cache LIMIT 1")
    assert found == {key(i): answer(i) for i in range(5)}
    assert row == (MODEL, "draft-v1", True)


def test_unicode_answers_round_trip(tmp_path, engine_url):
    text = '{"subject": "Grüße, Zoë — 月末", "body": "…"}'
    with connect(tmp_path / "w.duckdb", url=engine_url) as con:
        store(con, [(key(7), MODEL, "draft-v1", CachedAnswer(text, 1, 2, MODEL))])
    with connect(tmp_path / "w.duckdb", url=engine_url) as con:
        assert lookup(con, [key(7)])[key(7)].text == text
