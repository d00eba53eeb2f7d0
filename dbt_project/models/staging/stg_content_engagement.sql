-- The content line's engagement (raw.content_engagement): one row per variant, metric and day as imported.
select
    variant_id,
    channel,
    metric,
    cast(value as double precision) as value,
    cast(day as date) as day,
    source,
    source_file,
    cast(source_row as integer) as source_row,
    cast(partition_day as date) as partition_day,
    campaign_id,
    cast(imported_at as timestamp) as imported_at
from {{ source('raw', 'content_engagement') }}
