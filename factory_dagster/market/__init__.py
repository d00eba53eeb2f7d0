"""A stand-in for real recipients, so the line's feedback loop runs with no mailbox at all."""

from factory_dagster.market.simulated import SimulatedMarket, find_defects

__all__ = ["SimulatedMarket", "find_defects"]
