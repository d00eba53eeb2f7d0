{#- Fails with one row per listed column that holds nulls, and how many.
    One scan of the model for all its columns: the daily build runs one query per model
    instead of one per column. -#}
{% test not_null_columns(model, columns) %}
with null_counts as (
    select
    {%- for column in columns %}
        count(*) filter (where {{ column }} is null) as {{ column }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}
)
{% for column in columns -%}
select '{{ column }}' as column_name, {{ column }} as null_rows from null_counts where {{ column }} > 0
{{ "union all" if not loop.last }}
{% endfor %}
{% endtest %}
