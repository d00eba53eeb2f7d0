select
    draft_id,
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    lead_id,
    arm_id,
    cast(attempt as integer) as attempt,
    model,
    prompt_version,
    cast(passed as boolean) as passed,
    cast(violation_codes as varchar[]) as violation_codes,
    cast(violation_details as varchar[]) as violation_details,
    cast(agreement as double precision) as agreement,
    cast(selected as boolean) as selected,
    cast(created_at as timestamp) as created_at
from {{ source('raw', 'gate_results') }}
