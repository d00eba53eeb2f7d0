"""dbt in the line's own process, the project parsed once per process.

A `dbt build` subprocess pays for an interpreter, dbt's imports and a parse before its
first query: about as long as the build itself at demo scale. Here dbt is imported once,
the parsed manifest is reused by every build of the process, and the structured result
events are collected in memory for the Dagster wiring to turn into materializations and
check results.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from factory_dagster.settings import DBT_PROJECT_DIR
from factory_dagster.warehouse.store import connect

PARSE_TARGET = DBT_PROJECT_DIR / "target"
MANIFEST_PATH = PARSE_TARGET / "manifest.json"
RESULT_EVENTS = frozenset({"LogModelResult", "LogTestResult", "LogSeedResult", "LogSnapshotResult"})
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
SAMPLE_ROWS = 8  # failing rows of a test shown in its failure: enough to name what broke, short enough to read
_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml"}


class DbtError(RuntimeError):
    """dbt could not parse the project or run a command at all (not a failing test)."""


@dataclass
class DbtRun:
    """One dbt invocation: its verdict, the per-node result events and what failed."""

    success: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    node_errors: list[str] = field(default_factory=list)  # dbt's own words for each failed node
    failing_rows: dict[str, list[str]] = field(default_factory=dict)  # test name -> its first failing rows

    @property
    def failures(self) -> list[str]:
        """`node (status, N failing rows): row; row` for each node that errored or whose test failed."""
        failed = []
        for event in self.results:
            data = event["data"]
            status = str(data.get("status", "")).lower()
            if status in FAILED_STATUSES:
                name = data["node_info"]["node_name"]
                count = data.get("num_failures") or 0
                rows = f", {count} failing rows" if count else ""
                sample = self.failing_rows.get(name, [])
                more = f"; and {count - len(sample)} more" if sample and count > len(sample) else ""
                shown = f": {'; '.join(sample)}{more}" if sample else ""
                failed.append(f"{name} ({status}{rows}){shown}")
        return failed

    def describe_failure(self) -> str:
        """What an operator needs to act on: dbt's own error, else the failing nodes and why."""
        return self.error or "; ".join(self.failures + self.node_errors) or "dbt reported failure without a failing node"


def newest_project_file() -> float:
    """The last change to the project's SQL and YAML: a newer one means the manifest is stale."""
    return max(
        p.stat().st_mtime
        for p in DBT_PROJECT_DIR.rglob("*")
        if p.suffix in _PROJECT_SUFFIXES and "target" not in p.relative_to(DBT_PROJECT_DIR).parts
    )


@contextmanager
def _warehouse_env(warehouse: Path | str) -> Iterator[None]:
    """profiles.yml reads the warehouse path from the environment; restore it afterwards."""
    previous = os.environ.get("FACTORY_WAREHOUSE")
    os.environ["FACTORY_WAREHOUSE"] = str(warehouse)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FACTORY_WAREHOUSE", None)
        else:
            os.environ["FACTORY_WAREHOUSE"] = previous


def _project_args(target_path: Path) -> list[str]:
    return [
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path),
        # dbt.log keeps what the console shows (each node's start and result, warnings, errors), not dbt's debug
        # lines: writing, flushing and checking the rotation of one line per query took about 40% of a build.
        "--log-level-file",
        "info",
    ]


_MANIFESTS: dict[tuple[str, float], Any] = {}


def parse(warehouse: Path | str, target_path: Path) -> Any:
    """The parsed dbt manifest for `warehouse`, parsed once per process and project state.

    dbt writes its artifacts and partial-parse state into `target_path`: each data folder
    keeps its own, so processes on other data folders never read a half-written file.
    The warehouse file's name is part of the key: dbt-duckdb names the database after it,
    and the parsed nodes carry that name (the path itself is read again at each build).
    """
    key = (Path(warehouse).stem, newest_project_file())
    if key not in _MANIFESTS:
        from dbt.cli.main import dbtRunner

        if len(_MANIFESTS) >= 4:  # a long-lived process (the tests) keeps only recent ones
            _MANIFESTS.pop(next(iter(_MANIFESTS)))
        with _warehouse_env(Path(warehouse).resolve()):
            outcome = dbtRunner().invoke(["parse", "--quiet", *_project_args(target_path)])
        if not outcome.success:
            raise DbtError(f"dbt could not parse {DBT_PROJECT_DIR}: {outcome.exception}")
        _MANIFESTS[key] = outcome.result
    return _MANIFESTS[key]


