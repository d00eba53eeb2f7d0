{#- Each experiment's latest look (raw.experiment_looks: one row per arm and look day), as a subquery: the outreach
    read-out (int_experiment_arms) and the content one (content_variant_performance) show the same look. -#}
{% macro latest_experiment_looks() -%}
(
    select *
    from (
        select *, max(partition_day) over (partition by experiment_id) as latest_look_day
        from {{ source('raw', 'experiment_looks') }}
    ) as looks
    where partition_day = latest_look_day
)
{%- endmacro %}
