"""What "suppressed" means, as SQL every stage shares: the address itself or its whole domain is on
`raw.suppression` (one list for every campaign). A module of its own, free of heavy imports, so
the send loop that runs in a light process can use it (delivery/sender.py)."""

from __future__ import annotations


def suppressed_sql(email_column: str, as_of: str | None = None) -> str:
    """SQL that is true when the address in `email_column` is suppressed: itself, or its whole domain
    (`@domain`); with `as_of` (an SQL timestamp expression), only by entries added by then."""
    entries = "SELECT lower(email) FROM raw.suppression" + (f" WHERE added_at <= {as_of}" if as_of else "")
    return f"(lower({email_column}) IN ({entries}) OR '@' || split_part(lower({email_column}), '@', 2) IN ({entries}))"
