-- One row per send with the arm it belongs to and what has happened to it so far.
-- A send counts once per outcome however many events of that type arrived.

with sends as (

    select * from {{ ref('stg_sends') }}

),

-- An arm is defined by its assignments: repairs and escalations may write the message
-- with another prompt version or model, but the send still belongs to the arm.
arms as (

    select distinct campaign_id, arm_id, prompt_version, model
    from {{ ref('stg_assignments') }}

),

events as (

    select * from {{ ref('stg_events') }}

),

outcomes_per_send as (

    select
        send_id,
        bool_or(event_type = 'delivered') as delivered,
        bool_or(event_type = 'bounced') as bounced,
        bool_or(event_type = 'opened') as opened,
        bool_or(event_type in ('replied', 'positive_reply')) as replied,
        bool_or(event_type = 'positive_reply') as positive_reply,
        bool_or(event_type = 'booked') as booked,
        bool_or(event_type = 'unsubscribed') as unsubscribed,
        bool_or(event_type = 'complained') as complained,
        min(occurred_at) filter (where event_type in ('replied', 'positive_reply')) as first_reply_at,
        -- The day the line first knew of a reply: decisions "as of a day" count only what was imported by then.
        min(partition_day) filter (where event_type in ('replied', 'positive_reply')) as first_reply_known_day,
        min(partition_day) filter (where event_type = 'positive_reply') as first_positive_known_day,
        min(partition_day) filter (where event_type = 'unsubscribed') as first_unsubscribe_known_day
    from events
    group by send_id

),

latest_event_day as (

    select max(occurred_day) as latest_event_day from events

)

select
    sends.send_id,
    sends.message_id,
    sends.partition_day,
    sends.campaign_id,
    sends.spec_version,
    sends.lead_id,
    sends.segment,
    sends.arm_id,
    sends.angle,
    arms.prompt_version as arm_prompt_version,
    arms.model as arm_model,
    sends.prompt_version,
    sends.model,
    sends.sent_at,
    coalesce(outcomes.delivered, false) as delivered,
    coalesce(outcomes.bounced, false) as bounced,
    coalesce(outcomes.opened, false) as opened,
    coalesce(outcomes.replied, false) as replied,
    coalesce(outcomes.positive_reply, false) as positive_reply,
    coalesce(outcomes.booked, false) as booked,
    coalesce(outcomes.unsubscribed, false) as unsubscribed,
    coalesce(outcomes.complained, false) as complained,
    outcomes.first_reply_at,
    outcomes.first_reply_known_day,
    outcomes.first_positive_known_day,
    outcomes.first_unsubscribe_known_day,
    {{ dbt.datediff('sends.partition_day', 'latest_event_day.latest_event_day', 'day') }} as days_since_send
from sends
left join arms
    on sends.campaign_id = arms.campaign_id
    and sends.arm_id = arms.arm_id
left join outcomes_per_send as outcomes
    on sends.send_id = outcomes.send_id
cross join latest_event_day
