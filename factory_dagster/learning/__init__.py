"""Learning: dbt turns the logs into marts; the line reads them back to decide."""
