"""Operator controls: the kill switch and the incident log."""
