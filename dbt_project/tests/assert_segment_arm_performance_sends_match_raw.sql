-- Every raw send falls in exactly one segment x arm row (of the campaigns reconciled_rows() compares).
{{ config(tags=['reconciliation'], meta={'dagster': {'ref': {'name': 'segment_arm_performance'}}}) }}

with mart as (
    select coalesce(sum(sends), 0) as sends from {{ ref('segment_arm_performance') }} {{ reconciled_rows() }}
),

raw_sends as (
    select count(*) as sends from {{ source('raw', 'sends') }} {{ reconciled_rows() }}
)

select mart.sends as mart_sends, raw_sends.sends as raw_sends
from mart cross join raw_sends
where mart.sends != raw_sends.sends
