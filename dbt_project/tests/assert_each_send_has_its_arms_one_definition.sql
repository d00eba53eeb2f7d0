-- Each send's arm is defined by exactly one prompt version and model among its campaign's assignments: what
-- int_send_outcomes needs to give every send one row with its arm's prompt version and model (an arm defined twice
-- would double its sends; one without assignments would leave them without). Checked on the inputs, the arms
-- against the sends, instead of on int_send_outcomes, a view whose every read joins each send with its events.
-- Dagster shows it as a check on stg_sends (a check must be on a model the test reads).
{{ config(meta={'dagster': {'ref': {'name': 'stg_sends'}}}) }}

with definitions as (

    select
        campaign_id,
        arm_id,
        count(distinct prompt_version) as prompt_versions,
        count(distinct model) as models
    from {{ ref('stg_assignments') }}
    group by campaign_id, arm_id

)

select
    sends.send_id,
    sends.campaign_id,
    sends.arm_id,
    coalesce(definitions.prompt_versions, 0) as prompt_versions,
    coalesce(definitions.models, 0) as models
from {{ ref('stg_sends') }} as sends
left join definitions
    on sends.campaign_id = definitions.campaign_id
    and sends.arm_id = definitions.arm_id
where coalesce(definitions.prompt_versions, 0) != 1 or coalesce(definitions.models, 0) != 1
