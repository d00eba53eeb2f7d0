-- Content variants and what their audience did with them: one row per variant (so per variant x channel x
-- segment; a variant has one channel and one segment), with the text the features are computed from.
-- Engagement of a variant the line has no piece for (imported for another spec) is left out.
-- A piece's variants are one experiment (kind content_variants): each variant's split of the audience
-- (raw.content_allocations) and the experiment's latest look (raw.experiment_looks) come with it.

with engagement as (

    select
        variant_id,
        sum(value) filter (where metric = 'impressions') as linkedin_impressions,
        sum(value) filter (where metric = 'delivered') as deliveries,
        sum(value) filter (where metric in ('clicks', 'clicked')) as clicks,
        sum(value) filter (where metric = 'reactions') as reactions,
        sum(value) filter (where metric = 'comments') as comments,
        sum(value) filter (where metric = 'reposts') as reposts,
        sum(value) filter (where metric = 'sessions') as sessions,
        sum(value) filter (where metric = 'engaged_sessions') as engaged_sessions,
        sum(value) filter (where metric = 'key_events') as key_events,
        sum(value) filter (where metric = 'opened') as opens,
        count(distinct day) as days_with_engagement,
        min(day) as first_engagement_day,
        max(day) as last_engagement_day
    from {{ ref('stg_content_engagement') }}
    group by variant_id

),

allocations as (

    -- A variant's allocations all name its piece's experiment (or none): min() takes that one on either engine.
    select variant_id, min(experiment_id) as experiment_id, avg(share) as mean_share, count(*) as days_allocated
    from {{ source('raw', 'content_allocations') }}
    group by variant_id

),

experiments as (

    select experiment_id, state as experiment_state, control, winner
    from {{ source('raw', 'experiments') }}
    where kind = 'content_variants'

),

latest_look as (

    select experiment_id, arm as variant_id, posterior_mean, p_better
    from {{ latest_experiment_looks() }} as looks

)

select
    p.content_id,
    p.variant_id,
    p.piece_id,
    p.day,
    p.channel,
    p.segment,
    p.topic,
    p.text,
    p.hook,
    p.text_chars,
    p.text_words,
    p.claim_ids,
    p.model,
    p.prompt_version,
    p.gate_verdict,
    p.audit_verdict,
    p.review_state,
    p.edits > 0 as edited,
    -- Impressions: LinkedIn's for posts and headlines, deliveries for e-mail subject lines.
    coalesce(e.linkedin_impressions, e.deliveries, 0) as impressions,
    coalesce(e.clicks, 0) as clicks,
    coalesce(e.clicks, 0) / nullif(coalesce(e.linkedin_impressions, e.deliveries, 0), 0) as ctr,
    coalesce(e.reactions, 0) as reactions,
    coalesce(e.comments, 0) as comments,
    coalesce(e.reposts, 0) as reposts,
    coalesce(e.sessions, 0) as sessions,
    coalesce(e.engaged_sessions, 0) as engaged_sessions,
    coalesce(e.key_events, 0) as key_events,
    coalesce(e.opens, 0) as opens,
    coalesce(e.opens, 0) / nullif(e.deliveries, 0) as open_rate,
    coalesce(e.days_with_engagement, 0) as days_published,
    e.first_engagement_day,
    e.last_engagement_day,
    a.experiment_id,
    x.experiment_state,
    case when x.control is null then null when p.variant_id = x.control then 'control' else 'challenger' end as arm_role,
    -- The variant its piece keeps once the experiment concluded: the promoted winner, else the first (control).
    x.experiment_state in ('promoted', 'retired', 'rolled_back') and p.variant_id = coalesce(x.winner, x.control) as kept,
    a.mean_share,
    coalesce(a.days_allocated, 0) as days_allocated,
    l.posterior_mean,
    l.p_better
from {{ ref('stg_content_pieces') }} as p
left join engagement as e using (variant_id)
left join allocations as a using (variant_id)
left join experiments as x on x.experiment_id = a.experiment_id
left join latest_look as l on l.experiment_id = a.experiment_id and l.variant_id = p.variant_id
where p.approved
