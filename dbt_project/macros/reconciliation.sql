{#
  The rows a reconciliation test compares. A campaign's daily run passes `reconcile_campaign` on the
  PostgreSQL warehouse, where other campaigns' runs write raw rows while its build runs: its own rows
  are settled (its observe stage is done, its later stages wait for the build, and one campaign's days
  run one at a time), the others' are not. Without the var, as on the DuckDB file's one writer, every
  campaign is compared. The tests that use it are tagged `reconciliation`: a run that reuses another
  run's build (learning/build_log.py) runs only them, for its own campaign.
#}
{% macro reconciled_rows() -%}
    {%- set campaign = var('reconcile_campaign', none) -%}
    {%- if campaign -%}
        where campaign_id = '{{ campaign | replace("'", "''") }}'
    {%- endif -%}
{%- endmacro %}
