"""What the improve stage's proposals are made from: the marts read once a day, and the figures of a design.

Why a module of its own: prompt challengers (`proposals`), hooks (`hooks`) and segment splits
(`splits`) are proposed from the same evidence and designed with the same base rates and guardrails,
so each proposer reads them here rather than from one another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.experiments import Experiment, propose
from factory_dagster.improve.metrics import GUARDRAIL_RULES, METRIC_COUNTS, PRIMARY_METRIC, relative_guardrails
from factory_dagster.improve.stats import Guardrail
from factory_dagster.improve.store import count_open_proposals, list_experiments
from factory_dagster.improve.versions import current_version
from factory_dagster.learning.marts import LEAD_ATTRIBUTES, table_exists
from factory_dagster.warehouse.store import reads_dbt_relations

MDE = 0.3  # relative: a challenger is worth a test if it may earn 30% more positive replies
PRIOR_SENDS = 200  # the prior a segment's rates are shrunk towards is worth this many sends
MIN_BASE_RATE = 0.005  # below this the planned sample would be out of reach whatever the data say
GATE_LOOKBACK_DAYS = 14

# ---------------------------------------------------------------- reading the marts


@dataclass(frozen=True)
class Evidence:
    """What the day's proposals are made from, read in one go."""

    day: date
    champions: Mapping[str, str]  # segment -> champion prompt version (the loop state)
    routing: Mapping[str, str]  # stage -> model the loop moved it to (the loop state)
    experiments: tuple[Experiment, ...]  # every experiment of the campaign
    sends: pd.DataFrame  # mature sends before the day (see `mature_sends`)
    gate_stats: pd.DataFrame  # first-draft gate results per prompt version and violation code
    quality: pd.DataFrame | None  # marts.model_stage_quality, None before it exists
    open_count: int = 0  # experiments in flight (store.count_open_proposals)
    daily_leads: Mapping[str, float] = field(default_factory=dict)  # segment -> loop leads a day lately
    hooks: Mapping[str, str] = field(default_factory=dict)  # "segment|angle" -> champion hook version (loop state)
    plan_hooks: Mapping[str, str] = field(default_factory=dict)  # "segment|angle" -> the latest plan's hook
    splits: Mapping[str, str] = field(default_factory=dict)  # segment -> its promoted split rule (loop state)

    @property
    def proposed_today(self) -> list[Experiment]:
        return [e for e in self.experiments if e.proposed_at.date() == self.day]


_SEND_COLUMNS = [
    "segment",
    "angle",
    "prompt_version",
    "hook_version",
    "positive",
    "replied",
    "unsubscribed",
    "complained",
    "body",
    *LEAD_ATTRIBUTES,
]


@reads_dbt_relations
def mature_sends(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date, window_days: int) -> pd.DataFrame:
    """One row per send made before `day` whose outcome window has closed, with the message it carried.

    Mature as the experiment counts define it (`days_since_send` >= the window), so a young send
    cannot look like a non-reply; empty before dbt has built `int_send_outcomes`.
    """
    if not table_exists(con, "intermediate", "int_send_outcomes"):
        return pd.DataFrame(columns=_SEND_COLUMNS)
    return con.execute(
        """SELECT o.segment, o.angle, coalesce(o.arm_prompt_version, o.prompt_version) AS prompt_version,
                  a.hook_version, o.positive_reply AS positive, o.replied, o.unsubscribed, o.complained, m.body,
                  l.industry, l.company_size, l.seniority, l.region
           FROM intermediate.int_send_outcomes o
           LEFT JOIN raw.messages m ON m.message_id = o.message_id
           LEFT JOIN raw.assignments a ON a.campaign_id = o.campaign_id AND a.lead_id = o.lead_id
           LEFT JOIN raw.leads l ON l.campaign_id = o.campaign_id AND l.lead_id = o.lead_id
           WHERE o.campaign_id = $campaign AND o.partition_day < $day AND o.days_since_send >= $window
           ORDER BY o.send_id""",
        {"campaign": campaign_id, "day": day, "window": window_days},
    ).df()


@reads_dbt_relations
def gate_stats(
    con: duckdb.DuckDBPyConnection, campaign_id: str, day: date, lookback_days: int = GATE_LOOKBACK_DAYS
) -> pd.DataFrame:
    """First drafts and those flagged, per prompt version and violation code, over the days before `day`.

    Rows (prompt_version, violation_code, drafts_flagged, drafts); a row with a null code carries the
    version's draft and pass counts (`drafts_flagged` then holds the drafts that passed).
    """
    columns = ["prompt_version", "violation_code", "drafts_flagged", "drafts"]
    if not (table_exists(con, "marts", "gate_metrics") and table_exists(con, "marts", "gate_violations")):
        return pd.DataFrame(columns=columns)
    return con.execute(
        """WITH window_metrics AS (
               SELECT prompt_version, sum(drafts) AS drafts, sum(passed) AS passed
               FROM marts.gate_metrics
               WHERE campaign_id = $campaign AND attempt = 0 AND day < $day AND day >= $since
               GROUP BY prompt_version)
           SELECT w.prompt_version, NULL AS violation_code, w.passed AS drafts_flagged, w.drafts FROM window_metrics w
           UNION ALL
           SELECT v.prompt_version, v.violation_code, sum(v.drafts_flagged), min(w.drafts)  -- one value per prompt_version
           FROM marts.gate_violations v JOIN window_metrics w USING (prompt_version)
           WHERE v.campaign_id = $campaign AND v.attempt = 0 AND v.day < $day AND v.day >= $since
           GROUP BY v.prompt_version, v.violation_code
           ORDER BY 1, 2 NULLS FIRST""",
        {"campaign": campaign_id, "day": day, "since": day - timedelta(days=lookback_days)},
    ).df()


