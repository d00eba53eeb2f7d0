"""One PNG per question the operator asks of the loop, drawn with matplotlib's Agg backend.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot's global state, so
a Dagster run or a test can draw from any thread and nothing leaks between reports. Every plot
returns its caption: what it shows and the figures behind it, in plain text (html.py escapes it).
With no rows, a plot is a "no data yet" card saying why, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display on a server or in CI

import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from factory_dagster.report.data import OUTCOME_WINDOW_DAYS, ReportData  # noqa: E402
from factory_dagster.report.figures import MIN_EVENTS, lift_sentence, wilson_interval  # noqa: E402

DPI = 100
WIDTH = 11.0
HOLDOUT_BAND = "holdout (uniform baseline)"
MAX_ARMS = 9  # more bands than this are unreadable: the rest are summed as "other arms"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


@dataclass(frozen=True)
class Plot:
    """One drawn PNG: its file name in the report folder, title, caption (plain text) and whether it has data."""

    filename: str
    title: str
    caption: str
    has_data: bool


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def no_data(path: Path, title: str, reason: str) -> None:
    """A card that says there is nothing to draw yet and why, in place of an empty chart."""
    fig = Figure(figsize=(WIDTH, 2.2))
    fig.text(0.5, 0.68, title, ha="center", va="center", fontsize=13, weight="bold")
    fig.text(0.5, 0.42, "no data yet", ha="center", va="center", fontsize=18, color="#888888")
    fig.text(0.5, 0.16, reason, ha="center", va="center", fontsize=10, color="#555555", wrap=True)
    _save(fig, path)


def _date_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    ax.grid(axis="y", alpha=0.3)


def _span(frame: pd.DataFrame) -> str:
    first, last = frame["day"].min(), frame["day"].max()
    return f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"


def plot_funnel(data: ReportData, out_dir: Path) -> Plot:
    """Daily funnel: volumes, outcomes of each day's send cohort, and the day's reply rates."""
    filename, title = "funnel.png", "Daily funnel and KPIs"
    funnel = data.funnel
    if funnel.empty or (funnel["sends"].sum() == 0 and funnel["leads_in"].sum() == 0):
        no_data(out_dir / filename, title, "marts.daily_kpis has no day yet: the learn stage builds it after the first run")
        return Plot(filename, title, "No day in marts.daily_kpis yet.", False)
    days = funnel["day"]
    fig = Figure(figsize=(WIDTH, 8.4))
    volume, outcomes, rates = fig.subplots(3, 1, sharex=True)
    for column, label, color in (
        ("sends", "sends", COLORS[0]),
        ("delivered", "delivered", COLORS[2]),
        ("replies", "replies", COLORS[1]),
    ):
        volume.plot(days, funnel[column], marker="o", ms=3, label=label, color=color)
    volume.set_ylabel("per day")
    volume.set_title(f"{title} ({_span(funnel)})", loc="left", fontsize=12, weight="bold")
    volume.legend(loc="lower left", fontsize=9, ncols=3)
    for column, label, color in (
        ("positive_replies", "positive replies", COLORS[2]),
        ("booked", "bookings", COLORS[4]),
        ("unsubscribes", "unsubscribes", COLORS[3]),
        ("complaints", "complaints", COLORS[5]),
    ):
        outcomes.plot(days, funnel[column], marker="o", ms=3, label=label, color=color)
    outcomes.set_ylabel("sends of the day")
    outcomes.legend(loc="upper left", fontsize=9, ncols=4)
    sends = funnel["sends"].where(funnel["sends"] > 0)
    rates.plot(days, 100 * funnel["replies"] / sends, marker="o", ms=3, label="reply rate", color=COLORS[1])
    rates.plot(days, 100 * funnel["positive_replies"] / sends, marker="o", ms=3, label="positive reply rate", color=COLORS[2])
    rates.set_ylabel("% of the day's sends")
    rates.legend(loc="upper left", fontsize=9, ncols=2)
    for ax in (volume, outcomes, rates):
        _date_axis(ax)
        ax.set_ylim(bottom=0)
    _save(fig, out_dir / filename)
    total = {c: int(funnel[c].sum()) for c in ("sends", "delivered", "replies", "positive_replies", "booked", "unsubscribes")}
    caption = (
        f"Per day, {_span(funnel)}: sends, delivered and replies (top); positive replies, bookings, unsubscribes and "
        f"complaints of each day's sends (middle); reply and positive reply rate of the day's sends (bottom). In all: "
        f"{total['sends']:,} sends, {total['delivered']:,} delivered, {total['replies']:,} replies, "
        f"{total['positive_replies']:,} positive, {total['booked']:,} bookings, {total['unsubscribes']:,} unsubscribes, "
        f"{int(funnel['complaints'].sum()):,} complaints. Outcomes arrive over 1-7 days, so the last days are still low. "
        "Source: marts.daily_kpis (delivered: intermediate.int_send_outcomes)."
    )
    return Plot(filename, title, caption, True)


def cumulative_sides(holdout: pd.DataFrame) -> pd.DataFrame:
    """Per send day and side (loop, holdout): cumulative mature sends, positive replies, rate and Wilson interval."""
    rows = []
    for flag, side in ((False, "loop"), (True, "holdout")):
        mine = holdout[holdout["holdout"] == flag].groupby("day")[["sends", "positive_replies"]].sum().sort_index().cumsum()
        for day, row in mine.iterrows():
            low, high = wilson_interval(row["positive_replies"], row["sends"])
            rate = row["positive_replies"] / row["sends"] if row["sends"] else np.nan
            rows.append((day, side, int(row["sends"]), int(row["positive_replies"]), rate, low, high))
    return pd.DataFrame(rows, columns=["day", "side", "sends", "positive_replies", "rate", "low", "high"])


def plot_loop_vs_holdout(data: ReportData, figures: dict[str, Any], out_dir: Path) -> Plot:
    """Cumulative positive replies per mature send of the loop's leads and the holdout's, with 95% intervals."""
    filename, title = "loop_vs_holdout.png", "Loop against its holdout"
    if data.holdout.empty or not (data.holdout["holdout"] == True).any():  # noqa: E712 (a pandas column)
        reason = (
            f"no mature holdout send in the period yet: a send counts {OUTCOME_WINDOW_DAYS} days after it went out, "
            "and 5% of leads are held out"
        )
        no_data(out_dir / filename, title, reason)
        return Plot(filename, title, reason[0].upper() + reason[1:] + ".", False)
    sides = cumulative_sides(data.holdout)
    fig = Figure(figsize=(WIDTH, 4.6))
    ax = fig.subplots()
    for side, color in (("loop", COLORS[0]), ("holdout", COLORS[1])):
        mine = sides[sides["side"] == side]
        ax.plot(mine["day"], 100 * mine["rate"], marker="o", ms=3, color=color, label=f"{side} (cumulative)")
        ax.fill_between(mine["day"], 100 * mine["low"], 100 * mine["high"], color=color, alpha=0.15, label=f"{side} 95% interval")
    ax.set_ylabel("positive replies per mature send, %")
    ax.set_xlabel("send day (sends of this day and before)")
    ax.set_title(f"{title}: {lift_sentence(figures)}", loc="left", fontsize=11, weight="bold", wrap=True)
    ax.legend(loc="upper right", fontsize=9, ncols=2)
    _date_axis(ax)
    ax.set_ylim(bottom=0)
    _save(fig, out_dir / filename)
    caption = (
        f"Positive replies per mature send (sent at least {OUTCOME_WINDOW_DAYS} days before the last event), cumulated by "
        f"send day, for the loop's leads and the {HOLDOUT_BAND}; shaded: 95% Wilson intervals. Last point: "
        f"{lift_sentence(figures)}. The lift's interval (delta method, as marts.loop_lift) needs {MIN_EVENTS} positive "
        "replies on each side. Source: intermediate.int_send_outcomes and raw.assignments.holdout."
    )
    return Plot(filename, title, caption, True)


def traffic_shares(traffic: pd.DataFrame) -> pd.DataFrame:
    """Each day's share of assigned leads per arm (day × arm), the smallest arms summed as "other arms"."""
    table = traffic.pivot_table(index="day", columns="arm", values="leads", aggfunc="sum", fill_value=0)
    arms = [a for a in table.sum().sort_values(ascending=False).index if a != HOLDOUT_BAND]
    keep, rest = arms[:MAX_ARMS], arms[MAX_ARMS:]
    shown = table[keep].copy()
    if rest:
        shown["other arms"] = table[rest].sum(axis=1)
    if HOLDOUT_BAND in table:
        shown[HOLDOUT_BAND] = table[HOLDOUT_BAND]
    return shown.div(shown.sum(axis=1), axis=0)


