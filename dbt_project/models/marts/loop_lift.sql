-- What the loop is worth: positive replies per mature send for the loop's leads (holdout = false)
-- against the holdout's (holdout = true: the frozen baseline policy), per campaign (segment null)
-- and per campaign and segment. Leads assigned before the holdout existed (holdout null) count on
-- neither side. Maturity as in int_experiment_arm_counts: `outcome_window_days` (default 7) between
-- the send's day and the latest day any event occurred.
--
-- Intervals (95%, normal approximation): the difference of rates by the Wald interval; the ratio
-- by the delta method on log(loop rate / holdout rate), with standard error
-- sqrt((1 - p1) / (n1 p1) + (1 - p0) / (n0 p0)). Both only once each side has
-- `loop_lift_min_events` (var, default 5) positive replies: on fewer the approximation is poor
-- (one reply against one would "prove" a 95% drop).

{%- set z = 1.959963984540054 %}
{%- set window = var('outcome_window_days', 7) %}
{%- set min_events = var('loop_lift_min_events', 5) %}

with mature_sends as (

    select
        sends.campaign_id,
        sends.segment,
        assignments.holdout,
        sends.positive_reply
    from {{ ref('int_send_outcomes') }} as sends
    inner join {{ ref('stg_assignments') }} as assignments
        on sends.campaign_id = assignments.campaign_id
        and sends.lead_id = assignments.lead_id
    where assignments.holdout is not null
        and sends.days_since_send >= {{ window }}

),

sides as (

    select
        campaign_id,
        segment,
        count(*) filter (where not holdout) as loop_sends,
        count(*) filter (where not holdout and positive_reply) as loop_positive_replies,
        count(*) filter (where holdout) as holdout_sends,
        count(*) filter (where holdout and positive_reply) as holdout_positive_replies
    from mature_sends
    group by grouping sets ((campaign_id), (campaign_id, segment))

),

rates as (

    select
        *,
        cast(loop_positive_replies as double precision) / nullif(loop_sends, 0) as loop_rate,
        cast(holdout_positive_replies as double precision) / nullif(holdout_sends, 0) as holdout_rate
    from sides

),

spread as (

    select
        *,
        loop_rate - holdout_rate as difference,
        least(loop_positive_replies, holdout_positive_replies) >= {{ min_events }} as enough_events
    from rates

),

errors as (

    select
        *,
        case when enough_events then
            sqrt(loop_rate * (1 - loop_rate) / loop_sends + holdout_rate * (1 - holdout_rate) / holdout_sends)
        end as difference_se,
        case when enough_events then
            sqrt((1 - loop_rate) / loop_positive_replies + (1 - holdout_rate) / holdout_positive_replies)
        end as log_ratio_se
    from spread

)

select
    campaign_id,
    segment,
    loop_sends,
    loop_positive_replies,
    loop_rate,
    holdout_sends,
    holdout_positive_replies,
    holdout_rate,
    difference,
    difference - {{ z }} * difference_se as difference_low,
    difference + {{ z }} * difference_se as difference_high,
    loop_rate / nullif(holdout_rate, 0) - 1 as lift,
    case when log_ratio_se is not null then
        exp(ln(loop_rate / holdout_rate) - {{ z }} * log_ratio_se) - 1
    end as lift_low,
    case when log_ratio_se is not null then
        exp(ln(loop_rate / holdout_rate) + {{ z }} * log_ratio_se) - 1
    end as lift_high
from errors
