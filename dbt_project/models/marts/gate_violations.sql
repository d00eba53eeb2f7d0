-- Which rules the drafts break, per campaign, day, drafting model, prompt version and attempt.

with violations as (

    select
        campaign_id,
        partition_day as day,
        model,
        prompt_version,
        attempt,
        draft_id,
        unnest(violation_codes) as violation_code
    from {{ ref('stg_gate_results') }}

)

select
    campaign_id,
    day,
    model,
    prompt_version,
    attempt,
    violation_code,
    count(*) as violations,
    count(distinct draft_id) as drafts_flagged
from violations
group by campaign_id, day, model, prompt_version, attempt, violation_code
