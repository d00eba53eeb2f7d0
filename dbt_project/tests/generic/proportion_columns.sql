{#- Fails with one row per listed column that holds a value outside [0, 1], and how many
    (nulls pass: a rate over no rows is null). One scan for all the model's rates. -#}
{% test proportion_columns(model, columns) %}
with out_of_range as (
    select
    {%- for column in columns %}
        count(*) filter (where {{ column }} < 0 or {{ column }} > 1) as {{ column }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ model }}
)
{% for column in columns -%}
select '{{ column }}' as column_name, {{ column }} as bad_rows from out_of_range where {{ column }} > 0
{{ "union all" if not loop.last }}
{% endfor %}
{% endtest %}
