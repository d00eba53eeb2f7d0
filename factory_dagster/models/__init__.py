"""The model layer: registry, providers (offline for now) and the call ledger."""
