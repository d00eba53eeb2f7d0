"""Segment splits: where the best angle differs by a lead attribute, the two parts of a segment learn apart.

A segment is a guess at who answers alike. When the marts show that, within a segment, leads with
some attribute values (say seniority C-level, VP or Director) answer a different angle best than the
rest, one allocation per segment leaves replies on the table. Once a day the improve stage scans each
segment's mature sends by lead attribute (`SPLIT_ATTRIBUTES`; company size in bands) and proposes a
`segment_split` experiment where

- each level of the attribute, grouped by the angle it answers best, gives a rule "values in ..."
  whose two parts (in and out) have different best angles with P >= 1 - (1 - MIN_P_DIFFERENT) / the
  number of attributes scanned (Beta posteriors with the allocation's prior, seeded draws, so a
  re-run proposes the same);
- each part has at least MIN_PART_SENDS mature sends and MIN_PART_POSITIVE positive replies, and
  giving each part its own best angle would earn at least MIN_GAIN more positive replies per send
  than the segment's best angle for all.

Scanning several attributes every day still finds a chance pattern now and then (the correction
is per day, not over days): a proposal is a hypothesis, which a person approves (segment splits
are never auto-approved) and an experiment then tests. While it
runs, the segment's loop leads are split (layer `split`): control leads get the segment's pooled
angle allocation, challenger leads their part's own (`allocation`); a promotion keeps the split for
every loop lead of the segment (loop state `splits`), and a rollback restores pooling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.evidence import Evidence, design_experiment
from factory_dagster.improve.experiments import OPEN_STATES, Experiment
from factory_dagster.improve.stats import seed_for
from factory_dagster.learning.marts import arm_performance, known_send_outcomes

SPLIT_ATTRIBUTES = ("seniority", "industry", "region", "size_band")
SIZE_BANDS = ((200, "1-199"), (1000, "200-999"), (None, "1000+"))  # (upper bound, exclusive; label)
POOLED = "pooled"  # the control arm: one allocation for the whole segment
PART_SEPARATOR = "/"
PREFIX = "split:"
MIN_PART_SENDS = 150
MIN_PART_POSITIVE = 10  # a part's best angle is read from its positive replies: fewer say little
MIN_P_DIFFERENT = 0.99  # before the Bonferroni correction over the attributes scanned
MIN_GAIN = 0.10
SPLIT_PROPOSER = "improve stage (segment split statistics)"
_DRAWS = 4000


def size_band(company_size: Any) -> str:
    """The company-size band a lead falls in (splits compare bands, not exact sizes)."""
    size = int(company_size)
    return next(label for upper, label in SIZE_BANDS if upper is None or size < upper)


def lead_value(lead: Mapping[str, Any], attribute: str) -> str:
    """The lead's value of a split attribute, as the rules compare it."""
    if attribute == "size_band":
        return size_band(lead["company_size"])
    return str(lead[attribute])


def attribute_values(leads: pd.DataFrame, attribute: str) -> pd.Series:
    """`lead_value` for every lead row (columns of raw.leads)."""
    return leads["company_size"].map(size_band) if attribute == "size_band" else leads[attribute].astype(str)


@dataclass(frozen=True)
class SplitRule:
    """Leads whose `attribute` is one of `values` are the part "in", the others "out"."""

    attribute: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.attribute}={'|'.join(self.values)}"

    @classmethod
    def from_name(cls, name: str) -> SplitRule:
        if not name.startswith(PREFIX) or "=" not in name:
            raise ValueError(f"not a split rule: {name!r}")
        attribute, values = name[len(PREFIX) :].split("=", 1)
        return cls(attribute, tuple(values.split("|")))

    def part(self, lead: Mapping[str, Any]) -> str:
        return "in" if lead_value(lead, self.attribute) in self.values else "out"

    def parts(self, leads: pd.DataFrame) -> pd.Series:
        """In or out, for each lead row (columns of raw.leads)."""
        inside = attribute_values(leads, self.attribute).isin(self.values)
        return pd.Series(np.where(inside, "in", "out"), index=leads.index)


def part_segment(segment: str, part: str) -> str:
    """The name a part of a split segment learns under (its own angle posteriors)."""
    return f"{segment}{PART_SEPARATOR}{part}"


# ---------------------------------------------------------------- finding a split


