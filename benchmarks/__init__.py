"""Benchmarks: speed and memory figures, written to benchmarks/results.json."""
