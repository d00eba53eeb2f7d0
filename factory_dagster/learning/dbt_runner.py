"""dbt in the line's own process, the project parsed once per process.

A `dbt build` subprocess pays for an interpreter, dbt's imports and a parse before its
first query: about as long as the build itself at demo scale. Here dbt is imported once,
the parsed manifest is reused by every build of the process, and the structured result
events are collected in memory for the Dagster wiring to turn into materializations and
check results. A process's first parse starts from dbt's partial-parse state that earlier parses of the same target
left in `dbt_project/target/parse_state/` (`Target.parse_environ`): about 1 s instead of 4.

The same project builds on the DuckDB file (profiles.yml output `local`, the default) or on a PostgreSQL warehouse
(output `postgres`) when a warehouse URL is given: the URL's parts reach the profile as environment variables, the
password as `DBT_ENV_SECRET_FACTORY_PG_PASSWORD`, which dbt masks in its logs.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from factory_dagster.learning.manifest import MANIFEST_PATH, PARSE_TARGET, newest_project_file
from factory_dagster.settings import DBT_PROJECT_DIR
from factory_dagster.warehouse.store import connect

PARSE_STATE_CACHE = PARSE_TARGET / "parse_state"  # dbt's partial-parse state, one per target and parse database
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# What a parse's profile reads instead of the warehouse's own address (`parse_environ`).
PARSE_ONLY_FOLDER, PARSE_ONLY_HOST, PARSE_ONLY_USER = "/factory-parse-only", "parse-only.invalid", "factory"
PARSE_ONLY_DATABASE = "factory_parse_only"  # a PostgreSQL parse's database name, replaced in the parsed nodes
RESULT_EVENTS = frozenset({"LogModelResult", "LogTestResult", "LogSeedResult", "LogSnapshotResult"})
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
SAMPLE_ROWS = 8  # failing rows of a test shown in its failure: enough to name what broke, short enough to read
POSTGRES_TARGET = "postgres"  # the profiles.yml output of the PostgreSQL warehouse (`local` is the DuckDB file)


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


@dataclass(frozen=True)
class Target:
    """The profiles.yml output a build runs on: its name, the database name dbt gives the parsed nodes, and the
    environment the profile reads."""

    name: str
    database: str
    environ: Mapping[str, str] = field(repr=False)

    @property
    def on_postgres(self) -> bool:
        return self.name == POSTGRES_TARGET

    @property
    def args(self) -> list[str]:
        return ["--target", self.name] if self.on_postgres else []

    @property
    def parse_database(self) -> str:
        """The database name a parse gives the nodes: the DuckDB file's own (the manifest Dagster reads shows it), a
        fixed one on PostgreSQL, replaced by the real one after the parse (`_on_database`)."""
        return PARSE_ONLY_DATABASE if self.on_postgres else self.database

    @property
    def parse_environ(self) -> dict[str, str]:
        """The profile a parse reads: `parse_database`, and a fixed address and user.

        Why: dbt keeps a parse's state for the next one only while the profile's connection details are the same, and
        the parsed nodes carry nothing of them but the database name (the build reads the real ones again). With the
        warehouse's own path in the profile, every data folder, and so every new process on one, parsed the whole
        project again: about 4 s, where a partial parse from the shared state takes 1 s. No password is needed. On
        PostgreSQL even the database name is fixed: each new database (every test makes its own) parsed in full too.
        """
        if not self.on_postgres:
            return {"FACTORY_WAREHOUSE": f"{PARSE_ONLY_FOLDER}/{self.database}.duckdb"}
        fixed = {"FACTORY_PG_HOST": PARSE_ONLY_HOST, "FACTORY_PG_PORT": "5432", "FACTORY_PG_USER": PARSE_ONLY_USER}
        return {
            **self.environ,
            **fixed,
            "FACTORY_PG_DATABASE": self.parse_database,
            "FACTORY_PG_SSLMODE": "prefer",
            "DBT_ENV_SECRET_FACTORY_PG_PASSWORD": "",
        }

    @property
    def parse_state_name(self) -> str:
        """The shared parse state's file name for this target and its parse's database."""
        return re.sub(r"[^\w.-]", "_", f"{self.name}-{self.parse_database}") + ".msgpack"


def duckdb_target(warehouse: Path | str) -> Target:
    """The DuckDB file: dbt-duckdb names the database after the file."""
    path = Path(warehouse).resolve()
    return Target("local", path.stem, {"FACTORY_WAREHOUSE": str(path)})


def postgres_target(url: str) -> Target:
    """A PostgreSQL warehouse by its libpq URL (or key=value string), with libpq's defaults for what it leaves out."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = {key: str(value) for key, value in conninfo_to_dict(url).items() if value is not None}
    except psycopg.Error as exc:  # its message may quote the URL, password included: not chained
        raise DbtError(f"the warehouse URL is not a PostgreSQL connection string ({type(exc).__name__})") from None
    user = parts.get("user") or getpass.getuser()
    database = parts.get("dbname") or user
    environ = {
        "FACTORY_PG_HOST": parts.get("host") or "localhost",
        "FACTORY_PG_PORT": parts.get("port") or "5432",
        "FACTORY_PG_USER": user,
        "FACTORY_PG_DATABASE": database,
        "FACTORY_PG_SSLMODE": parts.get("sslmode") or "prefer",
        "DBT_ENV_SECRET_FACTORY_PG_PASSWORD": parts.get("password", ""),
    }
    return Target(POSTGRES_TARGET, database, environ)


