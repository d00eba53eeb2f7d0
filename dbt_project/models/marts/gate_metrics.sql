-- Gate quality per campaign, day, drafting model, prompt version and attempt: how much
-- of the cheap tier's output survives the gate, and how much of it is used.
--
-- Drafts and verdicts are counted apart and joined per group: a verdict carries its draft's
-- campaign, day, model, prompt version and attempt (the gate copies them, as gate_violations
-- reads them), so no draft is joined with its verdict (24.5M of each at 10M events).

with drafts as (

    select
        campaign_id,
        partition_day as day,
        model,
        prompt_version,
        attempt,
        count(*) as drafts
    from {{ ref('stg_drafts') }}
    group by campaign_id, partition_day, model, prompt_version, attempt

),

verdicts as (

    select
        campaign_id,
        partition_day as day,
        model,
        prompt_version,
        attempt,
        count(*) filter (where passed) as passed,
        count(*) filter (where selected) as selected
    from {{ ref('stg_gate_results') }}
    group by campaign_id, partition_day, model, prompt_version, attempt

),

per_group as (

    select
        drafts.campaign_id,
        drafts.day,
        drafts.model,
        drafts.prompt_version,
        drafts.attempt,
        drafts.drafts,
        coalesce(verdicts.passed, 0) as passed,
        coalesce(verdicts.selected, 0) as selected
    from drafts
    left join verdicts
        on drafts.campaign_id = verdicts.campaign_id
        and drafts.day = verdicts.day
        and drafts.model = verdicts.model
        and drafts.prompt_version = verdicts.prompt_version
        and drafts.attempt = verdicts.attempt

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
