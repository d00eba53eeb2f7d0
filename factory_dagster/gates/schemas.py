"""Pandera schema of an accepted message, built from the campaign spec.

It re-states the rules on the stored rows, so the blocking check after the gate
catches anything that reached `raw.messages` by any path.
"""

from __future__ import annotations

import re

import pandas as pd
import pandera.pandas as pa

from factory_dagster.campaign.spec import CampaignSpec

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _contains(text: str) -> pa.Check:
    needle = " ".join(text.casefold().split())
    return pa.Check(
        lambda s: s.map(lambda body: needle in " ".join(str(body).casefold().split())),
        element_wise=False,
        name=f"contains {text[:40]!r}",
    )


def message_schema(spec: CampaignSpec) -> pa.DataFrameSchema:
    limits = spec.limits
    words = pa.Check(
        lambda s: s.str.split().str.len().between(limits.min_words, limits.max_words),
        name=f"between {limits.min_words} and {limits.max_words} words",
    )
    no_banned = pa.Check(
        lambda s: (
            ~s.str.casefold().str.contains("|".join(re.escape(p.casefold()) for p in spec.banned_phrases) or "(?!)", regex=True)
        ),
        name="no banned phrase",
    )
    return pa.DataFrameSchema(
        {
            "message_id": pa.Column(str, unique=True),
            "send_id": pa.Column(str, unique=True),
            "lead_id": pa.Column(str, unique=True),
            "to_email": pa.Column(str, pa.Check.str_matches(_EMAIL)),
            "subject": pa.Column(str, pa.Check.str_length(1, limits.max_subject_chars)),
            "body": pa.Column(
                str,
                [
                    words,
                    no_banned,
                    _contains(spec.required.call_to_action),
                    _contains(spec.required.unsubscribe_footer),
                    _contains(spec.sender.postal_address),
                    pa.Check(lambda s: ~s.str.contains(r"\{|\}|\[[A-Z]", regex=True), name="no unfilled placeholder"),
                ],
            ),
        },
        strict=False,
        coerce=False,
    )


def message_failures(messages: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """Pandera failure cases of the stored messages (empty when all pass)."""
    if messages.empty:
        return pd.DataFrame()
    try:
        message_schema(spec).validate(messages, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return pd.DataFrame()
