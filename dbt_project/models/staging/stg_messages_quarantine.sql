select
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    lead_id,
    arm_id,
    cast(attempts as integer) as attempts,
    cast(reason_codes as varchar[]) as reason_codes,
    reason,
    cast(created_at as timestamp) as created_at
from {{ source('raw', 'messages_quarantine') }}
