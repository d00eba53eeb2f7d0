-- The content line's variants (raw.content_pieces) with their review state: the latest decision from
-- raw.content_reviews and the effective text (the latest edit, else the model's). A view over both raw
-- tables so the marts need one node for the pieces and their reviews.
with decided as (

    select
        variant_id,
        {{ arg_max('action', 'seq') }} as decision,
        {{ arg_max('edited_text', 'seq', where="action = 'edit'") }} as edited_text,
        count(*) filter (where action = 'edit') as edits,
        avg(edit_distance) filter (where action = 'edit') as mean_edit_distance,
        count(*) as decisions
    from {{ source('raw', 'content_reviews') }}
    group by variant_id

)

select
    p.variant_id,
    p.piece_id,
    cast(p.day as date) as day,
    p.content_id,
    p.spec_version,
    p.topic,
    p.segment,
    p.channel,
    p.text as model_text,
    coalesce(d.edited_text, p.text) as text,
    p.hook,
    length(coalesce(d.edited_text, p.text)) as text_chars,
    {{ split_count("trim(coalesce(d.edited_text, p.text))", "' '") }} as text_words,
    p.claim_ids,
    p.gate_verdict,
    p.violation_codes,
    p.audit_verdict,
    p.gate_verdict = 'flagged' or coalesce(p.audit_verdict, '') = 'failed' as needed_person,
    p.model,
    p.prompt_version,
    coalesce(d.decision, 'pending') as review_state,
    coalesce(d.edits, 0) as edits,
    d.mean_edit_distance,
    coalesce(d.decision in ('approve', 'edit', 'auto_approve'), false) as approved,
    cast(p.created_at as timestamp) as created_at
from {{ source('raw', 'content_pieces') }} as p
left join decided as d using (variant_id)
