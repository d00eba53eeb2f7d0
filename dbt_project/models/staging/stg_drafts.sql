select
    draft_id,
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    lead_id,
    arm_id,
    cast(candidate_index as integer) as candidate_index,
    cast(attempt as integer) as attempt,
    model,
    prompt_version,
    llm_call_id,
    subject,
    body,
    parse_error,
    cast(created_at as timestamp) as created_at,
    stage,
    cast(cost_usd as double precision) as cost_usd
from {{ source('raw', 'drafts') }}
