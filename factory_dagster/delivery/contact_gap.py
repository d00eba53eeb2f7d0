"""The contact gap: nobody is e-mailed by two campaigns within a configurable number of days.

Why: a person may be a lead in several campaigns (the same address imported by two teams), and two
cold e-mails from one company in a week read as spam whatever each says. So the send stage of every
campaign leaves out, for now, a recipient that another campaign e-mailed within the last
`FACTORY_CONTACT_GAP_DAYS` days (default 14; 0 turns the gap off). The message is not dropped: it
stays pending and goes the first day the gap has passed. A campaign's own sequence is not limited
by it. Addresses compare case-blind and trimmed. What counts as e-mailed: a send row, or an outbox
row queued, claimed or uncertain (it may have gone), of another campaign, on a day within the gap.
"""

from __future__ import annotations

from collections.abc import Mapping

from factory_dagster.delivery.config import ConfigError

CONTACT_GAP_ENV = "FACTORY_CONTACT_GAP_DAYS"
DEFAULT_GAP_DAYS = 14
MAX_GAP_DAYS = 365
CONTACT_GAP_LOCK = "contact-gap"  # the send stages plan and queue in turn (store.exclusive): see delivery/stage.py


def contact_gap_days(environ: Mapping[str, str]) -> int:
    """The gap in days (`FACTORY_CONTACT_GAP_DAYS`); ConfigError naming the variable on a value that is not 0..365."""
    raw = environ.get(CONTACT_GAP_ENV, "").strip()
    if not raw:
        return DEFAULT_GAP_DAYS
    if not raw.isdigit() or int(raw) > MAX_GAP_DAYS:
        raise ConfigError(f"{CONTACT_GAP_ENV} must be a whole number of days from 0 (off) to {MAX_GAP_DAYS}, got {raw!r}")
    return int(raw)


def contacted_elsewhere_sql(email_column: str) -> str:
    """A SQL condition: the address in `email_column` was e-mailed by another campaign than `$campaign` on a day
    in ($day - $gap, $day]. Parameters `$campaign`, `$day` (DATE) and `$gap` (days; 0: never true)."""
    return f"""($gap > 0 AND lower(trim({email_column})) IN (
        SELECT lower(trim(to_email)) FROM raw.sends
        WHERE campaign_id <> $campaign AND partition_day > $day::DATE - $gap::INTEGER AND partition_day <= $day
        UNION ALL
        SELECT lower(trim(to_email)) FROM raw.outbox
        WHERE campaign_id <> $campaign AND state IN ('queued', 'claimed', 'uncertain')
          AND partition_day > $day::DATE - $gap::INTEGER AND partition_day <= $day))"""
