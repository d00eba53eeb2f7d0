"""Experiments as data, and the lifecycle they move through.

An `Experiment` is a frozen record of one design: what changes (kind, control, challengers), where
(segments, maximum traffic share), how it is judged (primary metric, guardrails, minimum detectable
effect, planned sample size, stopping rule) and why it was proposed (hypothesis, motivating
figures). It never changes in place: `transition` returns the next version plus the
`ExperimentEvent` that explains the move, so `raw.experiments` can hold the latest version and
`raw.experiment_events` the append-only history of who or what moved it, when, why and on what
evidence.

Lifecycle: proposed → approved | rejected; approved → running; running → promoted | retired
(concluded) | rolled_back. Rejected, promoted, retired and rolled_back are final, so a concluded
experiment's final look can never be repeated (which the stopping rule in `stats` relies on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from factory_dagster.improve.stats import DEFAULT_RULE, Decision, Guardrail, StoppingRule, planned_sample_size

Kind = Literal["prompt_version", "hook", "segment_split", "routing", "allocation_policy", "content_variants"]
State = Literal["proposed", "approved", "rejected", "running", "promoted", "retired", "rolled_back"]

# content_variants: the variants of one content piece, its audience split by the content line's allocation.
KINDS: tuple[str, ...] = ("prompt_version", "hook", "segment_split", "routing", "allocation_policy", "content_variants")
STATES: tuple[str, ...] = ("proposed", "approved", "rejected", "running", "promoted", "retired", "rolled_back")
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "proposed": frozenset({"approved", "rejected"}),
    "approved": frozenset({"running"}),
    "running": frozenset({"promoted", "retired", "rolled_back"}),
    "rejected": frozenset(),
    "promoted": frozenset(),
    "retired": frozenset(),
    "rolled_back": frozenset(),
}
OPEN_STATES = frozenset({"proposed", "approved", "running"})
CONCLUDED_STATES = frozenset({"promoted", "retired"})

AUTO_APPROVER = "auto-approved by policy"
NEVER_AUTO_APPROVED = frozenset({"segment_split", "routing"})  # they change who gets what, or what it costs: a person decides
_DECISION_STATES = {"promote": "promoted", "retire": "retired", "roll_back": "rolled_back"}


class IllegalTransition(ValueError):
    """A lifecycle move the state machine does not allow."""


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _utc(at: datetime) -> datetime:
    """Naive UTC, as the warehouse's TIMESTAMP columns store it; an aware time is converted."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


