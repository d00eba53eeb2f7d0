{#- Fails with one row per listed column that holds a value outside [0, 1], and how many
    (nulls pass: a rate over no rows is null). One scan for all the model's rates. -#}
{% test proportion_columns(model, columns) %}
{{ rows_breaking_per_column(model, columns, "{column} < 0 or {column} > 1") }}
{% endtest %}
