-- The sampled premium audit per day, judge model and rubric criterion: how many messages
-- were judged, their mean score, and the share that failed the audit.

select
    campaign_id,
    partition_day as day,
    model,
    criterion,
    count(distinct audit_id) as audited,
    cast(avg(score) as double precision) as mean_score,
    min(score) as min_score,
    cast(count(distinct audit_id) filter (where not passed) as double precision) / count(distinct audit_id) as failed_share
from {{ ref('stg_audits') }}
group by campaign_id, partition_day, model, criterion
