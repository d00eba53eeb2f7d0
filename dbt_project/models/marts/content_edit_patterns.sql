-- How often people step in on the content line, per content spec, channel and model: variants decided,
-- sent to a person, edited, rejected, and how much the edits changed (word-level edit distance, computed
-- in Python when the edit was stored: review/analysis.py).

select
    content_id,
    channel,
    model,
    count(*) filter (where review_state <> 'pending') as variants_decided,
    count(*) filter (where needed_person) as variants_flagged,
    count(*) filter (where review_state = 'auto_approve') as auto_approved,
    count(*) filter (where edits > 0) as variants_edited,
    count(*) filter (where review_state = 'reject') as rejected,
    cast(count(*) filter (where edits > 0) as double precision)
        / nullif(count(*) filter (where review_state <> 'pending'), 0) as edit_rate,
    cast(count(*) filter (where review_state = 'reject') as double precision)
        / nullif(count(*) filter (where review_state <> 'pending'), 0) as reject_rate,
    avg(mean_edit_distance) filter (where edits > 0) as mean_edit_distance
from {{ ref('stg_content_pieces') }}
group by content_id, channel, model
