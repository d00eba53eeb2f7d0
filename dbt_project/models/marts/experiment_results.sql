-- Experiment read-out per experiment and arm: today's counts (intermediate.int_experiment_arm_counts,
-- the very figures the decision step decides on) beside the statistics of the decision step's
-- latest look (raw.experiment_looks: posteriors and comparisons are Monte Carlo in Python,
-- improve.stats.decide, so SQL does not recompute them).
--
-- A view, unlike the other marts: the decision step looks after the day's dbt build, and a table
-- would show yesterday's look until the next build.
{{ config(materialized='view') }}

with latest_look as (

    select *
    from (
        select *, max(partition_day) over (partition by experiment_id) as latest_look_day
        from {{ source('raw', 'experiment_looks') }}
    ) as looks
    where partition_day = latest_look_day

)

select
    counts.experiment_id,
    counts.campaign_id,
    counts.kind,
    counts.state,
    counts.arm,
    counts.role,
    counts.planned_sample_size,
    counts.started_day,
    counts.concluded_day,
    counts.first_assigned_day,
    counts.last_assigned_day,
    counts.latest_event_day,
    counts.outcome_window_days,
    counts.assigned,
    counts.sends,
    counts.mature_sends,
    counts.positive_replies,
    counts.bookings,
    counts.unsubscribes,
    counts.complaints,
    counts.negative_replies,
    cast(counts.positive_replies as double precision) / nullif(counts.mature_sends, 0) as positive_reply_rate,
    looks.partition_day as look_day,
    looks.look,
    looks.days_running,
    looks.mature_sends as look_mature_sends,
    looks.posterior_mean,
    looks.interval_low,
    looks.interval_high,
    looks.p_better,
    looks.expected_loss,
    looks.expected_loss_relative,
    looks.lift,
    looks.lift_low,
    looks.lift_high,
    looks.srm_p_value,
    looks.guardrail_status,
    looks.guardrails_json,
    looks.decision,
    looks.reasons,
    looks.winner,
    looks.rule_version
from {{ ref('int_experiment_arm_counts') }} as counts
left join latest_look as looks
    on counts.experiment_id = looks.experiment_id
    and counts.arm = looks.arm
