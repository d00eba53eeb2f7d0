"""Where Factory keeps its files: one data folder, overridable from the environment.

Every path the line reads or writes is derived here so that the CLI, the Dagster
definitions, dbt and the tests agree on one layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_SPEC_PATH = PROJECT_ROOT / "campaigns" / "brightwave_close.yaml"
DEFAULT_MODEL_REGISTRY_PATH = PROJECT_ROOT / "factory_dagster" / "models" / "registry.yaml"


@dataclass(frozen=True)
class Paths:
    """The data folder's layout. `FACTORY_HOME` moves the whole folder."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get("FACTORY_HOME", PROJECT_ROOT / "data")).resolve())

    @property
    def warehouse(self) -> Path:
        override = os.environ.get("FACTORY_WAREHOUSE")
        return Path(override).resolve() if override else self.home / "warehouse.duckdb"

    @property
    def leads_inbox(self) -> Path:
        override = os.environ.get("FACTORY_LEADS_INBOX")
        return Path(override).resolve() if override else self.home / "inbox" / "leads"

    @property
    def events_inbox(self) -> Path:
        return self.home / "inbox" / "events"

    @property
    def suppression_inbox(self) -> Path:
        return self.home / "inbox" / "suppression"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"

    @property
    def market(self) -> Path:
        return self.home / "market"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME", self.home / "dagster_home")).resolve()

    def spec_path(self) -> Path:
        return Path(os.environ.get("FACTORY_SPEC", DEFAULT_SPEC_PATH)).resolve()
