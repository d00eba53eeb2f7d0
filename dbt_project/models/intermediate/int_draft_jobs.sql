-- One row per drafting job: one lead's work at one stage (draft, repair, escalate) on one day,
-- owned by the model that wrote the stage's first candidate, with what the job still needed
-- after its first round (repairs, escalations) and what it cost. marts.model_stage_quality
-- judges models on these rows; int_experiment_arm_counts counts each experiment arm's
-- first-round candidates that failed the gate from them (routing canaries are guarded on the
-- gate, at once).
--
-- A table, unlike the other intermediate models: three readers (model_stage_quality, the arm
-- counts behind experiment_results, and its own row contract) would each recompute the join of
-- every draft with its call and verdict; built once per learn stage, it is read three times.

{{ config(materialized='table') }}

with rounds as (

    -- Every stored draft with the stage and cost of the call that wrote it and its gate verdict.
    select
        drafts.campaign_id,
        drafts.partition_day,
        drafts.lead_id,
        drafts.attempt,
        drafts.candidate_index,
        drafts.model,
        calls.stage,
        calls.cost_usd,
        coalesce(gate_results.passed, false) as passed
    from {{ ref('stg_drafts') }} as drafts
    inner join {{ ref('stg_llm_calls') }} as calls
        on drafts.llm_call_id = calls.call_id
    left join {{ ref('stg_gate_results') }} as gate_results
        on drafts.draft_id = gate_results.draft_id
    where calls.stage in ('draft', 'repair', 'escalate')

),

jobs as (

    select
        campaign_id,
        partition_day,
        lead_id,
        stage,
        min(attempt) as first_attempt,
        {{ arg_min('model', 'attempt * 1000 + candidate_index') }} as model
    from rounds
    group by campaign_id, partition_day, lead_id, stage

),

job_work as (

    select
        jobs.campaign_id,
        jobs.partition_day,
        jobs.lead_id,
        jobs.stage,
        jobs.model,
        coalesce(bool_or(rounds.passed) filter (where rounds.attempt = jobs.first_attempt), false) as first_pass,
        count(*) filter (where rounds.attempt = jobs.first_attempt) as first_round_drafts,
        count(*) filter (where rounds.attempt = jobs.first_attempt and not rounds.passed) as first_round_failures,
        count(distinct rounds.attempt) filter (
            where rounds.stage = 'repair' and rounds.attempt > jobs.first_attempt
        ) as repairs,
        count(distinct rounds.attempt) filter (
            where rounds.stage = 'escalate' and rounds.attempt > jobs.first_attempt
        ) as escalations,
        coalesce(sum(rounds.cost_usd) filter (where rounds.attempt >= jobs.first_attempt), 0) as cost_usd
    from jobs
    inner join rounds
        on jobs.campaign_id = rounds.campaign_id
        and jobs.partition_day = rounds.partition_day
        and jobs.lead_id = rounds.lead_id
    group by jobs.campaign_id, jobs.partition_day, jobs.lead_id, jobs.stage, jobs.model

)

select * from job_work
