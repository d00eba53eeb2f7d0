"""What the send stage may send once people have reviewed the messages, and with which text.

The outbox (delivery/outbox.py), the sender (delivery/sender.py) and the `raw.sends` rows
(delivery/states.py) read these SQL fragments, so that the plan, the hand-over and the record
agree on one meaning of each:

- **Effective text.** `raw.messages` keeps what the gate accepted from the model, so its `draft_id`,
  `prompt_version` and `model` stay true of its text; a person's edit lives in `raw.message_edits`.
  A message goes with its latest edit, provided that edit was made to the text `raw.messages` holds
  now (`base_sha256`). A re-run of the gate that rewrites an unsent message with other text makes the
  earlier edits stale: the new text goes rather than an edit of a text the person never saw.
- **Held.** A message is held while its latest hold or release is a hold; the outbox never plans it.
- **Approved.** An approval is of one text (`text_sha256` of subject and body). An edit after it, or a
  gate re-run that changes the text, leaves the message unapproved again.
- **Review required.** Off by default, so `make run` needs nobody. `FACTORY_REVIEW_REQUIRED=1` makes the
  outbox send approved messages only; the unattended line then waits for a person every day.

Standard library only, besides delivery.config's error type and the contracts' text: the sender starts as a fresh
process. The fragments are functions of the warehouse's engine (`postgres`): only the hash is spelled differently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from factory_dagster.delivery.config import ConfigError
from factory_dagster.warehouse.contracts import RAW_TABLES

REVIEW_REQUIRED_ENV = "FACTORY_REVIEW_REQUIRED"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def text_sha256(subject: str, body: str) -> str:
    """The hash an approval and an edit's base are recorded with; the same as `text_sha256_sql`."""
    return hashlib.sha256(f"{subject}\n{body}".encode()).hexdigest()


def sha256_hex_sql(text: str, postgres: bool = False) -> str:
    """SQL for the hex SHA-256 of the UTF-8 text `text` (DuckDB hashes text itself; PostgreSQL hashes bytes and
    answers bytes), the same digest as hashlib's."""
    return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')" if postgres else f"sha256({text})"


def text_sha256_sql(alias: str, postgres: bool = False) -> str:
    """The warehouse's hash of `alias`'s subject and body, as `text_sha256` computes it in Python."""
    return sha256_hex_sql(f"{alias}.subject || chr(10) || {alias}.body", postgres)


# raw.messages' columns in order, from its contract: the effective messages have the same ones.
_MESSAGE_COLUMNS = [line.split()[0] for line in RAW_TABLES["messages"].strip().splitlines()]


def effective_messages(postgres: bool = False) -> str:
    """raw.messages with each message's effective subject and body (same columns, same order), as a subquery."""
    columns = ", ".join(f"coalesce(e.new_{c}, m.{c}) AS {c}" if c in ("subject", "body") else f"m.{c}" for c in _MESSAGE_COLUMNS)
    return f"""(
    SELECT {columns}
    FROM raw.messages m
    LEFT JOIN (
        SELECT DISTINCT ON (message_id, base_sha256) message_id, base_sha256, new_subject, new_body
        FROM raw.message_edits ORDER BY message_id, base_sha256, edit_seq DESC
    ) e ON e.message_id = m.message_id AND e.base_sha256 = {text_sha256_sql("m", postgres)})"""


# Message ids whose latest hold or release is a hold.
HELD_MESSAGE_IDS = """(
    SELECT message_id FROM (
        SELECT DISTINCT ON (message_id) message_id, action FROM raw.message_reviews WHERE action IN ('hold', 'release')
        ORDER BY message_id, seq DESC
    ) latest WHERE action = 'hold')"""


def approved_message_ids(postgres: bool = False) -> str:
    """Message ids with an approval of the text that would go now, as a subquery."""
    return f"""(
    SELECT DISTINCT x.message_id FROM {effective_messages(postgres)} x
    JOIN raw.message_reviews r ON r.action = 'approve' AND r.message_id = x.message_id
                              AND r.text_sha256 = {text_sha256_sql("x", postgres)})"""


def review_required(environ: Mapping[str, str]) -> bool:
    """Whether only approved messages may go (`FACTORY_REVIEW_REQUIRED`, default off); ConfigError on a value
    that is neither yes nor no, so a typo never silently sends unreviewed messages."""
    raw = environ.get(REVIEW_REQUIRED_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{REVIEW_REQUIRED_ENV} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
