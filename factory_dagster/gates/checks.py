"""One shape for every "stored rows meet their Pandera schema" check of the line.

Each such check reads the day's rows of one `raw` table, validates them and shows the
failing rows with their reasons in the Dagster UI.
"""

import gc
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.schemas import failures_markdown

# Validating leaves the rows in reference cycles (a column's cached `.str` accessor points back at it), which only a
# full collection frees: a large day's 300,000 drafts (about 250 MB) stayed into the next step and added to its
# peak. Collecting costs a fraction of a second, so only a check of more rows than this does it.
COLLECT_ABOVE_ROWS = 10_000


def stored_rows_check(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    day: date,
    table: str,
    failures: Callable[[pd.DataFrame, CampaignSpec], pd.DataFrame],
) -> tuple[bool, Mapping[str, Any]]:
    stored = con.execute(f"SELECT * FROM raw.{table} WHERE partition_day = ? AND campaign_id = ?", [day, spec.campaign_id]).df()
    found = failures(stored, spec)
    rows = len(stored)
    del stored
    if rows > COLLECT_ABOVE_ROWS:
        gc.collect()
    return found.empty, {
        "rows_checked": rows,
        "failures": len(found),
        "failing_rows": dg.MetadataValue.md(failures_markdown(found)),
    }
