select
    event_id,
    send_id,
    event_type,
    cast(occurred_at as timestamp) as occurred_at,
    cast(occurred_at as date) as occurred_day,
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    source_file,
    cast(source_row as integer) as source_row,
    cast(imported_at as timestamp) as imported_at
from {{ source('raw', 'events') }}
