"""Response cache for model calls, stored in the warehouse table `raw.llm_cache`.

An answer is cached under a key derived from everything that decides it: the model,
the prompt version, the exact messages and the request parameters (temperature,
response format, ...). A re-run of a day, a repair pass or a retried batch then
reads the earlier answer instead of paying for it again.

Only successful, validated answers belong in the cache: the caller stores an answer
after its gate (schema, rules) accepted it — never an error, a refusal, a truncated
or unparsable answer — so a cache hit is always safe to reuse.

The table is append-only: the first answer stored under a key is kept; storing the
key again writes nothing. `lookup` only reads, so it works on a read-only connection
and never takes DuckDB's writer lock; cache hits are counted where every call is
counted, in `raw.llm_calls.cache_hit`, not in this table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.store import insert_rows

TABLE = "llm_cache"
# Part of every key: changing how keys are computed invalidates the old entries instead of colliding with them.
KEY_SCHEME = "llm-cache-v1"


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    tokens_in: int
    tokens_out: int
    model: str


def cache_key(model: str, prompt_version: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the request.

    Canonical: dict keys sorted at every level, no whitespace, UTF-8. Message order
    matters (it is part of the conversation); the order of keys inside a dict does not.
    A parameter set to None is the same as leaving it out (the client does not send it).
    Values must be JSON-serialisable; anything else raises TypeError rather than being
    stringified into a key that could collide.
    """
    payload = {
        "scheme": KEY_SCHEME,
        "model": model,
        "prompt_version": prompt_version,
        "messages": [dict(m) for m in messages],
        "params": {k: v for k, v in params.items() if v is not None},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def lookup(con: duckdb.DuckDBPyConnection, keys: Collection[str]) -> dict[str, CachedAnswer]:
    """The cached answers for those of `keys` that are in the cache, in one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    # The keys first, the answers of the hits after: a join that reads every cached answer to find a few
    # (or none, on a first run) took a third of a gigabyte per batch once a large day's cache was written.
    hits = [
        key
        for (key,) in con.execute(
            f"SELECT cache_key FROM raw.{TABLE} WHERE cache_key IN (SELECT unnest(?::VARCHAR[]))", [wanted]
        ).fetchall()
    ]
    if not hits:
        return {}
    rows = con.execute(
        f"SELECT cache_key, response_text, tokens_in, tokens_out, model FROM raw.{TABLE} "
        "WHERE cache_key IN (SELECT unnest(?::VARCHAR[]))",
        [hits],
    ).fetchall()
    return {key: CachedAnswer(text=text, tokens_in=t_in, tokens_out=t_out, model=model) for key, text, t_in, t_out, model in rows}


def store(con: duckdb.DuckDBPyConnection, entries: Iterable[tuple[str, str, str, CachedAnswer]]) -> int:
    """Cache answers given as (key, model, prompt_version, answer); the number of rows written.

    Call it only with successful answers that passed validation. Keys already in the
    cache are kept as they are (idempotent: storing the same entries twice writes 0
    rows the second time); within one call the first entry for a key wins. `model`
    must be the model the key was computed for and agree with `answer.model`.
    """
    rows: dict[str, dict[str, Any]] = {}
    created_at = utcnow()
    for key, model, prompt_version, answer in entries:
        if answer.model != model:
            raise ValueError(f"cache entry {key}: answer.model '{answer.model}' differs from the key's model '{model}'")
        if not answer.text:
            raise ValueError(f"cache entry {key}: empty answer text (only successful answers are cached)")
        if answer.tokens_in < 0 or answer.tokens_out < 0:
            raise ValueError(f"cache entry {key}: negative token count")
        rows.setdefault(
            key,
            {
                "cache_key": key,
                "model": model,
                "prompt_version": prompt_version,
                "response_text": answer.text,
                "tokens_in": int(answer.tokens_in),
                "tokens_out": int(answer.tokens_out),
                "created_at": created_at,
            },
        )
    if not rows:
        return 0
    return insert_rows(con, TABLE, pd.DataFrame(list(rows.values())), skip_existing=True)
