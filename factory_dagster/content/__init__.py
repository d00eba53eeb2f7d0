"""The content line: headline and hook features, the cross-piece prior and the experiment engine (issue 12)."""