def plot_traffic(data: ReportData, out_dir: Path) -> Plot:
    """Stacked shares of each day's leads per arm: where the allocation policy sent traffic."""
    filename, title = "traffic_shares.png", "Traffic shares per arm"
    if data.traffic.empty:
        no_data(out_dir / filename, title, "raw.assignments has no lead yet: the assign stage writes it")
        return Plot(filename, title, "No assignment in raw.assignments yet.", False)
    shares = traffic_shares(data.traffic)
    fig = Figure(figsize=(WIDTH, 4.8))
    ax = fig.subplots()
    colors = [COLORS[i % len(COLORS)] if arm != HOLDOUT_BAND else "#cccccc" for i, arm in enumerate(shares.columns)]
    ax.stackplot(shares.index, *(100 * shares[c] for c in shares.columns), labels=list(shares.columns), colors=colors, alpha=0.9)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of the day's assigned leads")
    ax.set_title(f"{title} ({_span(data.traffic)})", loc="left", fontsize=12, weight="bold")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _date_axis(ax)
    _save(fig, out_dir / filename)
    last = shares.iloc[-1].sort_values(ascending=False)
    top = "; ".join(f"{arm} {share:.0%}" for arm, share in last.head(4).items())
    caption = (
        f"Share of each day's assigned leads per arm (angle|prompt version|model), {_span(data.traffic)}, "
        f"{int(data.traffic['leads'].sum()):,} leads; the holdout band is the frozen uniform baseline. "
        f"Last day: {top}. Source: raw.assignments."
    )
    return Plot(filename, title, caption, True)


