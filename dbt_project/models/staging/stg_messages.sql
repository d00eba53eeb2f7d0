select
    message_id,
    send_id,
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    spec_version,
    lead_id,
    lower(trim(to_email)) as to_email,
    arm_id,
    angle,
    prompt_version,
    model,
    draft_id,
    subject,
    body,
    cast(created_at as timestamp) as created_at
from {{ source('raw', 'messages') }}
