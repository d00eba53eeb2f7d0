{#- SQL that DuckDB and PostgreSQL spell differently and dbt's own cross-database macros (dbt.datediff, ...) do not
    cover: one macro per construct, dispatched on the adapter. `duckdb__` is the DuckDB SQL the project always had;
    `postgres__` says the same in PostgreSQL. The raw contracts' nested columns differ in kind: a MAP, or a list of
    STRUCTs, on DuckDB is JSONB on PostgreSQL (factory_dagster/warehouse/postgres.py). -#}


{#- `value` at the row where `ordering` is largest (arg_max) or smallest (arg_min), over the rows where `where`
    holds; rows where `value` or `ordering` is null are left out, as DuckDB's arg_max and arg_min leave them. -#}
{% macro arg_max(value, ordering, where=none) -%}
    {{ adapter.dispatch('arg_extreme', 'factory')(value, ordering, 'max', where) }}
{%- endmacro %}

{% macro arg_min(value, ordering, where=none) -%}
    {{ adapter.dispatch('arg_extreme', 'factory')(value, ordering, 'min', where) }}
{%- endmacro %}

{% macro duckdb__arg_extreme(value, ordering, extreme, where) -%}
    arg_{{ extreme }}({{ value }}, {{ ordering }}){% if where %} filter (where {{ where }}){% endif %}
{%- endmacro %}

{% macro postgres__arg_extreme(value, ordering, extreme, where) -%}
    (array_agg({{ value }} order by {{ ordering }} {{ 'desc' if extreme == 'max' else 'asc' }}) filter (
        where {{ value }} is not null and {{ ordering }} is not null{% if where %} and ({{ where }}){% endif %}
    ))[1]
{%- endmacro %}


{#- A FROM item with one row per entry of the map `column`: `alias.key` and `alias.value` (text on PostgreSQL,
    where the map is a JSONB object: cast it to the type it has on DuckDB). -#}
{% macro map_entries(column, alias) -%}
    {{ adapter.dispatch('map_entries', 'factory')(column, alias) }}
{%- endmacro %}

{% macro duckdb__map_entries(column, alias) -%}
    unnest(map_entries({{ column }})) as {{ alias }}_entries({{ alias }})
{%- endmacro %}

{% macro postgres__map_entries(column, alias) -%}
    jsonb_each_text({{ column }}) as {{ alias }}(key, value)
{%- endmacro %}


{#- A FROM item with one row per element of `column`, a list of records whose `fields` are all text:
    `alias.<field>` on both (a STRUCT's field on DuckDB, a JSONB object's key on PostgreSQL). -#}
{% macro unnest_records(column, alias, fields) -%}
    {{ adapter.dispatch('unnest_records', 'factory')(column, alias, fields) }}
{%- endmacro %}

{% macro duckdb__unnest_records(column, alias, fields) -%}
    unnest({{ column }}) as {{ alias }}_records({{ alias }})
{%- endmacro %}

{% macro postgres__unnest_records(column, alias, fields) -%}
    jsonb_to_recordset({{ column }}) as {{ alias }}({% for field in fields %}{{ field }} text{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}


{#- How many parts `separator` cuts `text` into: an empty text is one (empty) part on both. -#}
{% macro split_count(text, separator) -%}
    {{ adapter.dispatch('split_count', 'factory')(text, separator) }}
{%- endmacro %}

{% macro duckdb__split_count(text, separator) -%}
    len(string_split({{ text }}, {{ separator }}))
{%- endmacro %}

{% macro postgres__split_count(text, separator) -%}
    (case when {{ text }} = '' then 1 else cardinality(string_to_array({{ text }}, {{ separator }})) end)
{%- endmacro %}


{#- Text ordered byte by byte, as DuckDB orders it, whatever collation the PostgreSQL database has: a ranking that
    breaks ties on text must pick the same rows on both. -#}
{% macro binary_order(expression) -%}
    {{ adapter.dispatch('binary_order', 'factory')(expression) }}
{%- endmacro %}

{% macro duckdb__binary_order(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro postgres__binary_order(expression) -%}
    ({{ expression }}) collate "C"
{%- endmacro %}


{#- Up to three distinct values of `expression` (as text) over the rows where `predicate` holds, sorted:
    the examples a failing row_contract test shows. -#}
{% macro row_contract_examples(expression, predicate) -%}
    {{ adapter.dispatch('row_contract_examples', 'factory')(expression, predicate) }}
{%- endmacro %}

{% macro duckdb__row_contract_examples(expression, predicate) -%}
array_to_string(list_slice(list_sort(list_distinct(list({{ expression }}) filter (where {{ predicate }}))), 1, 3), ', ')
{%- endmacro %}

{% macro postgres__row_contract_examples(expression, predicate) -%}
array_to_string((array_agg(distinct {{ binary_order(expression) }} order by {{ binary_order(expression) }}) filter (
    where ({{ predicate }}) and ({{ expression }}) is not null
))[1:3], ', ')
{%- endmacro %}
