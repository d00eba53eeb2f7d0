-- How well each model does each drafting stage (draft, repair, escalate), per campaign: the
-- input to routing canaries (move a stage to the cheapest model that still holds its KPIs).
--
-- A "job" is one lead's work at one stage on one day; its model is the one that wrote the
-- stage's first candidate. Everything after the job's first round is charged to it: the repair
-- and escalation rounds its answer still needed, their cost, and the fate of the lead's message
-- (audit, replies). So a cheap draft model that needs more repairs pays for them here.

{% set outcome_window_days = var('outcome_window_days', 7) %}

with job_work as (

    select * from {{ ref('int_draft_jobs') }}

),

audits as (

    -- One verdict per audited message (judge calls that gave none are the judge's failure, not the writer's).
    select
        message_id,
        bool_and(passed) as passed,
        cast(avg(score) as double precision) as mean_score
    from {{ ref('stg_audits') }}
    where status = 'ok'
    group by message_id

),

per_job as (

    select
        job_work.*,
        messages.message_id,
        audits.passed as audit_passed,
        audits.mean_score as audit_mean_score,
        sends.send_id,
        coalesce(sends.days_since_send >= {{ outcome_window_days }}, false) as mature,
        sends.positive_reply,
        sends.replied and not sends.positive_reply as negative_reply,
        sends.unsubscribed,
        sends.complained
    from job_work
    left join {{ ref('stg_messages') }} as messages
        on job_work.campaign_id = messages.campaign_id
        and job_work.partition_day = messages.partition_day
        and job_work.lead_id = messages.lead_id
    left join audits
        on messages.message_id = audits.message_id
    left join {{ ref('int_send_outcomes') }} as sends
        on messages.message_id = sends.message_id

),

per_model as (

    select
        campaign_id,
        stage,
        model,
        count(*) as leads,
        count(*) filter (where first_pass) as first_pass,
        cast(sum(first_round_drafts) as bigint) as first_round_drafts,
        cast(sum(first_round_failures) as bigint) as first_round_failures,
        count(message_id) as accepted,
        cast(sum(repairs) as bigint) as repairs,
        cast(sum(escalations) as bigint) as escalations,
        count(audit_passed) as audited,
        count(*) filter (where not audit_passed) as audit_failures,
        avg(audit_mean_score) as audit_mean_score,
        count(send_id) as sends,
        count(*) filter (where mature) as mature_sends,
        count(*) filter (where mature and positive_reply) as positive_replies,
        count(*) filter (where mature and negative_reply) as negative_replies,
        count(*) filter (where mature and unsubscribed) as unsubscribes,
        count(*) filter (where mature and complained) as complaints,
        sum(cost_usd) as cost_usd,
        min(partition_day) as first_day,
        max(partition_day) as last_day
    from per_job
    group by campaign_id, stage, model

)

select
    campaign_id,
    stage,
    model,
    leads,
    first_pass,
    cast(first_pass as double precision) / leads as first_pass_rate,
    first_round_drafts,
    cast(first_round_failures as double precision) / nullif(first_round_drafts, 0) as first_round_failure_rate,
    accepted,
    cast(accepted as double precision) / leads as acceptance_rate,
    repairs,
    escalations,
    cast(repairs as double precision) / nullif(accepted, 0) as repairs_per_accepted,
    cast(escalations as double precision) / nullif(accepted, 0) as escalations_per_accepted,
    audited,
    audit_mean_score,
    cast(audit_failures as double precision) / nullif(audited, 0) as audit_failure_rate,
    sends,
    mature_sends,
    positive_replies,
    cast(positive_replies as double precision) / nullif(mature_sends, 0) as positive_reply_rate,
    negative_replies,
    cast(negative_replies as double precision) / nullif(mature_sends, 0) as negative_reply_rate,
    unsubscribes,
    cast(unsubscribes as double precision) / nullif(mature_sends, 0) as unsubscribe_rate,
    complaints,
    cast(complaints as double precision) / nullif(mature_sends, 0) as complaint_rate,
    cost_usd,
    cost_usd / nullif(accepted, 0) as cost_per_accepted_usd,
    first_day,
    last_day
from per_model
