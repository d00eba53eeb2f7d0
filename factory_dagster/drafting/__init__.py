"""Drafting: the cheap model writes N candidate messages per lead."""
