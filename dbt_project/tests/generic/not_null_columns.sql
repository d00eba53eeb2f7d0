{#- Fails with one row per listed column that holds nulls, and how many.
    One scan of the model for all its columns: the daily build runs one query per model
    instead of one per column. -#}
{% test not_null_columns(model, columns) %}
{{ rows_breaking_per_column(model, columns, "{column} is null") }}
{% endtest %}
