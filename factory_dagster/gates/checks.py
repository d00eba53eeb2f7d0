"""One shape for every "stored rows meet their Pandera schema" check of the line.

Each such check reads the day's rows of one `raw` table, validates them and shows the
failing rows with their reasons in the Dagster UI.
"""

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.schemas import failures_markdown


def stored_rows_check(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    day: date,
    table: str,
    failures: Callable[[pd.DataFrame, CampaignSpec], pd.DataFrame],
) -> tuple[bool, Mapping[str, Any]]:
    stored = con.execute(f"SELECT * FROM raw.{table} WHERE partition_day = ? AND campaign_id = ?", [day, spec.campaign_id]).df()
    found = failures(stored, spec)
    return found.empty, {
        "rows_checked": len(stored),
        "failures": len(found),
        "failing_rows": dg.MetadataValue.md(failures_markdown(found)),
    }
