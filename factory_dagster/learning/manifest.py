"""The dbt project's `target/manifest.json`: where it lives, whether it is current, and parsing it once.

Dagster's definitions read the manifest at import, so every process that loads them (the demo, the webserver, the
daemon, each run, each test worker) needs it current first. On a fresh checkout the first of them parses the project
(a few seconds) and the others wait on a lock. A process that is about to import Dagster can start that parse in a
process of its own first (`parse_in_background`): on 2 cores it runs while the caller imports, and the caller's own
`ensure_manifest` then finds the manifest current or waits the rest of the parse on the lock.

This module imports neither Dagster nor dbt: the background process and its starter stay light.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from factory_dagster import file_lock
from factory_dagster.settings import DBT_PROJECT_DIR, Paths

PARSE_TARGET = DBT_PROJECT_DIR / "target"
MANIFEST_PATH = PARSE_TARGET / "manifest.json"
PARSE_LOCK_NAME = ".parse.lock"  # in dbt_project/target, beside the manifest
_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml"}


def newest_project_file() -> float:
    """The last change to the project's SQL and YAML: a newer one means the manifest is stale."""
    return max(
        p.stat().st_mtime
        for p in DBT_PROJECT_DIR.rglob("*")
        if p.suffix in _PROJECT_SUFFIXES and "target" not in p.relative_to(DBT_PROJECT_DIR).parts
    )


def manifest_is_current() -> bool:
    return MANIFEST_PATH.exists() and MANIFEST_PATH.stat().st_mtime >= newest_project_file()


def ensure_manifest() -> Path:
    """Parse the dbt project when the manifest is missing or older than a project file (a few seconds, once).

    Processes that start together on a fresh checkout (the test workers, a webserver and a daemon) take turns on a
    lock file: the first parses, the others wait and then find the manifest current instead of each parsing again."""
    if not manifest_is_current():
        with file_lock.exclusive(PARSE_TARGET / PARSE_LOCK_NAME):
            if not manifest_is_current():
                from factory_dagster.learning.dbt_runner import write_manifest  # dbt loads only when a parse is due

                write_manifest(Paths.from_env().warehouse)
    return MANIFEST_PATH


def parse_in_background() -> subprocess.Popen[bytes] | None:
    """When the manifest is stale, start `ensure_manifest` in a process of its own and return at once (None: current).

    Its output is dropped: if the parse fails, the caller's own `ensure_manifest` parses again and raises dbt's error
    where the caller can report it."""
    if manifest_is_current():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", __name__], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


if __name__ == "__main__":
    ensure_manifest()
