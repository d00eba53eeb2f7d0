{#- Whether `relation` is a model of this project built as a view (a source or a table: false). The graph is only
    filled when dbt executes; at parse time the answer does not matter. -#}
{% macro is_view_model(relation) -%}
    {%- set found = namespace(view=false) -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == "model" and node.schema == relation.schema and node.alias == relation.identifier -%}
                {%- set found.view = node.config.materialized == "view" -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found.view) }}
{%- endmacro %}
