-- One row per send with the arm it belongs to and what has happened to it so far (macros/send_outcomes.sql).
--
-- A table, unlike most intermediate models: six marts (arm_results, segment_arm_performance, model_stage_quality,
-- loop_lift, anomalies, daily_kpis) and its row contract read it, and as a view each of them joined every send with
-- its events again. Built once per learn stage, it holds what the build saw, like the marts beside it: the stages
-- after the build (plan, assign, improve) read it in the same run. int_experiment_arm_counts, which the decision step
-- reads and which must see the sends and events that arrived since the last build, renders the same macro in its own
-- (live) view instead of reading this table.

{{ config(materialized='table') }}

{{ send_outcomes() }}
