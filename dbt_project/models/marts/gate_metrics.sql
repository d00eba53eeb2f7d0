-- Gate quality per campaign, day, drafting model, prompt version and attempt: how much
-- of the cheap tier's output survives the gate, and how much of it is used.

with drafts as (

    select * from {{ ref('stg_drafts') }}

),

gate_results as (

    select * from {{ ref('stg_gate_results') }}

),

per_group as (

    select
        drafts.campaign_id,
        drafts.partition_day as day,
        drafts.model,
        drafts.prompt_version,
        drafts.attempt,
        count(*) as drafts,
        count(*) filter (where gate_results.passed) as passed,
        count(*) filter (where gate_results.selected) as selected
    from drafts
    left join gate_results
        on drafts.draft_id = gate_results.draft_id
    group by drafts.campaign_id, drafts.partition_day, drafts.model, drafts.prompt_version, drafts.attempt

)

select
    campaign_id,
    day,
    model,
    prompt_version,
    attempt,
    drafts,
    passed,
    cast(passed as double precision) / drafts as pass_rate,
    selected
from per_group