@reads_dbt_relations
def model_stage_quality(con: duckdb.DuckDBPyConnection, campaign_id: str) -> pd.DataFrame | None:
    """The campaign's rows of marts.model_stage_quality (what routing canaries are proposed from)."""
    if not table_exists(con, "marts", "model_stage_quality"):
        return None
    return con.execute("SELECT * FROM marts.model_stage_quality WHERE campaign_id = ?", [campaign_id]).df()


VOLUME_DAYS = 7  # the recent days whose assignments say how many leads a segment gets a day


def daily_leads(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date) -> dict[str, float]:
    """Loop (non-holdout) leads assigned per segment per day over the VOLUME_DAYS before `day`."""
    rows = con.execute(
        """SELECT segment, count(*)::DOUBLE PRECISION / $days FROM raw.assignments
           WHERE campaign_id = $campaign AND partition_day < $day AND partition_day >= $day - $days::INTEGER
             AND NOT coalesce(holdout, false)
           GROUP BY segment""",
        {"campaign": campaign_id, "day": day, "days": VOLUME_DAYS},
    ).fetchall()
    return {segment: float(per_day) for segment, per_day in rows}


def days_to_planned_sample(
    experiment: Experiment, leads_per_day: Mapping[str, float], window_days: int, eligible_share: float = 1.0
) -> int | None:
    """Days until each challenger has its planned mature sends at the recent volume (None: no volume yet).

    Shown with every proposal, so a person sees what a design costs in time before approving it.
    `eligible_share`: the part of the segments' leads the experiment can reach (a hook experiment only
    the leads of its angle).
    """
    per_day = eligible_share * sum(leads_per_day.get(s, 0.0) for s in experiment.target_segments)
    per_challenger = per_day * experiment.max_traffic_share / len(experiment.challengers)
    if per_challenger <= 0:
        return None
    return math.ceil(experiment.planned_sample_size / per_challenger) + window_days


