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
    -- calls at 10M events). The verdict as a lookup in the drafts that passed, not a join: the join kept every draft's
    -- columns in a hash table (past an 8 GB memory limit at that size); the lookup keeps only the passing drafts' ids.
    select
        drafts.campaign_id,
        drafts.partition_day,
        drafts.lead_id,
        drafts.attempt,
        drafts.candidate_index,
        drafts.model,
        drafts.stage,
        drafts.cost_usd,
        coalesce(drafts.draft_id in (select draft_id from {{ ref('stg_gate_results') }} where passed), false) as passed
    from {{ ref('stg_drafts') }} as drafts
    where drafts.stage in ('draft', 'repair', 'escalate')

),

attempts as (

    -- One row per round (a lead's candidates of one attempt at one stage): about a third of the
    -- drafts at scale (three candidates a first round), so the jobs below join and count rounds,
    -- not drafts, and a round is counted once without a count(distinct).
    select
        campaign_id,
        partition_day,
        lead_id,
        stage,
        attempt,
        {{ arg_min('model', 'candidate_index') }} as model,
        count(*) as drafts,
        count(*) filter (where not passed) as failures,
        bool_or(passed) as passed,
        sum(cost_usd) as cost_usd
    from rounds
    group by campaign_id, partition_day, lead_id, stage, attempt

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

job_work as (

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

select * from job_work
