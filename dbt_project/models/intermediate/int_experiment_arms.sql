-- One row per experiment that ever ran and arm (the control and each challenger), with the decision step's latest
-- look at the arm: who the arms are, for int_experiment_arm_counts (which counts their traffic and outcomes) and
-- marts.experiment_results (which shows both).
--
-- Its row contract is where experiment_results' rows can break: an arm listed twice, a missing field, a look whose
-- statistics or decision are out of range. Checked here, on the experiment tables alone, and not on
-- experiment_results, a view whose every read counts each arm's leads, drafts and sends (5.6 s at 10M events): its
-- rows are these rows, and the counts it adds are grouped per arm and never null.
-- A content piece's variant test counts impressions, not leads: marts.content_variant_performance.

with experiments as (

    -- Only experiments that ever ran have traffic; a view, so one started today shows at once.
    select experiment_id, campaign_id, kind, state, control, challengers, planned_sample_size
    from {{ source('raw', 'experiments') }}
    where state in ('running', 'promoted', 'retired', 'rolled_back') and kind != 'content_variants'

),

arms as (

    select experiment_id, campaign_id, kind, state, planned_sample_size, control as arm, 'control' as role
    from experiments
    union all
    select experiment_id, campaign_id, kind, state, planned_sample_size, unnest(challengers) as arm, 'challenger' as role
    from experiments

),

period as (

    select
        experiment_id,
        min(coalesce(partition_day, cast(occurred_at as date))) filter (where to_state = 'running') as started_day,
        min(coalesce(partition_day, cast(occurred_at as date)))
            filter (where to_state in ('promoted', 'retired', 'rolled_back')) as concluded_day
    from {{ source('raw', 'experiment_events') }}
    group by experiment_id

)

select
    arms.experiment_id,
    arms.campaign_id,
    arms.kind,
    arms.state,
    arms.arm,
    arms.role,
    arms.planned_sample_size,
    period.started_day,
    period.concluded_day,
    looks.partition_day as look_day,
    looks.look,
    looks.days_running,
    looks.mature_sends as look_mature_sends,
    looks.posterior_mean,
    looks.interval_low,
    looks.interval_high,
    looks.p_better,
    looks.expected_loss,
    looks.expected_loss_relative,
    looks.lift,
    looks.lift_low,
    looks.lift_high,
    looks.srm_p_value,
    looks.guardrail_status,
    looks.guardrails_json,
    looks.decision,
    looks.reasons,
    looks.winner,
    looks.rule_version
from arms
left join period
    on arms.experiment_id = period.experiment_id
left join {{ latest_experiment_looks() }} as looks
    on arms.experiment_id = looks.experiment_id
    and arms.arm = looks.arm