@dataclass(frozen=True)
class Experiment:
    """One experiment design and where it stands. Build new ones with `propose`."""

    experiment_id: str
    campaign_id: str
    kind: str
    hypothesis: str
    control: str
    challengers: tuple[str, ...]
    target_segments: tuple[str, ...]
    primary_metric: str
    guardrails: tuple[Guardrail, ...]
    max_traffic_share: float  # of each target segment, all challengers together
    base_rate: float  # the segments' own primary-metric rate the power calculation used
    mde: float  # minimum detectable effect, relative (0.2 = +20%)
    alpha: float
    power: float
    planned_sample_size: int  # mature sends per arm
    stopping_rule: StoppingRule
    motivating_figures: dict[str, Any] = field(hash=False)
    proposed_by: str
    proposed_at: datetime
    state: str = "proposed"
    winner: str | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.state not in STATES:
            problems.append(f"state {self.state!r} is not one of {', '.join(STATES)}")
        for name in ("experiment_id", "campaign_id", "hypothesis", "control", "primary_metric", "proposed_by"):
            if not str(getattr(self, name)).strip():
                problems.append(f"{name} is empty")
        if not self.challengers:
            problems.append("no challenger")
        if len(set(self.challengers)) != len(self.challengers) or self.control in self.challengers:
            problems.append("challengers must be distinct and differ from the control")
        if not self.target_segments:
            problems.append("no target segment")
        if not 0.0 < self.max_traffic_share <= 1.0:
            problems.append(f"max traffic share {self.max_traffic_share} is not in (0, 1]")
        if self.planned_sample_size < 1:
            problems.append("planned sample size must be >= 1")
        metrics = [g.metric for g in self.guardrails]
        if len(set(metrics)) != len(metrics) or self.primary_metric in metrics:
            problems.append("guardrail metrics must be distinct and differ from the primary metric")
        if (problem := _json_problem(self.motivating_figures)) is not None:
            problems.append(f"motivating figures are not JSON: {problem}")
        if (self.state == "promoted") != (self.winner is not None) or (
            self.winner is not None and self.winner not in self.challengers
        ):
            problems.append(f"winner {self.winner!r} must be one of the challengers exactly when the experiment is promoted")
        if problems:
            raise ValueError(f"experiment {self.experiment_id or '?'}: " + "; ".join(problems))

    @property
    def design_key(self) -> str:
        """Same change in the same place judged the same way: for spotting duplicate proposals."""
        return design_key(self.campaign_id, self.kind, self.control, self.challengers, self.target_segments, self.primary_metric)

    @property
    def layer(self) -> str:
        """The traffic layer: a routing canary changes the model, a hook experiment the opening of one
        angle's messages, a segment split how angles are chosen, the other kinds the message as a whole,
        so one of each can run in a segment at once, drawn independently (a factorial design); two of
        one layer would split the same leads and each change the other's control. A content piece's
        variant test splits the piece's own audience, never leads."""
        layers = {"routing": "routing", "hook": "hook", "segment_split": "split", "content_variants": "content"}
        return layers.get(self.kind, "message")

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_record(self) -> dict[str, Any]:
        """The row for `raw.experiments` (nested parts as JSON text)."""
        return {
            "experiment_id": self.experiment_id,
            "campaign_id": self.campaign_id,
            "design_key": self.design_key,
            "kind": self.kind,
            "state": self.state,
            "hypothesis": self.hypothesis,
            "control": self.control,
            "challengers": list(self.challengers),
            "target_segments": list(self.target_segments),
            "primary_metric": self.primary_metric,
            "guardrails_json": json.dumps([g.to_dict() for g in self.guardrails], sort_keys=True),
            "max_traffic_share": self.max_traffic_share,
            "base_rate": self.base_rate,
            "mde": self.mde,
            "alpha": self.alpha,
            "power": self.power,
            "planned_sample_size": self.planned_sample_size,
            "stopping_rule_json": json.dumps(self.stopping_rule.to_dict(), sort_keys=True),
            "motivating_figures_json": json.dumps(self.motivating_figures, sort_keys=True),
            "winner": self.winner,
            "proposed_by": self.proposed_by,
            "proposed_at": self.proposed_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Experiment:
        """The experiment a `to_record` row describes (extra columns such as run_id are ignored),
        so the warehouse's latest version can be moved on through `transition` again."""
        return cls(
            experiment_id=record["experiment_id"],
            campaign_id=record["campaign_id"],
            kind=record["kind"],
            hypothesis=record["hypothesis"],
            control=record["control"],
            challengers=tuple(record["challengers"]),
            target_segments=tuple(record["target_segments"]),
            primary_metric=record["primary_metric"],
            guardrails=tuple(Guardrail(**g) for g in json.loads(record["guardrails_json"])),
            max_traffic_share=record["max_traffic_share"],
            base_rate=record["base_rate"],
            mde=record["mde"],
            alpha=record["alpha"],
            power=record["power"],
            planned_sample_size=record["planned_sample_size"],
            stopping_rule=StoppingRule(**json.loads(record["stopping_rule_json"])),
            motivating_figures=json.loads(record["motivating_figures_json"]),
            proposed_by=record["proposed_by"],
            proposed_at=record["proposed_at"],
            state=record["state"],
            winner=record["winner"],
            updated_at=record["updated_at"],
        )


def design_key(
    campaign_id: str, kind: str, control: str, challengers: Sequence[str], segments: Sequence[str], primary_metric: str
) -> str:
    return "dsg_" + _digest(campaign_id, kind, control, ",".join(sorted(challengers)), ",".join(sorted(segments)), primary_metric)


def propose(
    *,
    campaign_id: str,
    kind: str,
    hypothesis: str,
    control: str,
    challengers: Sequence[str],
    target_segments: Sequence[str],
    primary_metric: str,
    base_rate: float,
    mde: float,
    guardrails: Sequence[Guardrail] = (),
    max_traffic_share: float,
    motivating_figures: Mapping[str, Any],
    proposed_by: str,
    at: datetime,
    stopping_rule: StoppingRule = DEFAULT_RULE,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Experiment:
    """A new proposed experiment, its planned sample size from the power calculation at `base_rate`.

    The id is content-derived (design and proposal day), so a re-run of the same day proposes the
    same experiment rather than a second one. For canaries (a non-inferiority stopping rule) pass
    the margin as `mde`: the sample then resolves a difference of the margin's size.
    """
    at = _utc(at)
    key = design_key(campaign_id, kind, control, challengers, target_segments, primary_metric)
    return Experiment(
        experiment_id="exp_" + _digest(key, at.date().isoformat()),
        campaign_id=campaign_id,
        kind=kind,
        hypothesis=hypothesis,
        control=control,
        challengers=tuple(challengers),
        target_segments=tuple(target_segments),
        primary_metric=primary_metric,
        guardrails=tuple(guardrails),
        max_traffic_share=max_traffic_share,
        base_rate=base_rate,
        mde=mde,
        alpha=alpha,
        power=power,
        planned_sample_size=planned_sample_size(base_rate, mde, alpha, power),
        stopping_rule=stopping_rule,
        motivating_figures=dict(motivating_figures),
        proposed_by=proposed_by,
        proposed_at=at,
        updated_at=at,
    )


@dataclass(frozen=True)
class ExperimentEvent:
    """One lifecycle move: the row for the append-only `raw.experiment_events`."""

    event_id: str
    experiment_id: str
    campaign_id: str
    from_state: str
    to_state: str
    actor: str  # a person, the decision step, or AUTO_APPROVER
    reason: str
    evidence: dict[str, Any] = field(hash=False)
    at: datetime

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "experiment_id": self.experiment_id,
            "campaign_id": self.campaign_id,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "actor": self.actor,
            "reason": self.reason,
            "evidence_json": json.dumps(self.evidence, sort_keys=True),
            "at": self.at,
        }


def transition(
    experiment: Experiment, to_state: str, actor: str, reason: str, evidence: Mapping[str, Any], at: datetime
) -> tuple[Experiment, ExperimentEvent]:
    """Move an experiment to `to_state`; the new version plus the event recording who, when, why and on what.

    Raises `IllegalTransition` for a move the lifecycle does not allow, and ValueError for a move
    without an actor or reason, with evidence that is not JSON, or a promotion that names no
    challenger as `evidence["winner"]`.
    """
    name = experiment.experiment_id
    if to_state not in STATES:
        raise IllegalTransition(f"experiment {name}: unknown state {to_state!r}; states are {', '.join(STATES)}")
    allowed = TRANSITIONS[experiment.state]
    if to_state not in allowed:
        options = f"allowed from {experiment.state}: {', '.join(sorted(allowed))}" if allowed else f"{experiment.state} is final"
        raise IllegalTransition(f"experiment {name}: cannot move from {experiment.state} to {to_state} ({options})")
    if not actor.strip() or not reason.strip():
        raise ValueError(f"experiment {name}: moving to {to_state} needs an actor and a reason")
    evidence = dict(evidence)
    if (problem := _json_problem(evidence)) is not None:
        raise ValueError(f"experiment {name}: evidence must be JSON-able ({problem})")
    winner = evidence.get("winner") if to_state == "promoted" else None
    if to_state == "promoted" and winner not in experiment.challengers:
        raise ValueError(
            f"experiment {name}: a promotion must name one of {list(experiment.challengers)} as evidence['winner'], got {winner!r}"
        )
    at = _utc(at)
    event = ExperimentEvent(
        event_id="exe_" + _digest(name, experiment.state, to_state, at.isoformat()),
        experiment_id=name,
        campaign_id=experiment.campaign_id,
        from_state=experiment.state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        evidence=evidence,
        at=at,
    )
    return replace(experiment, state=to_state, winner=winner, updated_at=at), event


def conclude(experiment: Experiment, decision: Decision, at: datetime) -> tuple[Experiment, ExperimentEvent] | None:
    """Apply the decision step's verdict to a running experiment; None when it says continue."""
    to_state = _DECISION_STATES.get(decision.action)
    if to_state is None:
        return None
    evidence = {**decision.evidence, "winner": decision.winner} if decision.winner else dict(decision.evidence)
    actor = f"decision step ({experiment.stopping_rule.version})"
    return transition(experiment, to_state, actor, "; ".join(decision.reasons), evidence, at)


# ---------------------------------------------------------------- auto-approval


@dataclass(frozen=True)
class AutoApproval:
    allowed: bool
    reason: str


def auto_approve_policy_problems(policy: Mapping[str, Any]) -> list[str]:
    """What is wrong with a spec's auto-approve policy ({kind: {max_share: x}}), for the spec loader."""
    problems = []
    for kind, rule in policy.items():
        if kind not in KINDS:
            problems.append(f"auto_approve: unknown experiment kind {kind!r} (kinds: {', '.join(KINDS)})")
        elif kind in NEVER_AUTO_APPROVED:
            problems.append(f"auto_approve: {kind} experiments always need a person and cannot be auto-approved")
        share = rule.get("max_share") if isinstance(rule, Mapping) else None
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share <= 1.0:
            problems.append(f"auto_approve.{kind}: max_share must be a number in (0, 1], got {share!r}")
    return problems


def auto_approval(experiment: Experiment, policy: Mapping[str, Any]) -> AutoApproval:
    """May this proposed experiment start without a person, under the spec's policy? And why (not)."""
    if problems := auto_approve_policy_problems(policy):
        raise ValueError("; ".join(problems))
    kind, share = experiment.kind, experiment.max_traffic_share
    if experiment.state != "proposed":
        return AutoApproval(False, f"only a proposed experiment can be approved; this one is {experiment.state}")
    if kind in NEVER_AUTO_APPROVED:
        return AutoApproval(False, f"{kind} experiments always need a person")
    if kind not in policy:
        return AutoApproval(False, f"the policy does not auto-approve {kind} experiments")
    limit = float(policy[kind]["max_share"])
    if share > limit:
        return AutoApproval(False, f"{kind} at {share:.0%} of traffic is over the auto-approved {limit:.0%}")
    # A design that cannot reach its planned sample before its stopping rule retires it would spend
    # its traffic on a foregone "retire": whether that is worth it is a person's call.
    days, max_days = experiment.motivating_figures.get("days_to_planned_sample"), experiment.stopping_rule.max_days
    if days is not None and days > max_days:
        return AutoApproval(
            False,
            f"at today's volume its planned sample takes {days} days, past the rule's {max_days}-day limit: "
            "a person decides whether so long a test is worth its traffic",
        )
    return AutoApproval(True, f"{kind} at {share:.0%} of traffic is within the auto-approved {limit:.0%}")


def auto_approve(experiment: Experiment, policy: Mapping[str, Any], at: datetime) -> tuple[Experiment, ExperimentEvent] | None:
    """Approve without a person when the policy allows it, recorded as AUTO_APPROVER; None otherwise."""
    verdict = auto_approval(experiment, policy)
    if not verdict.allowed:
        return None
    evidence = {
        "policy": {k: dict(v) for k, v in policy.items()},
        "kind": experiment.kind,
        "max_traffic_share": experiment.max_traffic_share,
    }
    return transition(experiment, "approved", AUTO_APPROVER, verdict.reason, evidence, at)
