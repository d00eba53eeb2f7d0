{#- One scan of `model` for a rule on many columns: one row per column that breaks it, with
    how many rows do. `rule` is a SQL predicate in which `{column}` stands for each column.
    The column-level generic tests (not_null_columns, proportion_columns) are built on it. -#}
{% macro rows_breaking_per_column(model, columns, rule) %}
with broken as (
    select
    {%- for column in columns %}
        count(*) filter (where {{ rule | replace("{column}", column) }}) as {{ column }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}
)
{% for column in columns -%}
select '{{ column }}' as column_name, {{ column }} as bad_rows from broken where {{ column }} > 0
{{ "union all" if not loop.last }}
{% endfor %}
{% endmacro %}
