-- A person's edits of messages before they went (raw.message_edits), without the texts: what the marts count.
select
    edit_id,
    message_id,
    edit_seq,
    send_id,
    cast(partition_day as date) as partition_day,
    campaign_id,
    lead_id,
    segment,
    angle,
    arm_id,
    prompt_version,
    model,
    draft_id,
    edit_distance,
    words_before,
    words_after,
    words_after - words_before as words_change,
    sections_changed,
    changes,
    actor,
    cast(edited_at as timestamp) as edited_at
from {{ source('raw', 'message_edits') }}
