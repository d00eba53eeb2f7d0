-- Outcomes per campaign, segment and arm: what the planner and the allocator learn from.

with per_arm as (

    select
        campaign_id,
        segment,
        arm_id,
        angle,
        arm_prompt_version as prompt_version,
        arm_model as model,
        count(*) as sends,
        count(*) filter (where delivered) as delivered,
        count(*) filter (where replied) as replies,
        count(*) filter (where positive_reply) as positive_replies,
        count(*) filter (where booked) as booked,
        count(*) filter (where unsubscribed) as unsubscribes,
        count(*) filter (where complained) as complaints,
        min(partition_day) as first_send_day,
        max(partition_day) as last_send_day
    from {{ ref('int_send_outcomes') }}
    group by campaign_id, segment, arm_id, angle, arm_prompt_version, arm_model

)

select
    campaign_id,
    segment,
    arm_id,
    angle,
    prompt_version,
    model,
    sends,
    delivered,
    replies,
    positive_replies,
    booked,
    unsubscribes,
    complaints,
    cast(replies as double precision) / sends as reply_rate,
    cast(positive_replies as double precision) / sends as positive_reply_rate,
    first_send_day,
    last_send_day
from per_arm
