-- Model usage and spend per campaign, day, stage and model: the input to routing
-- (cheapest model that holds the stage's KPIs) and to the daily budget guard.

select
    campaign_id,
    partition_day as day,
    stage,
    model,
    count(*) as calls,
    cast(sum(tokens_in) as bigint) as tokens_in,
    cast(sum(tokens_out) as bigint) as tokens_out,
    sum(cost_usd) as cost_usd,
    count(*) filter (where cache_hit) as cache_hits,
    count(*) filter (where status != 'ok') as failures
from {{ ref('stg_llm_calls') }}
group by campaign_id, partition_day, stage, model
