-- An event carries the campaign of the send it is about.
select events.event_id, events.campaign_id, sends.campaign_id as send_campaign_id
from {{ ref('stg_events') }} as events
inner join {{ ref('stg_sends') }} as sends
    on events.send_id = sends.send_id
where events.campaign_id != sends.campaign_id
