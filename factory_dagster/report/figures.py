"""The report's key figures: one flat dict (for JSON and Dagster metadata) and its markdown table.

The loop-vs-holdout lift is computed here from the mature sends the report read, with the same
rule as marts.loop_lift (delta method on the log ratio, only once each side has
`MIN_EVENTS` positive replies), so it also holds for a `--days` window or several campaigns.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from factory_dagster.report.data import ReportData

Z95 = 1.959963984540054
MIN_EVENTS = 5  # as the dbt var loop_lift_min_events: below it the normal approximation is poor


def wilson_interval(successes: float, trials: float, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a rate; (nan, nan) without trials. Why Wilson: it stays inside
    [0, 1] and is honest at the 0-3 positive replies a holdout has for weeks."""
    if trials <= 0:
        return math.nan, math.nan
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def lift_with_interval(
    loop_hits: int, loop_sends: int, holdout_hits: int, holdout_sends: int
) -> tuple[float | None, float | None, float | None]:
    """loop rate / holdout rate − 1 and its 95% interval, as marts.loop_lift computes them."""
    if loop_sends <= 0 or holdout_sends <= 0 or holdout_hits <= 0:
        return None, None, None
    loop_rate, holdout_rate = loop_hits / loop_sends, holdout_hits / holdout_sends
    lift = loop_rate / holdout_rate - 1
    if min(loop_hits, holdout_hits) < MIN_EVENTS:
        return lift, None, None
    se = math.sqrt((1 - loop_rate) / loop_hits + (1 - holdout_rate) / holdout_hits)
    log_ratio = math.log(loop_rate / holdout_rate)
    return lift, math.exp(log_ratio - Z95 * se) - 1, math.exp(log_ratio + Z95 * se) - 1


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _total(frame: pd.DataFrame, column: str) -> int:
    return int(pd.to_numeric(frame[column]).sum()) if not frame.empty else 0


def key_figures(data: ReportData) -> dict[str, Any]:
    """The figures an operator reads first, all plain JSON values (None where there is nothing yet)."""
    funnel = data.funnel
    days = sorted(funnel["day"].dt.date) if not funnel.empty else []
    figures: dict[str, Any] = {
        "campaigns": list(data.campaigns),
        "first_day": days[0].isoformat() if days else None,
        "last_day": days[-1].isoformat() if days else None,
        "days": len(days),
    }
    for name in ("sends", "delivered", "replies", "positive_replies", "booked", "unsubscribes", "complaints", "bounces"):
        figures[name] = _total(funnel, name)
    cost = float(pd.to_numeric(funnel["cost_usd"]).sum()) if not funnel.empty else 0.0
    figures["positive_reply_rate"] = _ratio(figures["positive_replies"], figures["sends"])
    figures["cost_usd"] = round(cost, 6)
    figures["cost_per_positive_reply_usd"] = _ratio(cost, figures["positive_replies"])

    sides = data.holdout.groupby("holdout")[["sends", "positive_replies"]].sum() if not data.holdout.empty else None

    def side(flag: bool, column: str) -> int:
        return int(sides.loc[flag, column]) if sides is not None and flag in sides.index else 0

    loop_sends, loop_hits = side(False, "sends"), side(False, "positive_replies")
    holdout_sends, holdout_hits = side(True, "sends"), side(True, "positive_replies")
    lift, low, high = lift_with_interval(loop_hits, loop_sends, holdout_hits, holdout_sends)
    figures.update(
        loop_mature_sends=loop_sends,
        loop_positive_replies=loop_hits,
        loop_rate=_ratio(loop_hits, loop_sends),
        holdout_mature_sends=holdout_sends,
        holdout_positive_replies=holdout_hits,
        holdout_rate=_ratio(holdout_hits, holdout_sends),
        loop_lift=lift,
        loop_lift_low=low,
        loop_lift_high=high,
    )

    experiments = data.experiments
    by_experiment = experiments.drop_duplicates("experiment_id") if not experiments.empty else experiments
    figures["experiments"] = len(by_experiment)
    figures["experiments_running"] = int((by_experiment["state"] == "running").sum()) if len(by_experiment) else 0

    traffic = data.traffic
    if not traffic.empty:
        last = traffic[traffic["day"] == traffic["day"].max()]
        top = last.sort_values("leads", ascending=False).iloc[0]
        figures["arms_last_day"] = int((last["arm"] != "holdout (uniform baseline)").sum())
        figures["top_arm_last_day"] = str(top["arm"])
        figures["top_arm_share_last_day"] = float(top["leads"] / last["leads"].sum())
    else:
        figures.update(arms_last_day=0, top_arm_last_day=None, top_arm_share_last_day=None)

    figures["drafts_gated"] = data.drafts_gated
    figures["gate_rejection_rate"] = _ratio(data.drafts_gated - data.drafts_passed, data.drafts_gated)
    violations = data.gate_violations
    figures["top_gate_reason"] = str(violations.iloc[0]["violation_code"]) if not violations.empty else None
    return figures


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0%}"