def target_for(warehouse: Path | str, warehouse_url: str | None = None) -> Target:
    """PostgreSQL when a warehouse URL is given, else the DuckDB file."""
    return postgres_target(warehouse_url) if warehouse_url else duckdb_target(warehouse)


@contextmanager
def _environment(environ: Mapping[str, str]) -> Iterator[None]:
    """profiles.yml reads the warehouse from the environment; restore it afterwards."""
    previous = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


_MANIFESTS: dict[tuple[str, str, float], Any] = {}


def parse(warehouse: Path | str, target_path: Path, warehouse_url: str | None = None) -> Any:
    """The parsed dbt manifest for the warehouse, parsed once per process and project state.

    dbt writes its artifacts and partial-parse state into `target_path`: each data folder
    keeps its own, so processes on other data folders never read a half-written file.
    The target and database name are part of the key: the parsed nodes carry the database's
    name (dbt-duckdb names it after the file; the path itself is read again at each build).
    """
    _name_behavior_flag_sources_cheaply()  # before any adapter is registered, by a parse or a build
    target = target_for(warehouse, warehouse_url)
    key = (target.name, target.database, newest_project_file())
    if key not in _MANIFESTS:
        from dbt.cli.main import dbtRunner

        if len(_MANIFESTS) >= 4:  # a long-lived process (the tests) keeps only recent ones
            _MANIFESTS.pop(next(iter(_MANIFESTS)))
        _copy_quietly(PARSE_STATE_CACHE / target.parse_state_name, target_path / PARTIAL_PARSE_FILE)
        with _environment(target.parse_environ):
            outcome = dbtRunner().invoke(["parse", "--quiet", *_project_args(target_path), *target.args])
        if not outcome.success:
            raise DbtError(f"dbt could not parse {DBT_PROJECT_DIR}: {outcome.exception}")
        _copy_quietly(target_path / PARTIAL_PARSE_FILE, PARSE_STATE_CACHE / target.parse_state_name)
        _MANIFESTS[key] = _on_database(outcome.result, target.parse_database, target.database)
    return _MANIFESTS[key]


def _on_database(manifest: Any, parsed: str, database: str) -> Any:
    """The manifest with the nodes a parse gave the database `parsed` on `database` instead: their database and the
    relation name dbt rendered from it at parse time (`"db"."schema"."name"`), and dbt's flat graph rebuilt from them.
    The build renders every `ref` and `source` from these; dbt-postgres names the database in each."""
    if parsed == database:
        return manifest
    prefix = f'"{parsed}".'
    for nodes in (manifest.nodes, manifest.sources, getattr(manifest, "unit_tests", {}), getattr(manifest, "functions", {})):
        for node in nodes.values():
            if getattr(node, "database", None) != parsed:
                continue
            node.database = database
            relation = getattr(node, "relation_name", None)
            if relation and relation.startswith(prefix):
                node.relation_name = f'"{database}".{relation[len(prefix) :]}'
    if manifest.flat_graph:
        manifest.build_flat_graph()
    return manifest


def _copy_quietly(source: Path, destination: Path) -> None:
    """Copy dbt's parse state in one step (a reader never sees half a file); without it, or where the folder cannot
    be written (an installed, read-only project), dbt parses the whole project instead, as it would have."""
    if not source.exists():
        return
    partial = destination.with_name(f".{destination.name}.{os.getpid()}-{threading.get_ident()}")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, partial)
        os.replace(partial, destination)
    except OSError:
        partial.unlink(missing_ok=True)


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


