"""kill -9 mid-send against a real SMTP server on loopback: no message is delivered twice, and none is lost.

A child process (light imports: DuckDB, the standard library and the sender) recovers the outbox,
sends every queued send through SMTP, and is SIGKILLed at a random moment, over and over; a final
child runs to the end. A few children are started ahead: each imports, then waits for the word to
go, so a kill costs opening the warehouse and recovering, not a Python start. Each child is killed
at a random moment after the server got its first message's data. The server answers each message
after a short delay, so many kills land while a message is in flight: its data has reached the
server, the client has not recorded the answer. The server counts a message when its data has
arrived, before it answers: a client killed while waiting has still delivered it. Afterwards every
send is `sent` (delivered exactly once) or `uncertain` (claimed when a child died; delivered at
most once, never again by itself).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from helpers_db import DAY, Lead, add_message, query, run_for
from helpers_smtp import Recorder, start_server

from factory_dagster.delivery.states import QueuedSend, enqueue, transaction
from factory_dagster.warehouse.store import connect

KILLS = 21
MESSAGES = 80
SERVER_DELAY_S = 0.015
SEED = 20260302
AHEAD = 3  # children importing while one sends

CHILD = """
import sys, types
from datetime import date
import duckdb
from factory_dagster.delivery.config import Mailbox, SmtpSettings, UnsubscribeLinks, mailboxes_from_env
from factory_dagster.delivery.mailboxes import MailboxPool
from factory_dagster.delivery.sender import SendJob, send_queued
from factory_dagster.delivery.smtp import SmtpTransport
from factory_dagster.delivery.states import mailbox_usage, recover_claims

warehouse, run_id, day, campaign = sys.argv[1:5]
run = types.SimpleNamespace(run_id=run_id, partition_day=date.fromisoformat(day), campaign_id=campaign)
sys.stdin.readline()  # imported; go when the previous child is dead
con = duckdb.connect(warehouse)
actor = "send stage, run " + run_id
recovery = recover_claims(con, actor, run)
ids = [r[0] for r in con.execute("SELECT send_id FROM raw.outbox WHERE state = 'queued' ORDER BY queued_at, send_id").fetchall()]
settings = SmtpSettings.from_env()
mailboxes = mailboxes_from_env(Mailbox("unused@brightwave-ledger.example", "Unused"))
pool = MailboxPool(mailboxes, mailbox_usage(con, run.partition_day))
print("ready", len(recovery.uncertain), len(ids), flush=True)
job = SendJob(run, "Brightwave Ledger Ltd, 41 Harbour Street, Edinburgh", actor, SmtpTransport(settings), pool,
              UnsubscribeLinks.from_env(required=True), settings.retry)
