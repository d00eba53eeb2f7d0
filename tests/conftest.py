"""Session-wide fixtures: the dbt manifest is parsed once, the line runs once per module that asks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import scratch_space
from postgres_server import (  # noqa: F401  (the real PostgreSQL fixtures)
    postgres_dsn,
    postgres_raw_schema_dsn,
    postgres_raw_schema_template,
    postgres_server,
)
from warehouse_engines import engine_con, engine_paths, engine_url  # noqa: F401  (a test's warehouse on both engines)

SCRATCH = pytest.StashKey[Path | None]()
PARSING = pytest.StashKey[subprocess.Popen | None]()

# Never let a developer's own environment point the tests at their data.
for _name in ("FACTORY_HOME", "FACTORY_WAREHOUSE", "FACTORY_LEADS_INBOX", "FACTORY_SPEC", "OPENAI_API_KEY", "FACTORY_TRANSPORT"):
    os.environ.pop(_name, None)
os.environ.pop("FACTORY_WAREHOUSE_URL", None)  # nor at their PostgreSQL warehouse
# Nor switch the line's tests to a real mail server, mailbox or ESP (the SMTP, IMAP and receiver tests set their own).
for _name in [
    n
    for n in os.environ
    if n.startswith(
        (
            "FACTORY_SMTP_",
            "FACTORY_IMAP_",
            "FACTORY_UNSUBSCRIBE_",
            "FACTORY_SENDGRID_",
            "FACTORY_MAILGUN_",
            "FACTORY_POSTMARK_",
            "FACTORY_INBOUND_",
        )
    )
]:
    os.environ.pop(_name, None)


def pytest_configure(config: pytest.Config) -> None:
    """In the process that starts the session: the scratch folder (tests/scratch_space.py), and on a fresh checkout
    the dbt project's parse in a process of its own (`manifest.parse_in_background`), started before the workers: it
    runs while they import the test modules, and the first worker to need the manifest waits on its lock instead of
    parsing while the other waits idle for it. This process imports neither Dagster nor dbt for it."""
    if hasattr(config, "workerinput"):
        return
    config.stash[SCRATCH] = scratch_space.choose()
    from factory_dagster.learning.manifest import parse_in_background

    config.stash[PARSING] = parse_in_background()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    parsing = session.config.stash.get(PARSING, None)
    if parsing is not None:
        parsing.wait()
    folder = session.config.stash.get(SCRATCH, None)  # set in the starting process only (pytest_configure)
    if folder is not None:
        kept = scratch_space.release(folder, passed=exitstatus == pytest.ExitCode.OK)
        if kept:
            session.config.get_terminal_writer().line(kept)


# The slowest modules (seconds of one worker on 2 cores, make test of 2026-12-02 at probe 0.25 s, each beside whatever
# the other worker ran), handed out first. `make test` turns off pytest-xdist's own order (`--no-loadscope-reorder`),
# which puts the modules with the most tests first and so left these, each a few long tests, to the end: one worker
# then ran the last of them alone.
SLOW_MODULES_FIRST = (
    "test_dagster_postgres_instance.py",  # 47 on 2026-12-04 at probe 0.28 (39 alone, PgBouncer): the daemon, 3 runs
    "test_line_postgres.py",  # 66 (45 alone); 70 alone on 2026-12-04 with the dbt parity tests moved in
    "test_line_integration.py",  # 30
    "test_line_scenarios.py",  # 26
    "test_campaigns.py",  # 21
    "test_view_reuse.py",  # 19
    "test_commands_postgres.py",  # 16
    "test_review_actions.py",  # 14
    "test_outbox.py",  # 12
    "test_client.py",  # 11
    "test_junk_model.py",  # 11
    "test_importers.py",  # 10
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def dbt_manifest():
    """Parse the dbt project once per session (a few seconds) and share the manifest."""
    from factory_dagster.learning.manifest import ensure_manifest

    return ensure_manifest()
