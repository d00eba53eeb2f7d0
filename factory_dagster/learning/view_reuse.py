"""The daily `dbt build` leaves the project's views in place on days when nothing that defines them changed.

Why: a view is a stored query over raw, not data: rebuilding it every day gives the same view. The 17 views cost
dbt a node each (compile, create, rename, drop, about 0.03-0.05 s) and Dagster an output each, every day. Their
tests are data checks, not view checks: they still run every day, as does every table model.

A view is reused only when the warehouse holds exactly the views recorded after the last build that created them
(the SQL DuckDB stores for each, hashed), and that build ran the same project files with the same dbt and adapter
versions against a warehouse of the same name (dbt-duckdb names the database after the file). Anything else, a
changed model or macro, an upgrade, a dropped or edited view, a restored older warehouse, rebuilds them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from graphlib import TopologicalSorter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb

from factory_dagster.settings import DBT_PROJECT_DIR
from factory_dagster.warehouse.store import connect

MARKER_NAME = "views_built.json"
_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml"}
_FINGERPRINTS: dict[tuple[float, ...], str] = {}


def view_nodes(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """unique_id -> (schema, name) of each enabled model materialized as a view."""
    return {
        unique_id: (node["schema"], node["alias"] or node["name"])
        for unique_id, node in manifest["nodes"].items()
        if node["resource_type"] == "model"
        and node["config"].get("materialized") == "view"
        and node["config"].get("enabled", True)
    }


def model_order(manifest: Mapping[str, Any]) -> list[str]:
    """The project's models, each after every model it selects from."""
    models = {unique_id: node for unique_id, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    graph = {unique_id: [d for d in node["depends_on"]["nodes"] if d in models] for unique_id, node in sorted(models.items())}
    return list(TopologicalSorter(graph).static_order())


def project_fingerprint(project_dir: Path = DBT_PROJECT_DIR) -> str:
    """A hash of the project's SQL and YAML files and of the dbt versions that turn them into views."""
    files = sorted(
        p for p in project_dir.rglob("*") if p.suffix in _PROJECT_SUFFIXES and "target" not in p.relative_to(project_dir).parts
    )
    key = tuple(p.stat().st_mtime for p in files)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256(f"dbt-core {version('dbt-core')} dbt-duckdb {version('dbt-duckdb')}".encode())
        for path in files:
            digest.update(str(path.relative_to(project_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
        _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def stored_views(con: duckdb.DuckDBPyConnection, views: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """`schema.name` -> a hash of the SQL DuckDB keeps for each of `views` that exists in the warehouse."""
    wanted = {f"{schema}.{name}" for schema, name in views.values()}
    rows = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    return {
        f"{schema}.{name}": hashlib.sha256(sql.encode()).hexdigest() for schema, name, sql in rows if f"{schema}.{name}" in wanted
    }


def _expected(warehouse: Path) -> dict[str, str]:
    return {"project": project_fingerprint(), "database": Path(warehouse).stem}


def reusable(warehouse: Path, target_path: Path, views: Mapping[str, tuple[str, str]]) -> bool:
    """The warehouse's views are the ones the current project built: the day's build may leave them in place."""
    marker = target_path / MARKER_NAME
    if not views or not marker.exists():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if {k: recorded.get(k) for k in ("project", "database")} != _expected(warehouse):
        return False
    with connect(warehouse, read_only=True) as con:
        current = stored_views(con, views)
    return len(current) == len(views) and current == recorded.get("views")


def record(warehouse: Path, target_path: Path, views: Mapping[str, tuple[str, str]]) -> None:
    """After a build that created every view and passed: what it left, so the next day can reuse it."""
    with connect(warehouse, read_only=True) as con:
        current = stored_views(con, views)
    marker = target_path / MARKER_NAME
    if len(current) != len(views):
        marker.unlink(missing_ok=True)
        return
    target_path.mkdir(parents=True, exist_ok=True)
    partial = marker.with_suffix(".tmp")
    partial.write_text(json.dumps({**_expected(warehouse), "views": current}, indent=1, sort_keys=True))
    partial.replace(marker)


def forget(target_path: Path) -> None:
    """A build that changed views and failed leaves no record: the next one rebuilds them."""
    (target_path / MARKER_NAME).unlink(missing_ok=True)


def build_args_without_views(manifest: Mapping[str, Any], exclude: str) -> list[str]:
    """`dbt build` arguments for the whole project but its views: every other model and every test, the views' too.

    (`--exclude` on the views would also drop their tests: dbt excludes a test with any excluded parent.)
    """
    views = view_nodes(manifest)
    models = sorted(
        "fqn:" + ".".join(node["fqn"])
        for unique_id, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and unique_id not in views and node["config"].get("enabled", True)
    )
    return ["--select", *models, "resource_type:test", "--exclude", exclude]
