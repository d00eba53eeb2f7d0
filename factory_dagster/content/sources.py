"""Outside text a brief may be built from: articles, customer reviews, release notes dropped in an inbox.

Why: a content team writes from what happens outside (a customer's words, a news item), and that
text is the one place a stranger's words reach the content line's models. So it is handled as the
outreach line handles a lead's fields: the brief model sees it only inside a `<source>` data block
its prompt says is data, never instructions; the content gate checks every variant of a brief built
from it against it (`planted_text`: a run of its words repeated; `injected_brief`: the source itself
carries an instruction, a link or a role change), and a flagged variant waits for a person.

Files: `inbox/content_sources/*.txt` or `*.md`, UTF-8, one source a file. Each is used once (by
content hash in `raw.intake_files`, kind `content_source`), by the next day with a free brief slot,
oldest name first; a file that is not UTF-8 or is empty is rejected with an incident naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from factory_dagster.feedback.events import decode_utf8
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.file_registry import inbox_files, register_file, reject_file, unregistered_files
from factory_dagster.warehouse.store import transaction

REGISTER_KIND = "content_source"
SUFFIXES = {".txt", ".md"}
MAX_SOURCE_CHARS = 4000  # the part of a long source a brief sees (said in the brief)


class SourceFileError(ValueError):
    """A source file that cannot be read, with its path and where."""


@dataclass(frozen=True)
class Source:
    path: Path
    sha256: str
    text: str  # at most MAX_SOURCE_CHARS


def sources_inbox(home: Path) -> Path:
    return Path(home) / "inbox" / "content_sources"


def _read(path: Path) -> str:
    text = " ".join(decode_utf8(path, path.read_bytes(), SourceFileError).split())
    if not text:
        raise SourceFileError(f"{path}: empty file, expected the outside text a brief is built from")
    return text[:MAX_SOURCE_CHARS]


def pending_sources(con: duckdb.DuckDBPyConnection, inbox: Path, run: RunContext, limit: int) -> list[Source]:
    """Up to `limit` sources not used yet; unreadable files are rejected (registered, with an incident) on the way."""
    found = []
    for path, sha in unregistered_files(con, REGISTER_KIND, inbox_files(inbox, SUFFIXES)):
        if len(found) == limit:
            break
        try:
            found.append(Source(path, sha, _read(path)))
        except SourceFileError as exc:
            reject_file(con, run, REGISTER_KIND, path, sha, str(exc))
    return found


def mark_used(con: duckdb.DuckDBPyConnection, run: RunContext, sources: list[Source]) -> None:
    """Register the sources the day's briefs were built from, so no later day uses them again."""
    with transaction(con):
        for source in sources:
            register_file(con, run, REGISTER_KIND, source.path, source.sha256, (1, 1, 0))
