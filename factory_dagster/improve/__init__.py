"""Improve: experiments the factory proposes, people approve, and outcomes promote, retire or roll back.

`stats` holds the pure statistics the daily decision step uses; `experiments` holds experiments
as data and their lifecycle. Neither touches the warehouse or Dagster, so both are tested directly.
"""
