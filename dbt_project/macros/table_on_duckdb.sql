{#-
    The `table` materialization on DuckDB: each table model is replaced in one statement,
    `create or replace table ... as`, inside the model's transaction.

    Why: dbt-duckdb's own materialization builds the model under a temporary name, renames the
    existing table to a backup, renames the new one into place and drops the backup, and first
    asks the catalog for the table's constraints (twice) and indexes. That is nine statements a
    model where one does the same work, each with its macro context, events and log lines: in a
    daily build, where the tables are small, those were about a third of each model's time.
    DuckDB replaces the table atomically (a failed query leaves the old one in place), and the
    views that read it bind to it by name, as after a rename.

    What it leaves out, because the project uses none of it: enforced contracts and constraints,
    indexes, Python models. A model that asks for one of them is refused with a clear error
    rather than built without it. PostgreSQL keeps dbt's own materialization.
-#}
{% materialization table, adapter="duckdb", supported_languages=["sql"] %}

  {%- if config.get("contract").enforced or config.get("indexes") -%}
    {{ exceptions.raise_compiler_error(
        "model " ~ model.name ~ ": enforced contracts and indexes are not supported by the project's DuckDB table "
        ~ "materialization (dbt_project/macros/table_on_duckdb.sql)"
    ) }}
  {%- endif -%}

  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type="table") -%}
  {%- set grant_config = config.get("grants") -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {#- A view of the same name (the model was a view before) cannot be replaced by a table. -#}
  {%- if existing_relation is not none and not existing_relation.is_table -%}
    {{ adapter.drop_relation(existing_relation) }}
  {%- endif -%}

  {% call statement("main") -%}
    {%- set sql_header = config.get("sql_header", none) -%}
    {{ sql_header if sql_header is not none }}
    create or replace table {{ target_relation }} as (
      {{ compiled_code }}
    )
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke(existing_relation, full_refresh_mode=True)) %}
  {% do persist_docs(target_relation, model) %}

  {{ adapter.commit() }}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({"relations": [target_relation]}) }}

{% endmaterialization %}
