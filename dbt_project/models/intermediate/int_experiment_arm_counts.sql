-- Per experiment and arm: what the decision step decides on and marts.experiment_results shows.
--
-- Traffic: leads the assign stage gave the arm, in any layer (stg_assignments.experiment_id /
-- experiment_arm for prompt experiments, routing_experiment_id / routing_arm for routing canaries,
-- hook_experiment_id / hook_arm for hook experiments, split_experiment_id / split_arm for segment
-- splits; holdout leads never count). Gate: the candidates of each arm's first draft rounds and how many
-- the gate rejected (int_draft_jobs), known the day the lead is drafted, so a canary whose model
-- slips is rolled back in days, not after the outcome window. Outcomes: only *mature* sends count, so a young send cannot look
-- like a non-reply. A send is mature once `outcome_window_days` (var, default 7: outcomes arrive
-- on days +1..+7) have passed between its day and the latest day any event occurred
-- (int_send_outcomes.days_since_send), so maturity needs no run date and a view built once stays
-- right every day. A re-run of an old day after later days would see later data: the decision
-- step never looks twice on a day, nor before its latest look.

{%- set window = var('outcome_window_days', 7) %}

with arms as (

    -- Who the arms are (int_experiment_arms): one row per experiment that ever ran and arm.
    select experiment_id, campaign_id, kind, state, arm, role, planned_sample_size, started_day, concluded_day
    from {{ ref('int_experiment_arms') }}

),

experiment_leads as (

    -- One traffic layer per (experiment id, arm) column pair of the assignments.
    {%- set layers = [
        ('experiment_id', 'experiment_arm'),
        ('routing_experiment_id', 'routing_arm'),
        ('hook_experiment_id', 'hook_arm'),
        ('split_experiment_id', 'split_arm'),
    ] %}
    {%- for id_column, arm_column in layers %}
    select campaign_id, lead_id, {{ id_column }} as experiment_id, {{ arm_column }} as arm, partition_day
    from {{ ref('stg_assignments') }}
    where {{ id_column }} is not null and not coalesce(holdout, false)
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

gate as (

    select
        leads.experiment_id,
        leads.arm,
        sum(jobs.first_round_drafts) as first_round_drafts,
        sum(jobs.first_round_failures) as first_round_failures
    from {{ ref('int_draft_jobs') }} as jobs
    inner join experiment_leads as leads
        on jobs.campaign_id = leads.campaign_id
        and jobs.lead_id = leads.lead_id
    where jobs.stage = 'draft'
    group by leads.experiment_id, leads.arm

),

assigned as (

    select
        experiment_id,
        arm,
        count(*) as assigned,
        min(partition_day) as first_assigned_day,
        max(partition_day) as last_assigned_day
    from experiment_leads
    group by experiment_id, arm

),

experiment_sends as (

    select
        leads.experiment_id,
        leads.arm,
        sends.days_since_send >= {{ window }} as mature,
        sends.positive_reply,
        sends.booked,
        sends.unsubscribed,
        sends.complained,
        sends.replied and not sends.positive_reply as negative_reply
    from {{ ref('int_send_outcomes') }} as sends
    inner join experiment_leads as leads
        on sends.campaign_id = leads.campaign_id
        and sends.lead_id = leads.lead_id

),

outcomes as (

    select
        experiment_id,
        arm,
        count(*) as sends,
        count(*) filter (where mature) as mature_sends,
        count(*) filter (where mature and positive_reply) as positive_replies,
        count(*) filter (where mature and booked) as bookings,
        count(*) filter (where mature and unsubscribed) as unsubscribes,
        count(*) filter (where mature and complained) as complaints,
        count(*) filter (where mature and negative_reply) as negative_replies
    from experiment_sends
    group by experiment_id, arm

),

-- The day the counts are as of: the latest day any event occurred, which maturity counts from (int_send_outcomes'
-- partition_day + days_since_send of every send; none without a send). Read from the events, not from
-- int_send_outcomes: a view, whose every read joins each send with its events again.
as_of as (

    select max(occurred_day) as latest_event_day
    from {{ ref('stg_events') }}
    where exists (select 1 from {{ ref('stg_sends') }})

)

select
    arms.*,
    assigned.first_assigned_day,
    assigned.last_assigned_day,
    as_of.latest_event_day,
    {{ window }} as outcome_window_days,
    coalesce(assigned.assigned, 0) as assigned,
    coalesce(outcomes.sends, 0) as sends,
    coalesce(outcomes.mature_sends, 0) as mature_sends,
    coalesce(outcomes.positive_replies, 0) as positive_replies,
    coalesce(outcomes.bookings, 0) as bookings,
    coalesce(outcomes.unsubscribes, 0) as unsubscribes,
    coalesce(outcomes.complaints, 0) as complaints,
    coalesce(outcomes.negative_replies, 0) as negative_replies,
    cast(coalesce(gate.first_round_drafts, 0) as bigint) as first_round_drafts,
    cast(coalesce(gate.first_round_failures, 0) as bigint) as first_round_failures
from arms
left join assigned
    on arms.experiment_id = assigned.experiment_id
    and arms.arm = assigned.arm
left join outcomes
    on arms.experiment_id = outcomes.experiment_id
    and arms.arm = outcomes.arm
left join gate
    on arms.experiment_id = gate.experiment_id
    and arms.arm = gate.arm
cross join as_of
