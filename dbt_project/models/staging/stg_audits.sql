-- One row per audited message and rubric criterion (the judge's scores, unnested).
select
    audit_id,
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    message_id,
    lead_id,
    model,
    prompt_version,
    status,
    cast(passed as boolean) as passed,
    score.key as criterion,
    cast(score.value as integer) as score,
    reasons,
    cast(created_at as timestamp) as created_at
from {{ source('raw', 'audits') }},
    {{ map_entries('scores', 'score') }}
