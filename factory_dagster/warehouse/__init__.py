"""The DuckDB warehouse: the `raw` data contracts and connection helpers."""