def release_warehouse(target: Target | None = None) -> None:
    """Close the connections dbt keeps open between invocations in a process.

    DuckDB allows one writing process: while dbt-duckdb held the file, any other process (the
    Dagster UI's runs, an analyst's client, a second demo) would fail on the lock. On PostgreSQL
    an idle session would only hold a server slot (and keep its database from being dropped).
    """
    from dbt.adapters.factory import cleanup_connections

    cleanup_connections()
    if target is not None and target.on_postgres:
        return
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV  # noqa: SLF001 - no public way to close it (dbt-duckdb 1.11)
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def _first_rows(con: Any, failed: list[Any], errors: tuple[type[Exception], ...]) -> dict[str, list[str]]:
    """Each failed test's first rows as `column=value, ...` (nulls left out), on a DuckDB or psycopg connection."""
    samples: dict[str, list[str]] = {}
    for result in failed:
        try:
            cursor = con.execute(f"select * from (\n{result.node.compiled_code}\n) as failing limit {SAMPLE_ROWS}")
        except errors:
            continue  # that test's count still stands
        names = [column[0] for column in cursor.description]
        samples[result.node.name] = [
            ", ".join(f"{name}={value}" for name, value in zip(names, row, strict=True) if value is not None)
            for row in cursor.fetchall()
        ]
    return samples


def sample_failing_rows(results: list[Any], warehouse: Path | str, warehouse_url: str | None = None) -> dict[str, list[str]]:
    """The first rows each failed test returned, as `column=value, ...` (nulls left out).

    dbt only counts a test's rows; the rows say what broke (row_contract names the rule, the
    columns and examples; a reconciliation test both totals). Read after the build, when dbt
    has let go of the file; without a readable warehouse the failure keeps just its count.
    """
    failed = [r for r in results if r.node.resource_type == "test" and str(r.status).lower() == "fail" and r.node.compiled_code]
    if not failed:
        return {}
    if warehouse_url:
        import psycopg

        from factory_dagster.warehouse.postgres import WarehouseConnectionError, connect_postgres

        try:
            with connect_postgres(warehouse_url, ensure_schema=False, connect_timeout_s=5) as con:
                return _first_rows(con, failed, (psycopg.Error,))
        except (WarehouseConnectionError, psycopg.Error):
            return {}  # the server went away: the counts still tell the operator which tests failed
    try:
        with connect(Path(warehouse), read_only=True, wait_s=1.0) as con:
            return _first_rows(con, failed, (duckdb.Error,))
    except duckdb.Error:
        return {}  # a locked file: the counts still tell the operator which tests failed


def _calling_module() -> str:
    """The first module up the stack other than dbt-common's behaviour flags: the name dbt-common's own
    `BehaviorFlagRendered._default_source` finds, read from the frames' globals."""
    frame = sys._getframe(1)  # noqa: SLF001 - the cheap way to the callers' frames
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name and name != "dbt_common.behavior_flags":
            return name
        frame = frame.f_back
    return "Unknown"


@functools.cache  # once per process: parse() runs before every dbt invocation
def _name_behavior_flag_sources_cheaply() -> None:
    """dbt-common (1.39) names each behaviour flag's source with `inspect.stack()`, for every flag of the adapter that
    every invocation registers. That reads the source line of each frame and, for a frame without a module file (the
    `<string>` methods of dataclasses, which Dagster's and pytest's deep stacks are full of), scans all of
    `sys.modules`: up to 80 ms a flag, 45 s of the test suite's worker time in all. The name is the same."""
    from dbt_common.behavior_flags import BehaviorFlagRendered

    BehaviorFlagRendered._default_source = staticmethod(_calling_module)  # noqa: SLF001


def invoke(command: list[str], warehouse: Path | str, target_path: Path, warehouse_url: str | None = None) -> DbtRun:
    """Run one dbt command (`build`, `test`, ... with its selection) against the warehouse: the DuckDB file
    `warehouse`, or the PostgreSQL database at `warehouse_url` when one is given."""
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    target_path.mkdir(parents=True, exist_ok=True)
    target = target_for(warehouse, warehouse_url)
    manifest = parse(warehouse, target_path, warehouse_url)
    results: list[dict[str, Any]] = []
    node_errors: list[str] = []

    def keep_results(event: Any) -> None:
        if event.info.name in RESULT_EVENTS:
            results.append(msg_to_dict(event))
        elif event.info.name == "RunResultError" and event.data.msg.strip():
            node_errors.append(" ".join(event.data.msg.split()))

    try:
        with _environment(target.environ):
            # No JSON artifacts: the results are in memory, and serialising the manifest
            # again after every build cost about a third of a second.
            outcome = dbtRunner(manifest=manifest, callbacks=[keep_results]).invoke(
                [*command, "--no-write-json", *_project_args(target_path), *target.args]
            )
    finally:
        release_warehouse(target)
    error = None if outcome.exception is None else f"{type(outcome.exception).__name__}: {outcome.exception}"
    samples = {} if outcome.success else sample_failing_rows(getattr(outcome.result, "results", []), warehouse, warehouse_url)
    return DbtRun(bool(outcome.success), results, error, node_errors, samples)