def write_manifest(warehouse: Path | str) -> Path:
    """Parse into a private folder, then move `manifest.json` into place in one step.

    Dagster's definitions read `target/manifest.json` at import; two processes starting
    together must never see one half written.
    """
    PARSE_TARGET.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=PARSE_TARGET, prefix=".parse-") as private:
        parse(warehouse, Path(private))
        os.replace(Path(private) / "manifest.json", MANIFEST_PATH)
    return MANIFEST_PATH


def release_warehouse() -> None:
    """Close dbt-duckdb's DuckDB handle, which it keeps open between invocations in a process.

    DuckDB allows one writing process: while dbt held the file, any other process (the
    Dagster UI's runs, an analyst's client, a second demo) would fail on the lock.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.adapters.factory import cleanup_connections

    cleanup_connections()
    environment = DuckDBConnectionManager._ENV  # noqa: SLF001 - no public way to close it (dbt-duckdb 1.11)
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def sample_failing_rows(results: list[Any], warehouse: Path | str) -> dict[str, list[str]]:
    """The first rows each failed test returned, as `column=value, ...` (nulls left out).

    dbt only counts a test's rows; the rows say what broke (row_contract names the rule, the
    columns and examples; a reconciliation test both totals). Read after the build, when dbt
    has let go of the file; without a readable warehouse the failure keeps just its count.
    """
    failed = [r for r in results if r.node.resource_type == "test" and str(r.status).lower() == "fail" and r.node.compiled_code]
    samples: dict[str, list[str]] = {}
    if not failed:
        return samples
    try:
        with connect(Path(warehouse), read_only=True, wait_s=1.0) as con:
            for result in failed:
                try:
                    cursor = con.execute(f"select * from (\n{result.node.compiled_code}\n) as failing limit {SAMPLE_ROWS}")
                except duckdb.Error:
                    continue  # that test's count still stands
                names = [column[0] for column in cursor.description]
                samples[result.node.name] = [
                    ", ".join(f"{name}={value}" for name, value in zip(names, row, strict=True) if value is not None)
                    for row in cursor.fetchall()
                ]
    except duckdb.Error:
        pass  # a locked file: the counts still tell the operator which tests failed
    return samples


def invoke(command: list[str], warehouse: Path | str, target_path: Path) -> DbtRun:
    """Run one dbt command (`build`, `test`, ... with its selection) against `warehouse`."""
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    target_path.mkdir(parents=True, exist_ok=True)
    manifest = parse(warehouse, target_path)
    results: list[dict[str, Any]] = []
    node_errors: list[str] = []

    def keep_results(event: Any) -> None:
        if event.info.name in RESULT_EVENTS:
            results.append(msg_to_dict(event))
        elif event.info.name == "RunResultError" and event.data.msg.strip():
            node_errors.append(" ".join(event.data.msg.split()))

    try:
        with _warehouse_env(Path(warehouse).resolve()):
            # No JSON artifacts: the results are in memory, and serialising the manifest
            # again after every build cost about a third of a second.
            outcome = dbtRunner(manifest=manifest, callbacks=[keep_results]).invoke(
                [*command, "--no-write-json", *_project_args(target_path)]
            )
    finally:
        release_warehouse()
    error = None if outcome.exception is None else f"{type(outcome.exception).__name__}: {outcome.exception}"
    samples = {} if outcome.success else sample_failing_rows(getattr(outcome.result, "results", []), warehouse)
    return DbtRun(bool(outcome.success), results, error, node_errors, samples)