def _experiment_label(row: pd.Series) -> str:
    return f"{row['experiment_id']} ({row['kind']})\n{row['arm']} [{row['role']}]"


def _experiment_note(row: pd.Series) -> str:
    if pd.isna(row["posterior_mean"]):
        return f"no look yet ({int(row['mature_sends'])} mature sends)"
    mature = (
        "" if pd.isna(row["look_mature_sends"]) else f"{int(row['look_mature_sends'])}/{int(row['planned_sample_size'])} mature"
    )
    if row["role"] == "control":
        return f"{row['posterior_mean']:.2%}  control, {mature}"
    p_better = "" if pd.isna(row["p_better"]) else f"P(better) {row['p_better']:.2f}, "
    return f"{row['posterior_mean']:.2%}  {p_better}{row['state']}, {row['decision']}, {mature}"


def plot_experiments(data: ReportData, out_dir: Path) -> Plot:
    """Each experiment's arms at their latest look: posterior mean and 95% credible interval, P(better), state."""
    filename, title = "experiment_posteriors.png", "Experiment posteriors"
    frame = data.experiments.reset_index(drop=True)
    if frame.empty:
        no_data(out_dir / filename, title, "no experiment has run yet (marts.experiment_results is empty or missing)")
        return Plot(filename, title, "No experiment has run yet.", False)
    fig = Figure(figsize=(WIDTH, 1.2 + 0.62 * len(frame)))
    ax = fig.subplots()
    positions = np.arange(len(frame))[::-1]
    top = float(np.nanmax(pd.to_numeric(frame["interval_high"], errors="coerce").fillna(0).to_numpy(dtype=float), initial=0.0))
    right = max(top, 0.01) * 100
    for y, (_, row) in zip(positions, frame.iterrows(), strict=True):
        color = "#7f7f7f" if row["role"] == "control" else COLORS[0]
        if not pd.isna(row["posterior_mean"]):
            mean, low, high = 100 * row["posterior_mean"], 100 * row["interval_low"], 100 * row["interval_high"]
            ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=color, capsize=4, ms=6)
        ax.text(right * 1.04, y, _experiment_note(row), va="center", fontsize=8.5)
    ax.set_yticks(positions, [_experiment_label(r) for _, r in frame.iterrows()], fontsize=8.5)
    ax.set_xlim(0, right * 1.9)
    ax.set_ylim(-0.6, len(frame) - 0.4)
    ax.set_xlabel("positive replies per mature send, % (posterior mean and 95% credible interval)")
    ax.set_title(title + " at the latest look", loc="left", fontsize=12, weight="bold")
    ax.grid(axis="x", alpha=0.3)
    for boundary in np.flatnonzero(frame["experiment_id"].ne(frame["experiment_id"].shift()).to_numpy())[1:]:
        ax.axhline(positions[boundary] + 0.5, color="#999999", lw=0.6)
    _save(fig, out_dir / filename)
    experiments = frame.drop_duplicates("experiment_id")
    parts = []
    for _, exp in experiments.iterrows():
        arms = frame[frame["experiment_id"] == exp["experiment_id"]]
        challengers = arms[arms["role"] != "control"]
        p_better = ", ".join(
            f"{r['arm']} P(better) {r['p_better']:.2f}" for _, r in challengers.iterrows() if not pd.isna(r["p_better"])
        )
        decision = exp["decision"] if isinstance(exp["decision"], str) else "no look yet"
        parts.append(f"{exp['experiment_id']} ({exp['kind']}, {exp['state']}, {decision}{'; ' + p_better if p_better else ''})")
    caption = (
        f"{len(experiments)} experiment(s) that ran in the period, one row per arm: posterior mean of positive replies per "
        f"mature send and its 95% credible interval at the decision step's latest look, P(challenger better), state and "
        f"decision, mature sends against the planned sample. {'; '.join(parts)}. Source: marts.experiment_results."
    )
    return Plot(filename, title, caption, True)