def read_evidence(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> Evidence:
    """Everything the day's proposals need from the warehouse."""
    state = current_version(con, spec).state
    return Evidence(
        day=day,
        champions=dict(state.champions),
        routing=dict(state.routing),
        experiments=tuple(list_experiments(con, spec.campaign_id)),
        sends=mature_sends(con, spec.campaign_id, day, spec.improve.outcome_window_days),
        gate_stats=gate_stats(con, spec.campaign_id, day),
        quality=model_stage_quality(con, spec.campaign_id),
        open_count=count_open_proposals(con, spec.campaign_id),
        daily_leads=daily_leads(con, spec.campaign_id, day),
        hooks=dict(state.hooks),
        splits=dict(state.splits),
        plan_hooks=latest_plan_hooks(con, spec.campaign_id, day),
    )


def latest_plan_hooks(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date) -> dict[str, str]:
    """ "segment|angle" -> the hook of the latest plan before `day` (what a hook challenger is written against)."""
    rows = con.execute(
        """SELECT segment, angle, hook FROM raw.plans
           WHERE campaign_id = $campaign
             AND partition_day = (SELECT max(partition_day) FROM raw.plans WHERE campaign_id = $campaign AND partition_day < $day)""",
        {"campaign": campaign_id, "day": day},
    ).fetchall()
    return {f"{segment}|{angle}": hook for segment, angle, hook in rows}


# ---------------------------------------------------------------- figures


def _rate(events: float, sends: float, prior: float) -> float:
    """Events per send, shrunk towards `prior` with the weight of PRIOR_SENDS sends."""
    return (events + prior * PRIOR_SENDS) / (sends + PRIOR_SENDS)


def segment_figures(sends: pd.DataFrame, segments: Iterable[str]) -> dict[str, dict[str, int]]:
    """Mature sends and their outcomes per segment (the numbers base rates are made from)."""
    figures = {}
    for segment in segments:
        mine = sends[sends.segment == segment]
        figures[segment] = {
            "mature_sends": len(mine),
            "positive_replies": int(mine.positive.sum()),
            "unsubscribes": int(mine.unsubscribed.sum()),
            "complaints": int(mine.complained.sum()),
            "negative_replies": int((mine.replied & ~mine.positive).sum()),
        }
    return figures


def design_rates(figures: Mapping[str, Mapping[str, int]], prior_positive_rate: float) -> tuple[float, tuple[Guardrail, ...]]:
    """The pooled base rate of the primary metric and the guardrails, for the segments in `figures`."""
    sends = sum(f["mature_sends"] for f in figures.values())

    def total(column: str) -> int:
        return sum(f[column] for f in figures.values())

    base = max(MIN_BASE_RATE, _rate(total("positive_replies"), sends, prior_positive_rate))
    rates = {r.metric: _rate(total(METRIC_COUNTS[r.metric]), sends, r.base_rate_floor) for r in GUARDRAIL_RULES}
    return base, relative_guardrails(rates)


def _opens_with_question(body: str) -> bool:
    """Whether the paragraph after the greeting starts with a question."""
    paragraphs = [p.strip() for p in str(body).split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return False
    opening = paragraphs[1]
    end = min((i for i in (opening.find("?"), opening.find(". "), opening.find("! ")) if i >= 0), default=len(opening))
    return opening[end : end + 1] == "?"


def _profile(bodies: pd.Series) -> dict[str, float] | None:
    if bodies.empty:
        return None
    return {
        "messages": len(bodies),
        "mean_words": round(float(bodies.map(lambda b: len(str(b).split())).mean()), 1),
        "question_opening_share": round(float(bodies.map(_opens_with_question).mean()), 3),
    }


def message_profile(sends: pd.DataFrame, segments: Sequence[str]) -> dict[str, Any]:
    """What the positively answered messages of `segments` share against the others, as figures."""
    mine = sends[sends.segment.isin(segments) & sends.body.notna()]
    by = {}
    for column in ("angle", "prompt_version"):
        grouped = mine.groupby(column).positive.agg(["size", "sum"]).sort_index()
        by[column] = [
            {column: str(key), "sends": int(row["size"]), "positive_rate": round(float(row["sum"] / row["size"]), 4)}
            for key, row in grouped.iterrows()
        ]
    return {
        "mature_sends": len(mine),
        "positive": int(mine.positive.sum()),
        "positive_messages": _profile(mine.body[mine.positive]),
        "other_messages": _profile(mine.body[~mine.positive]),
        "angles": by["angle"],
        "prompt_versions": by["prompt_version"],
    }


def gate_catches(stats: pd.DataFrame, prompt_version: str, top: int = 5) -> tuple[list[dict[str, Any]], float | None]:
    """The violation codes most often caught in first drafts of `prompt_version` (all versions when it has none),
    each with its share of first drafts, and the first-pass rate."""
    mine = stats[stats.prompt_version == prompt_version]
    mine = mine if not mine.empty else stats
    totals = mine[mine.violation_code.isna()]
    drafts = int(totals.drafts.sum())
    if drafts == 0:
        return [], None
    codes = mine[mine.violation_code.notna()].groupby("violation_code").drafts_flagged.sum().sort_values(ascending=False)
    catches = [
        {"code": str(code), "drafts_flagged": int(flagged), "share_of_drafts": round(float(flagged) / drafts, 4)}
        for code, flagged in codes.head(top).items()
    ]
    return catches, round(float(totals.drafts_flagged.sum()) / drafts, 4)


def design_experiment(
    spec: CampaignSpec,
    evidence: Evidence,
    *,
    kind: str,
    control: str,
    challenger: str,
    segments: Sequence[str],
    hypothesis: str,
    figures: Mapping[str, Any],
    proposed_by: str,
    at: datetime,
    sends: pd.DataFrame | None = None,
    eligible_share: float = 1.0,
) -> Experiment:
    """A proposal judged on positive replies per send, designed on the target segments' own mature `sends`
    (default: all of the evidence's; a hook experiment passes its angle's): base rate, guardrails, the
    planned sample at MDE, the spec's challenger share, and the days that sample takes at the recent
    volume (of which the experiment reaches `eligible_share`)."""
    per_segment = segment_figures(evidence.sends if sends is None else sends, segments)
    base_rate, guardrails = design_rates(per_segment, spec.allocation.prior_positive_rate)
    experiment = propose(
        campaign_id=spec.campaign_id,
        kind=kind,
        hypothesis=hypothesis,
        control=control,
        challengers=[challenger],
        target_segments=list(segments),
        primary_metric=PRIMARY_METRIC,
        base_rate=base_rate,
        mde=MDE,
        guardrails=guardrails,
        max_traffic_share=spec.improve.challenger_share,
        motivating_figures={**figures, "segments": per_segment, "base_rate": round(base_rate, 5)},
        proposed_by=proposed_by,
        at=at,
    )
    days = days_to_planned_sample(experiment, evidence.daily_leads, spec.improve.outcome_window_days, eligible_share)
    timing = {"days_to_planned_sample": days, "max_days": experiment.stopping_rule.max_days}
    return replace(experiment, motivating_figures={**experiment.motivating_figures, **timing})
