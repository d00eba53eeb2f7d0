-- One row per drafting job: one lead's work at one stage (draft, repair, escalate) on one day,
-- owned by the model that wrote the stage's first candidate, with what the job still needed
-- after its first round (repairs, escalations) and what it cost. marts.model_stage_quality
-- judges models on these rows; int_experiment_arm_counts counts each experiment arm's
-- first-round candidates that failed the gate from them (routing canaries are guarded on the
-- gate, at once).
--
-- A table, unlike the other intermediate models: three readers (model_stage_quality, the arm
-- counts behind experiment_results, and its own row contract) would each recompute every
-- draft's verdict and job; built once per learn stage, it is read three times.

{{ config(materialized='table') }}

with rounds as (

    -- Every stored draft with the stage and cost of the call that wrote it and whether it passed the gate (a draft has
    -- at most one verdict: raw.gate_results' key). The stage and cost are the call's, stored on the draft when it is
    -- written (filled from raw.llm_calls on older warehouses; a draft whose call is not there has none and is left
    -- out, as an inner join with the calls would leave it): no join of every draft with its call (24M drafts and 25M
    -- calls at 10M events). The verdict from the drafts that passed only, joined by id: a hash table of their ids (a
    -- join with every verdict made the drafts its build side, every draft's columns in a hash table, past an 8 GB
    -- memory limit at that size; an `in` lookup took a third longer).
    select
        drafts.campaign_id,
        drafts.partition_day,
        drafts.lead_id,
        drafts.attempt,
        drafts.candidate_index,
        drafts.model,
        drafts.stage,
        drafts.cost_usd,
        passing.draft_id is not null as passed
    from {{ ref('stg_drafts') }} as drafts
    left join (select draft_id from {{ ref('stg_gate_results') }} where passed) as passing
        on drafts.draft_id = passing.draft_id
    where drafts.stage in ('draft', 'repair', 'escalate')

),

lead_days as (

    -- One row per lead and day, in one pass over the drafts. Nearly every lead's day is one round (its candidates of
    -- one attempt at one stage; 99.4% at 10M events): such a day is one job whose first round is all its work, taken
    -- from this row as it is. Only the other days go through the rounds-and-jobs join below, which at scale cost
    -- half of this model when every day went through it.
    select
        campaign_id,
        partition_day,
        lead_id,
        min(stage) = max(stage) and min(attempt) = max(attempt) as one_round,
        min(stage) as stage,
        {{ arg_min('model', 'candidate_index') }} as model,
        count(*) as drafts,
        count(*) filter (where not passed) as failures,
        bool_or(passed) as passed,
        sum(cost_usd) as cost_usd
    from rounds
    group by campaign_id, partition_day, lead_id

),

one_round_jobs as (

    select
        campaign_id,
        partition_day,
        lead_id,
        stage,
        model,
        passed as first_pass,
        drafts as first_round_drafts,
        failures as first_round_failures,
        cast(0 as bigint) as repairs,
        cast(0 as bigint) as escalations,
        coalesce(cost_usd, 0) as cost_usd
    from lead_days
    where one_round

),

attempts as (

    -- The days of more than one round, read again (a small share of the drafts: joined with their lead's day before
    -- their verdicts are looked up), one row per round: a lead's candidates of one attempt at one stage. Read again
    -- rather than from `rounds`: a CTE read twice is kept whole, every draft with its verdict (at 10M events the
    -- query's peak memory went from 5.5-6.6 GB to 9.7 GB, no faster). Their verdicts are joined whole, not through
    -- the passing ids, because these drafts are few: the join builds its table on them.
    select
        drafts.campaign_id,
        drafts.partition_day,
        drafts.lead_id,
        drafts.stage,
        drafts.attempt,
        {{ arg_min('drafts.model', 'drafts.candidate_index') }} as model,
        count(*) as drafts,
        count(*) filter (where not coalesce(verdicts.passed, false)) as failures,
        coalesce(bool_or(verdicts.passed), false) as passed,
        sum(drafts.cost_usd) as cost_usd
    from {{ ref('stg_drafts') }} as drafts
    inner join lead_days
        on drafts.campaign_id = lead_days.campaign_id
        and drafts.partition_day = lead_days.partition_day
        and drafts.lead_id = lead_days.lead_id
        and not lead_days.one_round
    left join {{ ref('stg_gate_results') }} as verdicts
        on drafts.draft_id = verdicts.draft_id
    where drafts.stage in ('draft', 'repair', 'escalate')
    group by drafts.campaign_id, drafts.partition_day, drafts.lead_id, drafts.stage, drafts.attempt

),

jobs as (

    select
        campaign_id,
        partition_day,
        lead_id,
        stage,
        min(attempt) as first_attempt,
        {{ arg_min('model', 'attempt') }} as model
    from attempts
    group by campaign_id, partition_day, lead_id, stage

),

multi_round_jobs as (

    select
        jobs.campaign_id,
        jobs.partition_day,
        jobs.lead_id,
        jobs.stage,
        jobs.model,
        coalesce(bool_or(attempts.passed) filter (where attempts.attempt = jobs.first_attempt), false) as first_pass,
        cast(coalesce(sum(attempts.drafts) filter (where attempts.attempt = jobs.first_attempt), 0) as bigint)
            as first_round_drafts,
        cast(coalesce(sum(attempts.failures) filter (where attempts.attempt = jobs.first_attempt), 0) as bigint)
            as first_round_failures,
        count(*) filter (where attempts.stage = 'repair' and attempts.attempt > jobs.first_attempt) as repairs,
        count(*) filter (where attempts.stage = 'escalate' and attempts.attempt > jobs.first_attempt) as escalations,
        coalesce(sum(attempts.cost_usd) filter (where attempts.attempt >= jobs.first_attempt), 0) as cost_usd
    from jobs
    inner join attempts
        on jobs.campaign_id = attempts.campaign_id
        and jobs.partition_day = attempts.partition_day
        and jobs.lead_id = attempts.lead_id
    group by jobs.campaign_id, jobs.partition_day, jobs.lead_id, jobs.stage, jobs.model

)

select * from one_round_jobs
union all
select * from multi_round_jobs
