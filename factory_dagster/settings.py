"""Where Factory keeps its files: one data folder, overridable from the environment.

Every path the line reads or writes is derived here so that the CLI, the Dagster
definitions, dbt and the tests agree on one layout. The environment is read once,
in `Paths.from_env`; a `Paths` value never changes afterwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from factory_dagster.campaign.registry import spec_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_SPEC_PATH = PROJECT_ROOT / "campaigns" / "brightwave_close.yaml"
DEFAULT_MODEL_REGISTRY_PATH = PROJECT_ROOT / "factory_dagster" / "models" / "registry.yaml"


@dataclass(frozen=True)
class Paths:
    """The data folder's layout; the warehouse, lead inbox and spec may live elsewhere.

    `warehouse_url` (`FACTORY_WAREHOUSE_URL`, e.g. postgresql://factory@127.0.0.1:5432/factory) puts the line's
    warehouse on PostgreSQL instead of the DuckDB file (store.connect/hold/open_warehouse, the dbt runner). Kept out of
    the repr: the URL may carry a password.
    """

    home: Path
    warehouse: Path
    leads_inbox: Path
    spec: Path
    warehouse_url: str | None = field(default=None, repr=False)
    campaigns_dir: Path | None = None

    @property
    def campaigns(self) -> Path:
        """The campaigns folder: every outreach spec in it runs daily (`campaign.registry`); by default the spec's folder."""
        return self.campaigns_dir or self.spec.parent

    @property
    def default_campaign(self) -> str:
        """The default campaign's key (its spec file's name): jobs and commands without a campaign use it."""
        return self.spec.stem

    def campaign_spec(self, key: str) -> Path:
        """A campaign's spec file: the default campaign's wherever it lives, else its file in the campaigns folder
        (`campaign.registry.CampaignFolderError` names the folder and its campaigns when there is none)."""
        return self.spec if key == self.default_campaign else spec_file(self.campaigns, key)

    def campaign_inboxes(self, key: str) -> list[Path]:
        """Where a campaign's lead files are dropped: `<leads inbox>/<campaign key>/`; the default campaign (the spec's)
        also takes files dropped in the inbox itself, as it did before there were several campaigns."""
        own = self.leads_inbox / key
        return [own, self.leads_inbox] if key == self.default_campaign else [own]

    @classmethod
    def under(cls, home: Path | str, spec: Path | str = DEFAULT_SPEC_PATH) -> Paths:
        """The default layout below one folder."""
        home = Path(home).resolve()
        return cls(home, home / "warehouse.duckdb", home / "inbox" / "leads", Path(spec).resolve())

    @classmethod
    def from_env(cls) -> Paths:
        """`FACTORY_HOME`, `FACTORY_WAREHOUSE`, `FACTORY_LEADS_INBOX`, `FACTORY_SPEC` (the default campaign) and
        `FACTORY_CAMPAIGNS` (the campaigns folder) override the defaults;
        `FACTORY_WAREHOUSE_URL` names a PostgreSQL warehouse (unset or empty: the DuckDB file)."""
        base = cls.under(os.environ.get("FACTORY_HOME", PROJECT_ROOT / "data"), os.environ.get("FACTORY_SPEC", DEFAULT_SPEC_PATH))
        return cls(
            base.home,
            Path(os.environ.get("FACTORY_WAREHOUSE", base.warehouse)).resolve(),
            Path(os.environ.get("FACTORY_LEADS_INBOX", base.leads_inbox)).resolve(),
            base.spec,
            os.environ.get("FACTORY_WAREHOUSE_URL") or None,
            Path(os.environ["FACTORY_CAMPAIGNS"]).resolve() if os.environ.get("FACTORY_CAMPAIGNS") else None,
        )

    @property
    def events_inbox(self) -> Path:
        return self.home / "inbox" / "events"

    @property
    def suppression_inbox(self) -> Path:
        return self.home / "inbox" / "suppression"

    @property
    def esp_events_inbox(self) -> Path:
        """ESP webhook payloads and one-click unsubscribes, as the feedback receiver stored them (one folder per provider)."""
        return self.home / "inbox" / "esp_events"

    @property
    def replies_inbox(self) -> Path:
        """Inbound replies (raw MIME, .eml), as the feedback receiver stored them."""
        return self.home / "inbox" / "replies"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"

    @property
    def market(self) -> Path:
        return self.home / "market"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"