def lift_sentence(figures: dict[str, Any]) -> str:
    """The loop's lift over the holdout in words, with its interval or why there is none."""
    if not figures["holdout_mature_sends"] or not figures["loop_mature_sends"]:
        return "no mature holdout sends yet"
    versus = (
        f"{_percent(figures['loop_rate'], 2)} ({figures['loop_positive_replies']} of {figures['loop_mature_sends']}) vs "
        f"{_percent(figures['holdout_rate'], 2)} ({figures['holdout_positive_replies']} of {figures['holdout_mature_sends']})"
    )
    if figures["loop_lift"] is None:
        return f"{versus}; no ratio while the holdout has no positive reply"
    if figures["loop_lift_low"] is None:
        return f"{versus}: {_signed(figures['loop_lift'])} (no interval until each side has {MIN_EVENTS} positive replies)"
    return f"{versus}: {_signed(figures['loop_lift'])} [{_signed(figures['loop_lift_low'])}, {_signed(figures['loop_lift_high'])}] (95%)"


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs in reading order: what the HTML table and the markdown both show."""
    period = f"{figures['first_day']} to {figures['last_day']} ({figures['days']} days)" if figures["days"] else "no days yet"
    cost_per = figures["cost_per_positive_reply_usd"]
    share = figures["top_arm_share_last_day"]
    return [
        ("campaigns", ", ".join(figures["campaigns"]) or "none yet"),
        ("period", period),
        ("sends / delivered", f"{figures['sends']:,} / {figures['delivered']:,}"),
        ("replies / positive / booked", f"{figures['replies']:,} / {figures['positive_replies']:,} / {figures['booked']:,}"),
        ("positive replies per send", _percent(figures["positive_reply_rate"], 2)),
        ("unsubscribes / complaints / bounces", f"{figures['unsubscribes']} / {figures['complaints']} / {figures['bounces']}"),
        ("model spend", f"${figures['cost_usd']:.4f}"),
        ("spend per positive reply", "–" if cost_per is None else f"${cost_per:.4f}"),
        ("loop vs holdout (positive replies per mature send)", lift_sentence(figures)),
        ("experiments (running)", f"{figures['experiments']} ({figures['experiments_running']})"),
        (
            "arms on the last day (largest)",
            f"{figures['arms_last_day']}" + ("" if share is None else f" ({figures['top_arm_last_day']}, {share:.0%})"),
        ),
        (
            "drafts gated / rejected",
            f"{figures['drafts_gated']:,} / {_percent(figures['gate_rejection_rate'])}"
            + (f" (most often: {figures['top_gate_reason']})" if figures["top_gate_reason"] else ""),
        ),
    ]


def summary_markdown(figures: dict[str, Any]) -> str:
    """The key figures as a two-column markdown table (Dagster renders it in the asset's metadata)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {cell(label)} | {cell(value)} |" for label, value in figure_rows(figures)]
    return "\n".join(lines)
