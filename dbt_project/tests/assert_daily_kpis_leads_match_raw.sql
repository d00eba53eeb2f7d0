-- Every lead row the intake read is counted once, as accepted or quarantined.
with mart as (
    select coalesce(sum(leads_accepted) + sum(leads_quarantined), 0) as leads
    from {{ ref('daily_kpis') }}
),

raw_leads as (
    select
        (select count(*) from {{ source('raw', 'leads') }})
        + (select count(*) from {{ source('raw', 'leads_quarantine') }}) as leads
)

select mart.leads as mart_leads, raw_leads.leads as raw_leads
from mart cross join raw_leads
where mart.leads != raw_leads.leads
