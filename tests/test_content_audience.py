"""The simulated audience: a hidden, seeded engagement model whose exports round-trip through the importers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from factory_dagster.content.audience import SimulatedAudience
from factory_dagster.content.engagement import (
    Variants,
    email_subject_engagement,
    import_email_events,
    import_ga4,
    import_linkedin,
)
from factory_dagster.content.publish import publish_day, read_published

DAY = date(2024, 3, 4)
HOOKS = (
    "5 mistakes that slow your month-end close",
    "Is your month-end close too slow?",
    "Close the books in five days",
    "The worst part of closing the books, fixed",
    "How finance teams close faster with fewer errors",
    "Why your reconciliations keep failing",
)


def published(tmp_path: Path) -> pd.DataFrame:
    rows = [
        {
            "piece_id": f"p{i // 2}",
            "variant_id": f"p{i // 2}-{i % 2}",
            "channel": "linkedin_post",
            "segment": segment,
            "text": f"{hook}\nBody.",
        }
        for i, (hook, segment) in enumerate(zip(HOOKS, ["general", "general", "scaleup_finance_leaders"] * 2, strict=True))
    ]
    rows += [
        {
            "piece_id": "h1",
            "variant_id": "h1-0",
            "channel": "headline",
            "segment": "operations_heavy",
            "text": "You can close in five days",
        },
        {
            "piece_id": "e1",
            "variant_id": "e1-0",
            "channel": "email_subject",
            "segment": "enterprise_finance",
            "text": "Is your close slow?",
        },
        {
            "piece_id": "e1",
            "variant_id": "e1-1",
            "channel": "email_subject",
            "segment": "enterprise_finance",
            "text": "Close in 5 days",
        },
    ]
    return read_published(publish_day(pd.DataFrame(rows), DAY, tmp_path / "published").folder)


def test_exports_round_trip_through_the_importers_with_junk_quarantined(tmp_path: Path) -> None:
    pieces = published(tmp_path)
    variants = Variants.from_pieces(pieces)
    day = SimulatedAudience(seed=3, junk_rate=0.5).answer_day(pieces, DAY, tmp_path / "inbox")
    linkedin, ga4 = import_linkedin(day.linkedin_path, variants), import_ga4(day.ga4_path, variants)
    social = day.truth[day.truth["channel"] != "email_subject"].set_index(["variant_id", "metric"])["value"]
    for result in (linkedin, ga4):
        assert result.accounted_rows() == result.rows  # nothing lost
        got = result.accepted.set_index(["variant_id", "metric"])["value"]
        assert all(got[key] == social[key] for key in got.index)  # every accepted count is the true one
        assert set(result.accepted["variant_id"]) == {v for v in pieces["variant_id"] if not v.startswith("e")}
    junk = linkedin.rows - 7
    assert junk > 0 and len(linkedin.quarantined) == junk and len(ga4.quarantined) == junk + 1  # + the organic traffic row
    assert set(linkedin.quarantined["reason_code"]) <= {"bad_number", "inconsistent", "unknown_post"}
    assert set(ga4.quarantined["reason_code"]) <= {"bad_number", "inconsistent", "unknown_variant", "no_utm_content"}
    events = SimulatedAudience(seed=3, junk_rate=0.0).email_events(pieces, DAY)
    email = email_subject_engagement(events, variants)
    truth = day.truth[day.truth["channel"] == "email_subject"].set_index(["variant_id", "metric"])["value"]
    assert (
        email.quarantined.empty and email.accepted.groupby(["variant_id", "metric"])["value"].sum().to_dict() == truth.to_dict()
    )
    # The ESP's export in the inbox: its junk (an open reported twice) is quarantined, the counts stay true.
    exported = import_email_events(day.email_path, variants)
    assert exported.accounted_rows() == exported.rows and set(exported.quarantined["reason_code"]) == {"repeat_event"}
    assert exported.accepted.groupby(["variant_id", "metric"])["value"].sum().to_dict() == truth.to_dict()


def test_same_seed_same_bytes_other_seed_other_answers(tmp_path: Path) -> None:
    pieces = published(tmp_path)
    first = SimulatedAudience(seed=7).answer_day(pieces, DAY, tmp_path / "a")
    again = SimulatedAudience(seed=7).answer_day(pieces.sample(frac=1, random_state=1), DAY, tmp_path / "b")
    other = SimulatedAudience(seed=8).answer_day(pieces, DAY, tmp_path / "c")
    assert first.linkedin_path.read_bytes() == again.linkedin_path.read_bytes()
    assert first.ga4_path.read_bytes() == again.ga4_path.read_bytes()
    assert first.linkedin_path.read_bytes() != other.linkedin_path.read_bytes()
    next_day = SimulatedAudience(seed=7).respond(pieces, DAY + timedelta(days=1))
    assert not next_day["value"].equals(first.truth["value"])  # a new day draws anew


def test_headline_effects_differ_by_segment_and_show_in_the_clicks() -> None:
    audience = SimulatedAudience(seed=5, text_noise_sd=0.0)  # the features' effects alone
    plain, question = "Close the books in five days", "Can you close the books in five days?"
    assert audience.expected_click_rate(question, "scaleup_finance_leaders", "headline") < audience.expected_click_rate(
        plain, "scaleup_finance_leaders", "headline"
    )
    finance = audience.expected_click_rate(question, "scaleup_finance_leaders", "headline") / audience.expected_click_rate(
        plain, "scaleup_finance_leaders", "headline"
    )
    enterprise = audience.expected_click_rate(question, "enterprise_finance", "headline") / audience.expected_click_rate(
        plain, "enterprise_finance", "headline"
    )
    assert enterprise > finance  # the same question mark lands differently by segment
    # A LinkedIn post is judged by its hook: a different body does not move the rate.
    assert audience.expected_click_rate(f"{plain}\nOne body.", "general", "linkedin_post") == audience.expected_click_rate(
        f"{plain}\nAnother body entirely.", "general", "linkedin_post"
    )
    audience = SimulatedAudience(seed=5)  # with each text's hidden factor: the draws still follow the oracle
    pieces = pd.DataFrame(
        {"variant_id": ["a", "b"], "channel": "headline", "segment": "scaleup_finance_leaders", "text": [plain, question]}
    )
    days = pd.concat([audience.respond(pieces, DAY + timedelta(days=d)) for d in range(40)])
    totals = days.pivot_table(index="variant_id", columns="metric", values="value", aggfunc="sum")
    observed = totals["clicks"] / totals["impressions"]
    for variant, text in (("a", plain), ("b", question)):
        expected = audience.expected_click_rate(text, "scaleup_finance_leaders", "headline")
        assert abs(observed[variant] - expected) < 0.2 * expected
