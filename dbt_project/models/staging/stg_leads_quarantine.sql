select
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    source_file,
    cast(source_row as integer) as source_row,
    column_name,
    reason_code,
    reason,
    raw_record,
    cast(imported_at as timestamp) as imported_at
from {{ source('raw', 'leads_quarantine') }}
