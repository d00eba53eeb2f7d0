-- What the gate did with each day's leads, per arm model and prompt version: passed on the
-- first candidates, repaired by a re-ask, rescued by the escalation model, or quarantined.
-- The rates say whether the cheap tier holds its KPI at each prompt version.

with assignments as (

    select campaign_id, lead_id, model, prompt_version from {{ ref('stg_assignments') }}

),

messages as (

    select m.campaign_id, m.partition_day, m.lead_id, d.attempt, d.prompt_version as draft_prompt_version
    from {{ ref('stg_messages') }} as m
    inner join {{ ref('stg_drafts') }} as d on d.draft_id = m.draft_id

),

quarantined as (

    select campaign_id, partition_day, lead_id from {{ ref('stg_messages_quarantine') }}

),

verdicts as (

    select
        campaign_id,
        partition_day,
        lead_id,
        case
            when attempt = 0 then 'first_pass'
            when draft_prompt_version like 'repair-%' then 'repaired'
            else 'escalated'
        end as outcome
    from messages
    union all
    select campaign_id, partition_day, lead_id, 'quarantined' as outcome from quarantined

)

select
    verdicts.campaign_id,
    verdicts.partition_day as day,
    assignments.model,
    assignments.prompt_version,
    count(*) as leads,
    count(*) filter (where outcome = 'first_pass') as first_pass,
    count(*) filter (where outcome = 'repaired') as repaired,
    count(*) filter (where outcome = 'escalated') as escalated,
    count(*) filter (where outcome = 'quarantined') as quarantined,
    cast(count(*) filter (where outcome = 'first_pass') as double precision) / count(*) as first_pass_rate,
    cast(count(*) filter (where outcome = 'repaired') as double precision) / count(*) as repair_rate,
    cast(count(*) filter (where outcome = 'escalated') as double precision) / count(*) as escalation_rate,
    cast(count(*) filter (where outcome = 'quarantined') as double precision) / count(*) as quarantine_rate
from verdicts
inner join assignments
    on assignments.campaign_id = verdicts.campaign_id and assignments.lead_id = verdicts.lead_id
group by verdicts.campaign_id, verdicts.partition_day, assignments.model, assignments.prompt_version
