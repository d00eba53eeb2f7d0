"""The campaign spec: what a campaign may say, to whom, and within which limits."""
