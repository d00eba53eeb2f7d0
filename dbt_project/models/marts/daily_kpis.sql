-- One row per campaign and day with activity in any stage of the line. Outcomes
-- (replies, bookings, complaints, ...) belong to the cohort of sends made that day.

with leads_accepted as (

    select campaign_id, partition_day as day, count(*) as leads_accepted
    from {{ ref('stg_leads') }}
    group by campaign_id, partition_day

),

leads_quarantined as (

    select campaign_id, partition_day as day, count(*) as leads_quarantined
    from {{ ref('stg_leads_quarantine') }}
    group by campaign_id, partition_day

),

drafts as (

    select campaign_id, partition_day as day, count(*) as drafts
    from {{ ref('stg_drafts') }}
    group by campaign_id, partition_day

),

drafts_passed as (

    select campaign_id, partition_day as day, count(*) filter (where passed) as drafts_passed
    from {{ ref('stg_gate_results') }}
    group by campaign_id, partition_day

),

messages as (

    select campaign_id, partition_day as day, count(*) as messages
    from {{ ref('stg_messages') }}
    group by campaign_id, partition_day

),

messages_quarantined as (

    select campaign_id, partition_day as day, count(*) as messages_quarantined
    from {{ ref('stg_messages_quarantine') }}
    group by campaign_id, partition_day

),

send_cohorts as (

    select
        campaign_id,
        partition_day as day,
        count(*) as sends,
        count(*) filter (where replied) as replies,
        count(*) filter (where positive_reply) as positive_replies,
        count(*) filter (where booked) as booked,
        count(*) filter (where bounced) as bounces,
        count(*) filter (where unsubscribed) as unsubscribes,
        count(*) filter (where complained) as complaints
    from {{ ref('int_send_outcomes') }}
    group by campaign_id, partition_day

),

llm_usage as (

    select
        campaign_id,
        partition_day as day,
        count(*) as llm_calls,
        sum(tokens_in) as tokens_in,
        sum(tokens_out) as tokens_out,
        sum(cost_usd) as cost_usd
    from {{ ref('stg_llm_calls') }}
    group by campaign_id, partition_day

),

campaign_days as (

    select campaign_id, day from leads_accepted
    union
    select campaign_id, day from leads_quarantined
    union
    select campaign_id, day from drafts
    union
    select campaign_id, day from drafts_passed
    union
    select campaign_id, day from messages
    union
    select campaign_id, day from messages_quarantined
    union
    select campaign_id, day from send_cohorts
    union
    select campaign_id, day from llm_usage

),

counts as (

    select
        campaign_days.campaign_id,
        campaign_days.day,
        coalesce(leads_accepted.leads_accepted, 0) as leads_accepted,
        coalesce(leads_quarantined.leads_quarantined, 0) as leads_quarantined,
        coalesce(drafts.drafts, 0) as drafts,
        coalesce(drafts_passed.drafts_passed, 0) as drafts_passed,
        coalesce(messages.messages, 0) as messages,
        coalesce(messages_quarantined.messages_quarantined, 0) as messages_quarantined,
        coalesce(send_cohorts.sends, 0) as sends,
        coalesce(send_cohorts.replies, 0) as replies,
        coalesce(send_cohorts.positive_replies, 0) as positive_replies,
        coalesce(send_cohorts.booked, 0) as booked,
        coalesce(send_cohorts.bounces, 0) as bounces,
        coalesce(send_cohorts.unsubscribes, 0) as unsubscribes,
        coalesce(send_cohorts.complaints, 0) as complaints,
        coalesce(llm_usage.llm_calls, 0) as llm_calls,
        cast(coalesce(llm_usage.tokens_in, 0) as bigint) as tokens_in,
        cast(coalesce(llm_usage.tokens_out, 0) as bigint) as tokens_out,
        coalesce(llm_usage.cost_usd, 0.0) as cost_usd
    from campaign_days
    left join leads_accepted using (campaign_id, day)
    left join leads_quarantined using (campaign_id, day)
    left join drafts using (campaign_id, day)
    left join drafts_passed using (campaign_id, day)
    left join messages using (campaign_id, day)
    left join messages_quarantined using (campaign_id, day)
    left join send_cohorts using (campaign_id, day)
    left join llm_usage using (campaign_id, day)

)

select
    campaign_id,
    day,
    leads_accepted + leads_quarantined as leads_in,
    leads_accepted,
    leads_quarantined,
    drafts,
    drafts_passed,
    cast(drafts_passed as double precision) / nullif(drafts, 0) as gate_pass_rate,
    messages,
    messages_quarantined,
    sends,
    replies,
    positive_replies,
    booked,
    bounces,
    unsubscribes,
    complaints,
    cast(replies as double precision) / nullif(sends, 0) as reply_rate,
    llm_calls,
    tokens_in,
    tokens_out,
    cost_usd
from counts
