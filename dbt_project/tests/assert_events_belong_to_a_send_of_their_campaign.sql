-- An event is about a send that exists and carries that send's campaign. (The events import
-- quarantines unknown send ids; this catches a warehouse where one slipped through.)
{{ config(meta={'dagster': {'ref': {'name': 'stg_events'}}}) }}

select
    events.event_id,
    events.send_id,
    events.campaign_id,
    sends.campaign_id as send_campaign_id,
    case when sends.send_id is null then 'unknown_send' else 'other_campaign' end as problem
from {{ ref('stg_events') }} as events
left join {{ ref('stg_sends') }} as sends
    on events.send_id = sends.send_id
where events.send_id is not null
    and (sends.send_id is null or events.campaign_id is distinct from sends.campaign_id)
