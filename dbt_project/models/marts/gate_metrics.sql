-- Gate quality per campaign, day, drafting model, prompt version and attempt: how much
-- of the cheap tier's output survives the gate, and how much of it is used.
--
-- Drafts and verdicts are counted apart and joined per group: a verdict carries its draft's
-- campaign, day, model, prompt version and attempt (the gate copies them, as gate_violations
-- reads them), so no draft is joined with its verdict (24.5M of each at 10M events).

{%- set grain = 'campaign_id, partition_day, model, prompt_version, attempt' %}

with drafts as (

    select {{ grain }}, count(*) as drafts
    from {{ ref('stg_drafts') }}
    group by {{ grain }}

),

verdicts as (

    select {{ grain }}, count(*) filter (where passed) as passed, count(*) filter (where selected) as selected
    from {{ ref('stg_gate_results') }}
    group by {{ grain }}

),

per_group as (

    select
        campaign_id,
        partition_day,
        model,
        prompt_version,
        attempt,
        drafts.drafts,
        coalesce(verdicts.passed, 0) as passed,
        coalesce(verdicts.selected, 0) as selected
    from drafts
    left join verdicts using ({{ grain }})

)

select
    campaign_id,
    partition_day as day,
    model,
    prompt_version,
    attempt,
    drafts,
    passed,
    cast(passed as double precision) / drafts as pass_rate,
    selected
from per_group
