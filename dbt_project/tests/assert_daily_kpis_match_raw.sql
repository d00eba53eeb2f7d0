-- daily_kpis adds up to raw: every lead row the intake read counted once (accepted or
-- quarantined), every send once, and model spend to floating-point tolerance. One row per
-- measure that disagrees, with both totals. The campaigns compared: reconciled_rows().
{{ config(tags=['reconciliation'], meta={'dagster': {'ref': {'name': 'daily_kpis'}}}) }}

with mart as (
    select
        coalesce(sum(leads_accepted) + sum(leads_quarantined), 0) as leads,
        coalesce(sum(sends), 0) as sends,
        coalesce(sum(cost_usd), 0.0) as cost_usd
    from {{ ref('daily_kpis') }}
    {{ reconciled_rows() }}
),

raw_totals as (
    select
        (select count(*) from {{ source('raw', 'leads') }} {{ reconciled_rows() }})
        + (select count(*) from {{ source('raw', 'leads_quarantine') }} {{ reconciled_rows() }}) as leads,
        (select count(*) from {{ source('raw', 'sends') }} {{ reconciled_rows() }}) as sends,
        (select coalesce(sum(cost_usd), 0.0) from {{ source('raw', 'llm_calls') }} {{ reconciled_rows() }}) as cost_usd
),

compared as (
    select 'leads' as measure, cast(mart.leads as double precision) as mart_total, cast(raw_totals.leads as double precision) as raw_total,
        mart.leads != raw_totals.leads as differs
    from mart cross join raw_totals
    union all
    select 'sends', mart.sends, raw_totals.sends, mart.sends != raw_totals.sends
    from mart cross join raw_totals
    union all
    select 'cost_usd', mart.cost_usd, raw_totals.cost_usd,
        abs(mart.cost_usd - raw_totals.cost_usd) > 1e-6 * greatest(1.0, abs(raw_totals.cost_usd))
    from mart cross join raw_totals
)

select measure, mart_total, raw_total
from compared
where differs