def _angle_counts(sends: pd.DataFrame, angles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    grouped = sends.groupby("angle").positive.agg(["size", "sum"]).reindex(angles, fill_value=0)
    return grouped["size"].to_numpy(float), grouped["sum"].to_numpy(float)


def _posterior_means(n: np.ndarray, k: np.ndarray, prior_rate: float, prior_sends: float) -> np.ndarray:
    return (k + prior_rate * prior_sends) / (n + prior_sends)


@dataclass(frozen=True)
class SplitFinding:
    segment: str
    rule: SplitRule
    p_different: float
    gain: float
    figures: dict[str, Any]


def find_split(
    sends: pd.DataFrame, segment: str, angles: list[str], prior_rate: float, prior_sends: float
) -> SplitFinding | None:
    """The most promising split of `segment` by one attribute (see the module docstring), or None.

    `sends`: mature sends with `segment`, `angle`, `positive` and the lead attributes.
    """
    mine = sends[sends.segment == segment]
    if len(mine) < 2 * MIN_PART_SENDS:
        return None
    prior = (prior_rate, prior_sends)
    pooled = _posterior_means(*_angle_counts(mine, angles), *prior)
    pooled_best, pooled_angle = float(pooled.max()), angles[int(pooled.argmax())]
    scanned = [a for a in SPLIT_ATTRIBUTES if (a if a != "size_band" else "company_size") in mine]
    required = 1 - (1 - MIN_P_DIFFERENT) / max(1, len(scanned))
    findings = []
    for attribute in scanned:
        values = attribute_values(mine, attribute)
        level_best = {
            level: angles[int(_posterior_means(*_angle_counts(group, angles), *prior).argmax())]
            for level, group in mine.groupby(values)
        }
        inside = tuple(sorted(level for level, angle in level_best.items() if angle != pooled_angle))
        if inside and len(inside) < len(level_best):
            findings.append(_judge(mine, values.isin(inside), SplitRule(attribute, inside), segment, angles, prior, pooled_best))
    usable = [f for f in findings if f is not None and f.p_different >= required and f.gain >= MIN_GAIN]
    return max(usable, key=lambda f: f.gain, default=None)


def _judge(
    sends: pd.DataFrame,
    is_in: pd.Series,
    rule: SplitRule,
    segment: str,
    angles: list[str],
    prior: tuple[float, float],
    pooled_best: float,
) -> SplitFinding | None:
    """The rule's two parts: their best angles, P(they differ) and the gain of learning them apart;
    None when a part is too thin to say."""
    parts = {"in": sends[is_in], "out": sends[~is_in]}
    if (
        min(len(p) for p in parts.values()) < MIN_PART_SENDS
        or min(int(p.positive.sum()) for p in parts.values()) < MIN_PART_POSITIVE
    ):
        return None
    prior_rate, prior_sends = prior
    rng = np.random.default_rng(seed_for("segment_split", segment, rule.name))
    best_draws, means, figures = {}, {}, {}
    for part, group in parts.items():
        n, k = _angle_counts(group, angles)
        alpha, beta = k + prior_rate * prior_sends, n - k + (1 - prior_rate) * prior_sends
        best_draws[part] = rng.beta(alpha[:, None], beta[:, None], size=(len(angles), _DRAWS)).argmax(axis=0)
        means[part] = _posterior_means(n, k, prior_rate, prior_sends)
        figures[part] = {
            "mature_sends": int(n.sum()),
            "angles": {a: {"sends": int(n[i]), "positive_replies": int(k[i])} for i, a in enumerate(angles)},
            "best_angle": angles[int(means[part].argmax())],
        }
    p_different = float((best_draws["in"] != best_draws["out"]).mean())
    gain = float(sum(len(parts[p]) * means[p].max() for p in parts) / len(sends) / pooled_best - 1)
    figures |= {"p_best_angles_differ": round(p_different, 4), "expected_gain": round(gain, 4)}
    return SplitFinding(segment, rule, p_different, gain, figures)


# ---------------------------------------------------------------- proposing


def _open_split_segments(experiments: Iterable[Experiment]) -> set[str]:
    return {s for e in experiments if e.kind == "segment_split" and e.state in OPEN_STATES for s in e.target_segments}


def propose_splits(spec: CampaignSpec, evidence: Evidence, splits: Mapping[str, str], at: datetime) -> list[Experiment]:
    """A segment-split experiment for each segment where a split is found, has none yet (`splits`: the loop
    state's segment -> rule name) and has no split experiment open."""
    busy = _open_split_segments(evidence.experiments)
    angles = [a.name for a in spec.angles]
    proposals = []
    for segment in (s.name for s in spec.segments):
        if segment in busy or segment in splits:
            continue
        alloc = spec.allocation
        finding = find_split(evidence.sends, segment, angles, alloc.prior_positive_rate, alloc.prior_sends)
        if finding is not None:
            proposals.append(split_experiment(spec, evidence, finding, at))
    return proposals


def split_experiment(spec: CampaignSpec, evidence: Evidence, finding: SplitFinding, at: datetime) -> Experiment:
    rule, figures = finding.rule, finding.figures
    return design_experiment(
        spec,
        evidence,
        kind="segment_split",
        control=POOLED,
        challenger=rule.name,
        segments=[finding.segment],
        hypothesis=(
            f"In {finding.segment}, leads with {rule.attribute} in {', '.join(rule.values)} answer "
            f"{figures['in']['best_angle']} best and the others {figures['out']['best_angle']}: learning the two parts "
            f"apart earns about {finding.gain:.0%} more positive replies per send than one allocation "
            f"(P(their best angles differ) = {finding.p_different:.2f})"
        ),
        figures={
            "source": "segment split statistics",
            "attribute": rule.attribute,
            "values": list(rule.values),
            "parts": {k: figures[k] for k in ("in", "out")},
            "p_best_angles_differ": figures["p_best_angles_differ"],
            "expected_gain": figures["expected_gain"],
        },
        proposed_by=SPLIT_PROPOSER,
        at=at,
    )


def part_performance(sends: pd.DataFrame, rules: Mapping[str, SplitRule]) -> pd.DataFrame:
    """Per part of each split segment (`part_segment` names) and arm: what `arm_performance` counts for a
    segment, from the part's own leads' sends (`learning.marts.known_send_outcomes` rows)."""
    mine = sends[sends["segment"].isin(rules)]
    if mine.empty:
        return arm_performance(mine)
    parts = pd.concat([rules[segment].parts(group) for segment, group in mine.groupby("segment")])
    named = mine["segment"] + PART_SEPARATOR + parts.reindex(mine.index)
    return arm_performance(mine.assign(segment=named))


def split_performance(
    con: duckdb.DuckDBPyConnection, campaign_id: str, before: date, rules: Mapping[str, SplitRule]
) -> pd.DataFrame | None:
    """`part_performance` of the campaign's known sends, read only when some segment is split (None otherwise)."""
    return part_performance(known_send_outcomes(con, campaign_id, before), rules) if rules else None
