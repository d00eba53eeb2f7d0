"""Shared builders for the pure-logic tests: the example spec, registries, gateways, leads and work rows.

Everything here uses the real modules (spec loader, offline models, gateway, planner, drafting);
nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from functools import cache
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.drafting.draft import draft_brief
from factory_dagster.models.gateway import CallRequest, ModelGateway
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.registry import ModelRegistry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, parse_plan, plan_brief
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH

DAY = dt.date(2026, 3, 2)

# Names a real CRM export holds: accents (also decomposed), apostrophes, hyphens, spaces.
FIRST_NAMES: tuple[str, ...] = (
    "Anna",
    "José",
    "Zoë",
    unicodedata.normalize("NFD", "Chloé"),
    "Siobhán",
    "Jürgen",
    "Łukasz",
    "Søren",
    "Björn",
    "O'Brien",
    "D'Arcy",
    "Jean-Luc",
    "Anne-Marie",
    "Mary Ann",
    "Nguyễn",
    "Ólafur",
    "Renée",
    "Kai",
    "Li",
    "Oliver",
)
LAST_NAMES: tuple[str, ...] = ("Berg", "O'Neill", "García-López", "Müller", "van der Berg", "Smith")
# Companies with digits, capitals, punctuation and common words.
COMPANIES: tuple[str, ...] = (
    "3D Systems",
    "ACME Ltd",
    "Northwind Labs AB",
    "Müller & Söhne GmbH",
    "O'Brien Logistics",
    "Hewlett-Packard",
    "Studio 54",
    "Web 2.0 Labs",
    "X.Y. Partners",
    "IBM",
    "Contoso",
    "Fabrikam Inc.",
    "L'Atelier Finance",
    "Zürich Re Services",
    "Tailspin Toys",
    "24/7 Ledger Co",
)
INDUSTRIES: tuple[str, ...] = ("Software", "Fintech", "Manufacturing", "Logistics", "Retail", "Healthcare")
SENIORITIES: tuple[str, ...] = ("C-level", "VP", "Director", "Manager")
SIZES: tuple[int, ...] = (30, 120, 800, 2500)


# The offline line: the shipped registry's offline models (what serves every stage without an API key).
OFFLINE_ROUTING = {
    "plan": "offline-premium",
    "draft": "offline-cheap",
    "repair": "offline-cheap",
    "escalate": "offline-premium",
    "audit": "offline-premium",
    "improve": "offline-premium",
    "classify": "offline-cheap",
    "classify_escalate": "offline-premium",
}


@cache
def example_spec() -> CampaignSpec:
    """The example campaign, routed to the offline models."""
    return load_spec(DEFAULT_SPEC_PATH).model_copy(update={"routing": OFFLINE_ROUTING})


def registry(cheap: float = 0.15, premium: float = 0.01) -> ModelRegistry:
    return ModelRegistry.model_validate(
        {
            "models": {
                "offline-cheap": {
                    "provider": "offline",
                    "tier": "cheap",
                    "input_per_mtok": 0.15,
                    "output_per_mtok": 0.60,
                    "defect_rate": cheap,
                },
                "offline-premium": {
                    "provider": "offline",
                    "tier": "premium",
                    "input_per_mtok": 2.50,
                    "output_per_mtok": 10.00,
                    "defect_rate": premium,
                },
            }
        }
    )


def gateway(reg: ModelRegistry, run_id: str = "run-test", day: dt.date = DAY, campaign_id: str | None = None) -> ModelGateway:
    """A gateway over `reg`, routed as the example spec routes offline (no API key in its environment)."""
    routes = resolve_routes(example_spec(), reg, environ={})
    run = RunContext(run_id=run_id, partition_day=day, campaign_id=campaign_id or example_spec().campaign_id)
    return ModelGateway(reg, routes, run, environ={})


def offline_plan(spec: CampaignSpec) -> pd.DataFrame:
    """The premium offline planner's plan for the spec (no performance history)."""
    gw = gateway(registry(premium=0.0), campaign_id=spec.campaign_id)
    messages = build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, pd.DataFrame()))
    return parse_plan(gw.complete(CallRequest("plan", PLAN_PROMPT_VERSION, messages)).text)


def make_leads(n: int, spec: CampaignSpec | None = None) -> list[dict[str, Any]]:
    """n leads cycling through the name/company/industry lists, each with its spec segment."""
    spec = spec or example_spec()
    leads = []
    for i in range(n):
        lead = {
            "lead_id": f"lead_{i:05d}",
            "email": f"person{i}@company{(i // 2) % len(COMPANIES)}.example",  # the company's own domain
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
            "last_name": LAST_NAMES[(i // 3) % len(LAST_NAMES)],
            "company": COMPANIES[(i // 2) % len(COMPANIES)],
            "role": "Head of Finance",
            "industry": INDUSTRIES[i % len(INDUSTRIES)],
            "seniority": SENIORITIES[(i // 5) % len(SENIORITIES)],
            "company_size": SIZES[(i // 7) % len(SIZES)],
            "region": "DACH",
            "note": "",
        }
        lead["segment"] = spec.segment_for(lead)
        leads.append(lead)
    return leads


def work_frame(spec: CampaignSpec, leads: list[dict[str, Any]], plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows shaped like `drafting.work.unsent_work`: the lead, its arm, and the plan's hook and claims."""
    plan = offline_plan(spec) if plan is None else plan
    by_key = {(r.segment, r.angle): r for r in plan.itertuples()}
    angles = [a.name for a in spec.angles]
    versions = spec.drafting.prompt_versions
    model = spec.routing["draft"]
    rows = []
    for i, lead in enumerate(leads):
        angle = angles[i % len(angles)]
        version = versions[(i // len(angles)) % len(versions)]
        planned = by_key[(lead["segment"], angle)]
        rows.append(
            {
                **{k: lead[k] for k in ("lead_id", "segment", "email", "first_name", "last_name", "company", "role")},
                **{k: lead[k] for k in ("industry", "note")},
                "arm_id": f"{angle}|{version}|{model}",
                "angle": angle,
                "prompt_version": version,
                "model": model,
                "hook": planned.hook,
                "claims": list(planned.claims),
            }
        )
    return pd.DataFrame(rows)


def brief_for(spec: CampaignSpec, row: Any, task: str = "draft") -> dict[str, Any]:
    """The drafting brief of one work row."""
    return {**draft_brief(spec, row.angle, row.hook, list(row.claims), row.prompt_version), "task": task}


def lead_fields(row: Any) -> dict[str, str]:
    """What check_draft needs to know about the lead."""
    return {"first_name": row.first_name, "company": row.company}
