-- Experiment read-out per experiment and arm: each arm with the statistics of the decision step's latest look
-- (intermediate.int_experiment_arms, from raw.experiment_looks: posteriors and comparisons are Monte Carlo in Python,
-- improve.stats.decide, so SQL does not recompute them) beside today's counts (intermediate.int_experiment_arm_counts,
-- the very figures the decision step decides on; one row per arm, so the join keeps the arms' rows).
--
-- A view, unlike the other marts: the decision step looks after the day's dbt build, and a table
-- would show yesterday's look until the next build.
{{ config(materialized='view') }}

select
    arms.*,
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
    cast(counts.positive_replies as double precision) / nullif(counts.mature_sends, 0) as positive_reply_rate
from {{ ref('int_experiment_arms') }} as arms
left join {{ ref('int_experiment_arm_counts') }} as counts
    on arms.experiment_id = counts.experiment_id
    and arms.arm = counts.arm