def _bars(ax: Axes, labels: list[str], values: list[float], notes: list[str], xlabel: str, title: str) -> None:
    positions = np.arange(len(labels))[::-1]
    ax.barh(positions, values, color=COLORS[0], alpha=0.85)
    ax.set_yticks(positions, labels, fontsize=9)
    peak = max([v for v in values if v == v] or [0.0]) or 1.0
    for y, value, note in zip(positions, values, notes, strict=True):
        ax.text((value if value == value else 0) + peak * 0.02, y, note, va="center", fontsize=8.5)
    ax.set_xlim(0, peak * 1.45)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontsize=10.5, weight="bold")
    ax.grid(axis="x", alpha=0.3)


def plot_costs(data: ReportData, figures: dict[str, Any], out_dir: Path) -> Plot:
    """Model spend per positive reply per stage and model, and the drafting models' own cost per positive reply."""
    filename, title = "cost_per_positive_reply.png", "Cost per positive reply, per stage and model"
    costs = data.costs
    if costs.empty:
        no_data(out_dir / filename, title, "no model call yet (marts.llm_costs is empty or missing)")
        return Plot(filename, title, "No model call in marts.llm_costs yet.", False)
    positives = figures["positive_replies"]
    fig = Figure(figsize=(WIDTH, 1.8 + 0.42 * max(len(costs), len(data.draft_models))))
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.65})
    cost_labels = [f"{r['stage']} / {r['model']}" for _, r in costs.iterrows()]
    if positives:
        values = [float(c) / positives for c in costs["cost_usd"]]
        notes = [f"${v:.4f} (${c:.3f} spent)" for v, c in zip(values, costs["cost_usd"], strict=True)]
        _bars(
            left, cost_labels, values, notes, "USD per positive reply", f"All spend / {positives} positive replies of the period"
        )
    else:
        values = [float(c) for c in costs["cost_usd"]]
        _bars(left, cost_labels, values, [f"${v:.3f}" for v in values], "USD spent", "Spend (no positive reply yet)")
    models = data.draft_models
    if models.empty:
        right.axis("off")
        right.text(0.5, 0.5, "no drafting model data yet\n(marts.model_stage_quality)", ha="center", va="center", color="#888888")
    else:
        labels = [f"{r['stage']} / {r['model']}" for _, r in models.iterrows()]
        values = [float(r["cost_usd"]) / r["positive_replies"] if r["positive_replies"] else np.nan for _, r in models.iterrows()]
        notes = [
            f"${v:.4f} ({int(r['positive_replies'])} positive / {int(r['mature_sends'])} mature)"
            if v == v
            else f"no positive reply yet (${float(r['cost_usd']):.3f}, {int(r['mature_sends'])} mature)"
            for v, (_, r) in zip(values, models.iterrows(), strict=True)
        ]
        _bars(
            right,
            labels,
            [0.0 if v != v else v for v in values],
            notes,
            "USD per positive reply",
            "Drafting: own leads, mature sends",
        )
    fig.suptitle(title, x=0.02, y=1.04, ha="left", fontsize=12, weight="bold")
    _save(fig, out_dir / filename)
    total = figures["cost_per_positive_reply_usd"]
    per_stage = "; ".join(f"{label} ${c:.4f}" for label, c in zip(cost_labels, costs["cost_usd"], strict=True))
    caption = (
        f"Left: each stage's and model's spend in the period (marts.llm_costs) divided by the {positives} positive replies "
        f"of the period's sends; in all ${figures['cost_usd']:.4f}"
        + (f", ${total:.4f} per positive reply" if total is not None else ", no positive reply yet")
        + ". Right: per drafting stage and model, the cost of the leads it served (their repairs and escalations "
        "included) per positive reply of their mature sends, over all days (marts.model_stage_quality). "
        f"Spend: {per_stage}."
    )
    return Plot(filename, title, caption, True)


