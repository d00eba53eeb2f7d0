-- Trailing 7-day deliverability and reputation signals per campaign and day. The daily
-- run reads the row of its own day and engages the kill switch when halt_sending is true.
-- The window of `day` is (day - 7, day]: sends by their day, outcomes by the day they
-- occurred, each send counted once per outcome type (on the day that outcome first occurred).

with sends as (

    select send_id, campaign_id, partition_day from {{ ref('stg_sends') }}

),

events as (

    select
        events.send_id,
        sends.campaign_id,
        events.event_type,
        events.occurred_day,
        events.partition_day as imported_day
    from {{ ref('stg_events') }} as events
    inner join sends
        on events.send_id = sends.send_id

),

first_outcomes as (

    select campaign_id, send_id, event_type, min(occurred_day) as day
    from events
    group by campaign_id, send_id, event_type

),

negative_replies as (

    select campaign_id, cast(first_reply_at as date) as day
    from {{ ref('int_send_outcomes') }}
    where replied and not positive_reply and not booked

),

daily_sends as (

    select campaign_id, partition_day as day, count(*) as sends
    from sends
    group by campaign_id, partition_day

),

daily_outcomes as (

    select
        campaign_id,
        day,
        count(*) filter (where event_type = 'delivered') as delivered,
        count(*) filter (where event_type = 'bounced') as bounces,
        count(*) filter (where event_type = 'complained') as complaints,
        count(*) filter (where event_type = 'unsubscribed') as unsubscribes
    from first_outcomes
    group by campaign_id, day

),

daily_negative_replies as (

    select campaign_id, day, count(*) as negative_replies
    from negative_replies
    group by campaign_id, day

),

campaign_days as (

    select campaign_id, day from daily_sends
    union
    select campaign_id, occurred_day as day from events
    union
    select campaign_id, imported_day as day from events

),

daily as (

    select
        campaign_days.campaign_id,
        campaign_days.day,
        coalesce(daily_sends.sends, 0) as sends,
        coalesce(daily_outcomes.delivered, 0) as delivered,
        coalesce(daily_outcomes.bounces, 0) as bounces,
        coalesce(daily_outcomes.complaints, 0) as complaints,
        coalesce(daily_outcomes.unsubscribes, 0) as unsubscribes,
        coalesce(daily_negative_replies.negative_replies, 0) as negative_replies
    from campaign_days
    left join daily_sends using (campaign_id, day)
    left join daily_outcomes using (campaign_id, day)
    left join daily_negative_replies using (campaign_id, day)

),

windowed as (

    select
        campaign_id,
        day,
        cast(sum(sends) over last_7_days as bigint) as sends_7d,
        cast(sum(delivered) over last_7_days as bigint) as delivered_7d,
        cast(sum(bounces) over last_7_days as bigint) as bounces_7d,
        cast(sum(complaints) over last_7_days as bigint) as complaints_7d,
        cast(sum(unsubscribes) over last_7_days as bigint) as unsubscribes_7d,
        cast(sum(negative_replies) over last_7_days as bigint) as negative_replies_7d
    from daily
    window last_7_days as (
        partition by campaign_id
        order by day
        range between interval '6 days' preceding and current row
    )

),

rates as (

    select
        *,
        cast(bounces_7d as double precision) / nullif(sends_7d, 0) as bounce_rate_7d,
        cast(complaints_7d as double precision) / nullif(sends_7d, 0) as complaint_rate_7d,
        cast(negative_replies_7d as double precision) / nullif(sends_7d, 0) as negative_reply_rate_7d,
        sends_7d >= {{ var('anomaly_min_sends') }} as enough_sends
    from windowed

),

flags as (

    select
        *,
        coalesce(enough_sends and complaint_rate_7d > {{ var('complaint_rate_ceiling') }}, false) as complaint_spike,
        coalesce(enough_sends and bounce_rate_7d > {{ var('bounce_rate_ceiling') }}, false) as bounce_spike
    from rates

)

select
    campaign_id,
    day,
    sends_7d,
    delivered_7d,
    bounces_7d,
    complaints_7d,
    unsubscribes_7d,
    negative_replies_7d,
    bounce_rate_7d,
    complaint_rate_7d,
    negative_reply_rate_7d,
    complaint_spike,
    bounce_spike,
    complaint_spike or bounce_spike as halt_sending
from flags
