-- Experiment read-out per campaign and arm: raw reply rate, a Beta-prior smoothed rate
-- for allocation, and a 95% Wilson score interval for promotion and retirement.

{%- set z = 1.959963984540054 %}

with per_arm as (

    select
        campaign_id,
        arm_id,
        angle,
        arm_prompt_version as prompt_version,
        arm_model as model,
        count(*) as sends,
        count(*) filter (where replied) as replies
    from {{ ref('int_send_outcomes') }}
    group by campaign_id, arm_id, angle, arm_prompt_version, arm_model

),

rates as (

    select
        *,
        cast(replies as double precision) / sends as reply_rate,
        cast(sends as double precision) / sum(sends) over (partition by campaign_id) as share_of_sends,
        cast(replies + {{ var('prior_sends') }} * {{ var('prior_reply_rate') }} as double precision)
            / (sends + {{ var('prior_sends') }}) as smoothed_reply_rate,
        cast({{ z }} * {{ z }} as double precision) / sends as z2_over_n
    from per_arm

),

wilson as (

    select
        *,
        (reply_rate + z2_over_n / 2) / (1 + z2_over_n) as wilson_centre,
        {{ z }} * sqrt(reply_rate * (1 - reply_rate) / sends + z2_over_n / (4 * sends))
            / (1 + z2_over_n) as wilson_half_width
    from rates

)

select
    campaign_id,
    arm_id,
    angle,
    prompt_version,
    model,
    sends,
    replies,
    reply_rate,
    share_of_sends,
    smoothed_reply_rate,
    greatest(0.0, wilson_centre - wilson_half_width) as wilson_low,
    least(1.0, wilson_centre + wilson_half_width) as wilson_high
from wilson
