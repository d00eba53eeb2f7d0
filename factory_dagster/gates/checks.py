"""One shape for every "stored rows meet their Pandera schema" check of the line.

Each such check reads the day's rows of one `raw` table, validates them and shows the
failing rows with their reasons in the Dagster UI.
"""

from collections.abc import Callable

import dagster as dg
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.schemas import failures_markdown
from factory_dagster.resources import FactoryResource, partition_day


def stored_rows_check(
    context: dg.AssetCheckExecutionContext,
    factory: FactoryResource,
    table: str,
    failures: Callable[[pd.DataFrame, CampaignSpec], pd.DataFrame],
) -> dg.AssetCheckResult:
    spec = factory.spec()
    with factory.warehouse(read_only=True) as con:
        stored = con.execute(
            f"SELECT * FROM raw.{table} WHERE partition_day = ? AND campaign_id = ?", [partition_day(context), spec.campaign_id]
        ).df()
    found = failures(stored, spec)
    return dg.AssetCheckResult(
        passed=found.empty,
        metadata={
            "rows_checked": len(stored),
            "failures": len(found),
            "failing_rows": dg.MetadataValue.md(failures_markdown(found)),
        },
    )