report = send_queued(con, ids, job)
job.transport.close()
con.close()
print("done", len(report.sent), len(report.uncertain), flush=True)
"""


def _child_env(port: int) -> dict[str, str]:
    senders = [
        {"email": "maya@brightwave-ledger.example", "name": "Maya Okafor", "per_minute": None},
        {"email": "sam@brightwave-ledger.example", "name": "Sam Reid", "per_minute": None},
    ]
    own = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}  # none of a developer's own settings
    return {
        **own,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "FACTORY_TRANSPORT": "smtp",
        "FACTORY_SMTP_HOST": "127.0.0.1",
        "FACTORY_SMTP_PORT": str(port),
        "FACTORY_SMTP_TLS": "none",
        "FACTORY_SMTP_TIMEOUT_S": "5",
        "FACTORY_SMTP_RETRIES": "1",
        "FACTORY_SMTP_BACKOFF_S": "0.01",
        "FACTORY_SMTP_SENDERS": json.dumps(senders),
        "FACTORY_UNSUBSCRIBE_BASE_URL": "https://feedback.brightwave.example",
        "FACTORY_UNSUBSCRIBE_SECRET": "kill-test-secret-0123456789-abcdefghijklmnop",
    }


def _spawn(warehouse: Path, run_id: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(warehouse), run_id, DAY.isoformat(), "brightwave-close"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _go(child: subprocess.Popen) -> None:
    """Let the child open the warehouse, recover and send; return once it holds the warehouse and starts sending."""
    child.stdin.write("go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    if not line.startswith("ready"):
        child.kill()
        raise AssertionError(f"the sending child did not start: {line!r} {child.stderr.read()}")


def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the sending child sent nothing"
        time.sleep(0.002)


def _queue_messages(warehouse: Path, n: int) -> list[str]:
    """n accepted messages (one built like the gate stage does, the rest copies with their own lead and send ids), queued."""
    with connect(warehouse) as con:
        template = add_message(
            con, Lead("reader0@company0.example", "Reader", "Doe", "Company 0", "Software", 250, "CFO", "C-level", "Nordics"), DAY
        )
        con.execute(
            """INSERT INTO raw.assignments SELECT a.* REPLACE ('lead_kill_' || i AS lead_id)
               FROM raw.assignments a, range(1, $n) t(i) WHERE a.lead_id = $lead""",
            {"n": n, "lead": template["lead_id"]},
        )
        con.execute(
            """INSERT INTO raw.messages
               SELECT m.* REPLACE ('msg_kill_' || i AS message_id, 'snd_kill_' || i AS send_id, 'lead_kill_' || i AS lead_id,
                                   'reader' || i || '@company' || i || '.example' AS to_email)
               FROM raw.messages m, range(1, $n) t(i) WHERE m.lead_id = $lead""",
            {"n": n, "lead": template["lead_id"]},
        )
        rows = query(con, "SELECT send_id, lead_id, message_id, to_email FROM raw.messages ORDER BY send_id")
        with transaction(con):
            enqueue(con, [QueuedSend(*r) for r in rows], run_for(DAY), "smtp", "test")
    return [r[0] for r in rows]


def test_killing_the_sender_mid_send_never_delivers_twice_and_loses_nothing(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    send_ids = _queue_messages(warehouse, MESSAGES)
    recorder = Recorder(data_delay_s=SERVER_DELAY_S)
    server = start_server(recorder)
    env = _child_env(server.port)
    rng = random.Random(SEED)
    started = time.monotonic()
    ahead = deque(_spawn(warehouse, f"run-{n}", env) for n in range(AHEAD))
    spawned = AHEAD
    children: list[subprocess.Popen] = list(ahead)
    try:
        kills = 0
        for _ in range(KILLS):
            child = ahead.popleft()
            ahead.append(_spawn(warehouse, f"run-{spawned}", env))
            children.append(ahead[-1])
            spawned += 1
            before = len(recorder.received)
            _go(child)
            _until(lambda seen=before: len(recorder.received) > seen)  # it is sending: the server has its first data
            time.sleep(rng.uniform(0.0, 0.05))  # then at a random moment: waiting for an answer, committing, claiming...
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += child.returncode == -signal.SIGKILL
        final = ahead.popleft()
        _go(final)
        out, err = final.communicate(timeout=60)
        assert final.returncode == 0 and out.startswith("done"), err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        server.stop()
    elapsed = time.monotonic() - started

    received = recorder.message_ids()
    with connect(warehouse) as con:
        state = dict(query(con, "SELECT send_id, state FROM raw.outbox"))
        sent_rows = {s for (s,) in query(con, "SELECT send_id FROM raw.sends WHERE status = 'sent'")}
    header = {send_id: f"<{send_id}@factory.invalid>" for send_id in send_ids}
    by_state = Counter(state.values())
    duplicates = sum(n - 1 for n in received.values())
    figures = {
        "kills": kills,
        "messages": MESSAGES,
        "delivered": len(received),
        "duplicates": duplicates,
        "sent": by_state["sent"],
        "uncertain": by_state["uncertain"],
        "uncertain_delivered": sum(received[header[s]] for s, st in state.items() if st == "uncertain"),
        "seconds": round(elapsed, 1),
    }
    print("smtp kill figures:", json.dumps(figures))

    assert kills == KILLS  # every child was killed mid-run, none had finished
    assert duplicates == 0  # no Message-ID reached the server twice
    assert set(state) == set(header) and set(by_state) <= {"sent", "uncertain"}  # nothing lost, nothing left queued
    assert by_state["uncertain"] >= 1  # kills did land while a message was in flight
    assert by_state["uncertain"] <= kills  # at most the one in-flight message per kill
    for send_id, st in state.items():
        if st == "sent":
            assert received[header[send_id]] == 1 and send_id in sent_rows
        else:
            assert received[header[send_id]] <= 1 and send_id not in sent_rows
    assert set(received) <= set(header.values())
