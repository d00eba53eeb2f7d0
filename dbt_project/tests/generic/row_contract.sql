{#- A model's row rules in one test, one query: `key` columns unique together, `not_null`
    columns, `proportions` within [0, 1] and `accepted_values` ({column: [values]}); nulls pass
    the last two (a rate over no rows is null). The daily build runs one test node per model
    instead of one per rule (each node costs dbt a query and Dagster a few events), and the
    failing rows still say what broke: one row per broken rule with the rule, its column(s), how
    many rows break it and up to three examples (duplicated keys, out-of-range or unexpected
    values). The column rules and the key are two reads of the model: for a view (whose query runs
    at each read: int_send_outcomes joins every send with its events) the columns they need are
    kept in one `materialized` read; a table's columns are scanned twice, cheaper than a copy. -#}
{% test row_contract(model, key=[], not_null=[], proportions=[], accepted_values={}) %}
{%- if not (key or not_null or proportions or accepted_values) -%}
    {{ exceptions.raise_compiler_error("row_contract on " ~ model ~ " needs at least one of key, not_null, proportions, accepted_values") }}
{%- endif -%}
{#- (rule, column, predicate for a breaking row, whether to list examples) -#}
{%- set checks = [] -%}
{%- for column in not_null -%}
    {%- do checks.append(("not_null", column, column ~ " is null", false)) -%}
{%- endfor -%}
{%- for column in proportions -%}
    {%- do checks.append(("proportion", column, column ~ " < 0 or " ~ column ~ " > 1", true)) -%}
{%- endfor -%}
{%- for column, values in accepted_values.items() -%}
    {%- set listed = [] -%}
    {%- for value in values -%}
        {%- do listed.append("'" ~ (value | replace("'", "''")) ~ "'" if value is string else value | string) -%}
    {%- endfor -%}
    {%- do checks.append(("accepted_values", column, column ~ " not in (" ~ listed | join(", ") ~ ")", true)) -%}
{%- endfor -%}
{%- set read_once = checks and key and is_view_model(model) -%}
{%- set tested = "tested_rows" if read_once else model -%}
with
{%- if read_once %}
tested_rows as materialized (
    select {{ (key + not_null + proportions + (accepted_values | list)) | unique | join(", ") }}
    from {{ model }}
),
{%- endif %}
{%- if checks %}
{#- One scan of the model for all column rules; `materialized` so the union below reads it once. #}
measured as materialized (
    select
    {%- for rule, column, predicate, with_examples in checks %}
        count(*) filter (where {{ predicate }}) as bad_{{ loop.index }},
        {% if with_examples -%}
        {{ row_contract_examples("cast(" ~ column ~ " as varchar)", predicate) }}
        {%- else -%}
        cast(null as varchar)
        {%- endif %} as examples_{{ loop.index }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ tested }}
),
{%- endif %}
{%- if key %}
duplicated as (
    select {{ key | join(", ") }}, count(*) as occurrences
    from {{ tested }}
    group by {{ key | join(", ") }}
    having count(*) > 1
),
{%- endif %}
broken as (
{%- for rule, column, predicate, with_examples in checks %}
    select '{{ rule }}' as rule, '{{ column }}' as columns, bad_{{ loop.index }} as bad_rows, examples_{{ loop.index }} as examples
    from measured
    {{ "union all" if not loop.last or key }}
{%- endfor %}
{%- if key %}
    {%- set named = [] -%}
    {%- for column in key -%}
        {%- do named.append("'" ~ column ~ "=' || coalesce(cast(" ~ column ~ " as varchar), 'null')") -%}
    {%- endfor %}
    select 'duplicate_key' as rule, '{{ key | join(", ") }}' as columns, cast(sum(occurrences) as bigint) as bad_rows,
        {{ row_contract_examples("'(' || " ~ named | join(" || ', ' || ") ~ " || ')'", "true") }} as examples
    from duplicated
{%- endif %}
)

{#- The widest break first: a failure message shows the first rows. #}
select rule, columns, bad_rows, examples
from broken
where bad_rows > 0
order by bad_rows desc, rule, columns
{% endtest %}
