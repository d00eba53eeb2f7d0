select
    cast(partition_day as date) as partition_day,
    run_id,
    campaign_id,
    spec_version,
    lead_id,
    segment,
    arm_id,
    angle,
    prompt_version,
    model,
    cast(propensity as double) as propensity,
    policy_version,
    reason,
    cast(assigned_at as timestamp) as assigned_at,
    experiment_id,
    experiment_arm,
    holdout
from {{ source('raw', 'assignments') }}