def plot_gate(data: ReportData, out_dir: Path) -> Plot:
    """Share of gated drafts flagged per violation reason."""
    filename, title = "gate_catch_rates.png", "Gate catch rates by reason"
    frame = data.gate_violations
    if data.drafts_gated == 0:
        no_data(out_dir / filename, title, "no draft has been gated yet (marts.gate_metrics is empty or missing)")
        return Plot(filename, title, "No draft gated yet.", False)
    rejected = data.drafts_gated - data.drafts_passed
    fig = Figure(figsize=(WIDTH, 1.6 + 0.34 * max(len(frame), 1)))
    ax = fig.subplots()
    if frame.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no violation in {data.drafts_gated:,} gated drafts", ha="center", va="center")
    else:
        rates = [100 * float(n) / data.drafts_gated for n in frame["drafts_flagged"]]
        notes = [f"{int(n):,} drafts ({r:.1f}%)" for n, r in zip(frame["drafts_flagged"], rates, strict=True)]
        _bars(ax, list(frame["violation_code"]), rates, notes, "% of gated drafts flagged", "")
    ax.set_title(
        f"{title}: {rejected:,} of {data.drafts_gated:,} drafts rejected ({rejected / data.drafts_gated:.1%})",
        loc="left",
        fontsize=12,
        weight="bold",
    )
    _save(fig, out_dir / filename)
    top = ", ".join(f"{r['violation_code']} {int(r['drafts_flagged'])}" for _, r in frame.head(5).iterrows())
    caption = (
        f"Share of the period's {data.drafts_gated:,} gated drafts (every attempt) flagged for each reason; "
        f"{rejected:,} ({rejected / data.drafts_gated:.1%}) were rejected. A draft can break several rules, so the "
        f"shares add up to more than the rejection rate. Most frequent: {top or 'none'}. "
        "Source: marts.gate_violations and marts.gate_metrics."
    )
    return Plot(filename, title, caption, True)


PlotFunction = Callable[[ReportData, dict[str, Any], Path], Plot]

# The report's plots, in page order.
PLOTS: list[PlotFunction] = [
    lambda data, figures, out: plot_funnel(data, out),
    plot_loop_vs_holdout,
    lambda data, figures, out: plot_traffic(data, out),
    lambda data, figures, out: plot_experiments(data, out),
    plot_costs,
    lambda data, figures, out: plot_gate(data, out),
]


def draw_all(data: ReportData, figures: dict[str, Any], out_dir: Path) -> list[Plot]:
    """Every plot, in page order. Mathtext is off while they draw: names from the warehouse and dollar
    amounts are text, and a stray `$` in an arm or model name must neither garble a label nor fail the report."""
    with matplotlib.rc_context({"text.parse_math": False}):
        return [draw(data, figures, out_dir) for draw in PLOTS]
