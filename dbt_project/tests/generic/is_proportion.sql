{#- Fails on every non-null value outside [0, 1]. -#}
{% test is_proportion(model, column_name) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} < 0 or {{ column_name }} > 1
{% endtest %}
