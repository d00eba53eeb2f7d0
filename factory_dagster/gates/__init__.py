"""Quality gates: rule checks, candidate agreement, repair/escalation and Pandera schemas."""
