"""Planning: the premium model turns the spec and the marts into a per-segment plan."""
