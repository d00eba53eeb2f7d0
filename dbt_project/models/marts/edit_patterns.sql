-- What people change when they review messages before they go, per campaign and the prompt version and
-- model of the draft they edited: one row per section, plus `all` for the whole message. The text analysis
-- (sections, rule facts, phrases) was done in Python when the edit was stored (review/analysis.py).

with reviewed as (

    -- Messages a person looked at: any review action (approve, edit, hold, release).
    select campaign_id, prompt_version, model, count(distinct message_id) as messages_reviewed
    from {{ source('raw', 'message_reviews') }}
    group by campaign_id, prompt_version, model

),

sections as (

    select unnest(array['all', 'subject', 'greeting', 'hook', 'body', 'call_to_action', 'footer']) as section

),

edit_sections as (

    -- Each edit once for `all`, and once for each section it changed.
    select campaign_id, prompt_version, model, message_id, edit_distance, words_change, 'all' as section
    from {{ ref('stg_message_edits') }}
    union all
    select campaign_id, prompt_version, model, message_id, edit_distance, words_change, unnest(sections_changed) as section
    from {{ ref('stg_message_edits') }}

),

edit_counts as (

    select
        campaign_id,
        prompt_version,
        model,
        section,
        count(*) as edits,
        count(distinct message_id) as messages_edited,
        avg(edit_distance) as mean_edit_distance,
        cast(avg(words_change) as double precision) as mean_words_change
    from edit_sections
    group by campaign_id, prompt_version, model, section

),

changes as (

    select e.campaign_id, e.prompt_version, e.model, c.section, c.kind, c.change, c.value
    from {{ ref('stg_message_edits') }} as e, {{ unnest_records('e.changes', 'c', ['section', 'kind', 'change', 'value']) }}

),

change_counts as (

    select
        campaign_id,
        prompt_version,
        model,
        section,
        kind,
        change,
        value,
        -- Three lists per row: phrases removed, phrases added, and the rule facts either way.
        case when kind = 'phrase' then change else 'rule' end as list_name,
        count(*) as times
    from (
        select * from changes
        union all
        select campaign_id, prompt_version, model, 'all' as section, kind, change, value from changes
    ) as changes_and_all
    group by campaign_id, prompt_version, model, section, kind, change, value

),

ranked as (

    select
        *,
        row_number() over (
            partition by campaign_id, prompt_version, model, section, list_name
            order by times desc, {{ binary_order('kind') }}, {{ binary_order('value') }}, {{ binary_order('change') }}
        ) as rank
    from change_counts

),

top_changes as (

    select
        campaign_id,
        prompt_version,
        model,
        section,
        string_agg(change || ' ' || kind || coalesce(': ' || nullif(value, ''), '') || ' (' || times || ')', '; ' order by rank)
            filter (where list_name = 'rule') as top_rule_changes,
        string_agg(value || ' (' || times || ')', '; ' order by rank) filter (where list_name = 'removed') as top_removed_phrases,
        string_agg(value || ' (' || times || ')', '; ' order by rank) filter (where list_name = 'added') as top_added_phrases
    from ranked
    where rank <= 3
    group by campaign_id, prompt_version, model, section

)

select
    r.campaign_id,
    r.prompt_version,
    r.model,
    s.section,
    r.messages_reviewed,
    coalesce(c.messages_edited, 0) as messages_edited,
    coalesce(c.edits, 0) as edits,
    cast(coalesce(c.messages_edited, 0) as double precision) / r.messages_reviewed as edit_rate,
    c.mean_edit_distance,
    c.mean_words_change,
    t.top_rule_changes,
    t.top_removed_phrases,
    t.top_added_phrases
from reviewed as r
cross join sections as s
left join edit_counts as c using (campaign_id, prompt_version, model, section)
left join top_changes as t using (campaign_id, prompt_version, model, section)
