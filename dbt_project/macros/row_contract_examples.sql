{#- Up to three distinct values of `expression` (as text) over the rows where `predicate` holds:
    the examples a failing row_contract test shows. -#}
{% macro row_contract_examples(expression, predicate) -%}
array_to_string(list_slice(list_sort(list_distinct(list({{ expression }}) filter (where {{ predicate }}))), 1, 3), ', ')
{%- endmacro %}
