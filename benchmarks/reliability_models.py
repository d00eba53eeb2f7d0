"""A whole day with 30% of model calls failing: does it complete, and where did every lead go?

The line's real client talks to the project's local OpenAI-compatible server, in its own
process, through `OPENAI_API_KEY` / `OPENAI_BASE_URL` as a user would configure a provider.
The server's fault script makes a seeded 30% of the chat requests (retries included) fail
with 500, 503 or 429 in equal parts, and another 7.5% stall before answering; the script is
longer than a day's requests, so the whole day is served under it.

The stalls stand in for timeouts: the gateway's client timeout (`GatewaySettings.timeout_s`,
60 s) cannot be lowered from the environment or the registry, so a real client-side timeout
would cost a minute per stalled call. A stall shows that slow answers hold nothing up. Afterwards each accepted lead of the day must be in exactly one
place: sent, quarantined with a reason, or waiting for a later day for a recorded reason.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb

from benchmarks.reliability_line import RunWatcher, run_day
from factory_dagster.models.local_server import DEFAULT_MODELS, Faults, fetch_stats, serving_in_subprocess

KEY = "reliability-key"
FAILURES = ("500", "503", "429")  # equal parts of the failing share
STALL_SHARE = 0.075  # on top of the failing share: the local server's "timeout", a slow answer
SCRIPT_LENGTH = 6000  # per model: more than a day's requests, retries included
RETRY_AFTER_S = 0.2
STALL_S = 1.0

# Where each accepted lead of the day ended up; the first matching row wins, in this order.
LEAD_FATE_SQL = """
    SELECT CASE
        WHEN l.lead_id IN (SELECT lead_id FROM raw.sends) THEN 'sent'
        WHEN l.lead_id IN (SELECT lead_id FROM raw.messages_quarantine WHERE reason <> '') THEN 'quarantined_with_reasons'
        WHEN l.lead_id IN (SELECT lead_id FROM raw.messages_quarantine) THEN 'quarantined_without_reason'
        WHEN l.lead_id IN (SELECT lead_id FROM raw.messages) THEN 'message_waiting_to_send'
        WHEN l.email IN (SELECT email FROM raw.suppression) THEN 'suppressed'
        WHEN l.lead_id NOT IN (SELECT lead_id FROM raw.assignments) THEN 'never_assigned'
        WHEN l.lead_id IN (SELECT lead_id FROM raw.drafts WHERE partition_day = $day)
            THEN 'postponed_near_duplicate_of_a_colleague'
        WHEN EXISTS (SELECT 1 FROM raw.incidents WHERE partition_day = $day AND kind = 'budget_reached')
            THEN 'deferred_by_budget'
        ELSE 'unaccounted'
    END AS fate, count(*) AS leads
    FROM raw.leads l WHERE l.partition_day = $day GROUP BY 1 ORDER BY 1"""


def fault_script(rng: random.Random, share: float, length: int = SCRIPT_LENGTH) -> list[str]:
    """`length` outcomes: `share` failures (FAILURES in equal parts), STALL_SHARE stalls, the rest ok; shuffled."""
    failing, stalls = round(length * share), round(length * STALL_SHARE)
    script = [FAILURES[i % len(FAILURES)] for i in range(failing)] + ["timeout"] * stalls
    script += ["ok"] * (length - len(script))
    rng.shuffle(script)
    return script


def model_failures(home: Path, day: date, share: float = 0.3, seed: int = 30) -> dict:
    """Run `day` on a fresh folder against the local server failing `share` of the calls."""
    rng = random.Random(seed)
    scripts = {model: fault_script(rng, share) for model in DEFAULT_MODELS}
    faults = Faults(script={m: list(s) for m, s in scripts.items()}, retry_after_s=RETRY_AFTER_S, timeout_s=STALL_S)
    watcher = RunWatcher(home)
    with serving_in_subprocess(DEFAULT_MODELS, api_key=KEY, faults=faults) as base_url:
        run = run_day(home, day, f"model-failures-{day}", {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url})
        log = fetch_stats(base_url)["log"]
    chat = [(model, status) for path, model, status in log if path.endswith("/chat/completions")]
    requests = Counter(model for model, _ in chat)
    injected = Counter(outcome for model, n in requests.items() for outcome in scripts[model][:n] if outcome != "ok")
    failed = sum(injected[f] for f in FAILURES)
    status = watcher.status(watcher.new_run(day) or "")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        fates = dict(con.execute(LEAD_FATE_SQL, {"day": day}).fetchall())
        ledger = dict(
            con.execute("SELECT status, count(*) FROM raw.llm_calls WHERE partition_day = ? GROUP BY 1", [day]).fetchall()
        )
        retries, fallbacks = con.execute(
            "SELECT coalesce(sum(retries), 0), count(*) FILTER (WHERE fallback_used) FROM raw.llm_calls WHERE partition_day = ?",
            [day],
        ).fetchall()[0]
    total = sum(requests.values())
    return {
        "fault_share_scripted": share,
        "chat_requests": total,
        "faults_injected": dict(injected),
        "failed_share_observed": round(failed / total, 3) if total else 0.0,
        "stalled_share_observed": round(injected["timeout"] / total, 3) if total else 0.0,
        "http_status": dict(Counter(str(s) for _, s in chat)),
        "stall_s": STALL_S,
        "retry_after_s": RETRY_AFTER_S,
        "ledger_calls_by_status": ledger,
        "ledger_retries": int(retries),
        "ledger_fallbacks": int(fallbacks),
        "day_s": round(run.seconds, 1),
        "exit_code": run.exit_code,
        "run_status": status,
        "completed": run.exit_code == 0 and status == "SUCCESS",
        "leads_accepted": sum(fates.values()),
        "lead_fates": fates,
        "leads_unaccounted": fates.get("unaccounted", 0) + fates.get("quarantined_without_reason", 0),
    }
