"""The ids every row a run writes carries, and the clock of the warehouse's timestamps.

Apart from the model gateway, which stamps its ledger with them, because the controls, the review actions, the
importers and the `factory` command stamp rows too: through the gateway each of them loaded the OpenAI client
(about 0.35 s at every start of a short command such as `factory holds list`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def utcnow() -> datetime:
    """Naive UTC, as the warehouse's TIMESTAMP columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RunContext:
    """The ids every ledger row carries."""

    run_id: str
    partition_day: date
    campaign_id: str

    def stamp(self, rows: pd.DataFrame, time_column: str = "created_at") -> pd.DataFrame:
        """The rows with this run's ids and a timestamp, ready for a `raw` table."""
        return rows.assign(
            run_id=self.run_id, partition_day=self.partition_day, campaign_id=self.campaign_id, **{time_column: utcnow()}
        )
