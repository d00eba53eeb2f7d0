"""The register of dropped files (`raw.intake_files`): each file content is imported once.

Leads, outcome events and suppression lists all arrive as files in an inbox; the
register keys them by SHA-256 so a re-run, a copy or a rename never imports twice,
and a rejected file keeps its error until a corrected file (new hash) arrives.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from factory_dagster.controls.incidents import record_incident
from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.store import exclusive, transaction

Importer = TypeVar("Importer", bound=Callable[..., Any])

_INCIDENT_KIND = {
    "leads": "lead_file_rejected",
    "events": "event_file_rejected",
    "suppression": "suppression_file_rejected",
    "replies": "reply_file_rejected",
    "content_engagement": "engagement_file_rejected",
    "content_source": "content_source_rejected",
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inbox_files(inbox: Path, suffixes: Collection[str]) -> list[Path]:
    """Files waiting in an inbox, by name, any case of suffix; hidden and partial files are not ready yet."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def registered_hashes(con: duckdb.DuckDBPyConnection, kind: str, campaign_id: str | None = None) -> set[str]:
    """Hashes of the kind's registered files: of one campaign's (its own inbox), or of all (a shared inbox)."""
    scope, params = ("AND campaign_id = ?", [kind, campaign_id]) if campaign_id else ("", [kind])
    return {row[0] for row in con.execute(f"SELECT file_sha256 FROM raw.intake_files WHERE kind = ? {scope}", params).fetchall()}


def unregistered_files(
    con: duckdb.DuckDBPyConnection, kind: str, paths: list[Path], campaign_id: str | None = None
) -> Iterator[tuple[Path, str]]:
    """(path, sha256) of each file whose content is not registered yet (for the campaign, when its inbox is its own);
    a copy in the same batch counts once."""
    seen = registered_hashes(con, kind, campaign_id)
    for path in paths:
        sha = file_sha256(path)
        if sha not in seen:
            seen.add(sha)
            yield path, sha


def register_file(
    con: duckdb.DuckDBPyConnection,
    run: RunContext,
    kind: str,
    path: Path,
    sha: str,
    counts: tuple[int, int, int] = (0, 0, 0),
    error: str | None = None,
) -> None:
    """Record a file as imported (counts: total, accepted, quarantined) or, with an error, rejected."""
    total, accepted, quarantined = counts
    con.execute(
        "INSERT INTO raw.intake_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            kind,
            str(path),
            sha,
            run.partition_day,
            run.run_id,
            run.campaign_id,
            total,
            accepted,
            quarantined,
            "rejected" if error else "imported",
            error,
            utcnow(),
        ],
    )


def reject_file(con: duckdb.DuckDBPyConnection, run: RunContext, kind: str, path: Path, sha: str, error: str) -> None:
    """Register a file that cannot be imported, with an incident naming it; the inbox's other files go on."""
    with transaction(con):
        register_file(con, run, kind, path, sha, error=error)
        record_incident(con, run, _INCIDENT_KIND[kind], "warning", error)


def one_import_at_a_time(kind: str) -> Callable[[Importer], Importer]:
    """Decorator: the importer `fn(con, ...)` of a shared inbox holds the warehouse lock `inbox:<kind>` for its whole
    run (`store.exclusive`): two campaigns' runs importing at once on PostgreSQL would both read a file as new."""

    def decorate(importer: Importer) -> Importer:
        @functools.wraps(importer)
        def locked(con: Any, *args: Any, **kwargs: Any) -> Any:
            with exclusive(con, f"inbox:{kind}"):
                return importer(con, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate
