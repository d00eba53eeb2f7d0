-- Model spend in daily_kpis adds up to raw.llm_calls (to floating-point tolerance).
with mart as (
    select coalesce(sum(cost_usd), 0.0) as cost_usd from {{ ref('daily_kpis') }}
),

raw_calls as (
    select coalesce(sum(cost_usd), 0.0) as cost_usd from {{ source('raw', 'llm_calls') }}
)

select mart.cost_usd as mart_cost_usd, raw_calls.cost_usd as raw_cost_usd
from mart cross join raw_calls
where abs(mart.cost_usd - raw_calls.cost_usd) > 1e-6 * greatest(1.0, abs(raw_calls.cost_usd))
