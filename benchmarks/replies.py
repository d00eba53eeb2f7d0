"""Reply classification: accuracy and cost per reply on the labelled set, with the offline models.

The shipped labelled set (`factory_dagster/replies/data/labelled_replies.csv`, 534 replies in five
languages; how it was built, and its held-out history, in `factory_dagster/replies/labelled.py`) goes
through `classify_replies` exactly as the line would call it: the shipped spec and registry with no API key (the offline stand-ins, at the prices of the models they stand for), one
`ModelGateway`, the spec's unsubscribe footer as our own text. Reported: macro-F1 (goal ≥ 0.9),
unsubscribe recall (goal 1.0), cost per reply (every ledger row, cheap and premium, over all
replies), per-class precision/recall/F1, the confusion matrix, how many replies rules, the cheap
model and the premium model decided, macro-F1 on each half of the set (reply_id parity) and per
language, the misclassified replies, and the trade-off at other escalation thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import load_spec
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.replies.classify import ClassifySettings, classify_replies
from factory_dagster.replies.labelled import load_labelled, split
from factory_dagster.replies.metrics import classification_scores
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH

DAY = date(2026, 3, 16)
NO_KEY: Mapping[str, str] = {}  # every configured model is served by its offline stand-in
TARGETS = {"macro_f1": 0.9, "unsubscribe_recall": 1.0}
OTHER_THRESHOLDS = (0.0, 0.6, 0.9, 1.0)  # 0: never escalate; 1: escalate every answer short of certain


def _classify(frame: pd.DataFrame, escalate_below: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    spec, registry = load_spec(DEFAULT_SPEC_PATH), load_registry()
    run = RunContext(f"bench-replies-{escalate_below}", DAY, spec.campaign_id)
    gateway = ModelGateway(registry, resolve_routes(spec, registry, NO_KEY), run, environ=NO_KEY)
    settings = ClassifySettings(escalate_below=escalate_below, own_texts=(spec.required.unsubscribe_footer,))
    started = time.perf_counter()
    classified = classify_replies(gateway, run, frame, settings)
    return classified, gateway.ledger(), time.perf_counter() - started


def measure(frame: pd.DataFrame, escalate_below: float) -> dict[str, Any]:
    """Every figure of one pass over `frame` at one escalation threshold."""
    classified, ledger, wall_s = _classify(frame, escalate_below)
    predicted = classified.set_index("reply_id")["class"].reindex(frame.reply_id)
    scores = classification_scores(frame.label.tolist(), predicted.tolist())
    cost = float(ledger.cost_usd.sum()) if not ledger.empty else 0.0
    odd, even = split(frame)
    by_language = {
        language: classification_scores(part.label.tolist(), predicted.loc[part.reply_id].tolist())["macro_f1"]
        for language, part in frame.groupby("language")
    }
    wrong = frame.assign(predicted=predicted.values, decided_by=classified.decided_by.values)
    wrong = wrong[wrong.predicted != wrong.label]
    stages = ledger.stage.value_counts().to_dict() if not ledger.empty else {}
    return {
        "rows": len(frame),
        "escalate_below": escalate_below,
        "macro_f1": scores["macro_f1"],
        "accuracy": scores["accuracy"],
        "unsubscribe_recall": scores["per_class"]["unsubscribe"]["recall"],
        "cost_per_reply_usd": round(cost / len(frame), 8),
        "cost_usd": round(cost, 6),
        "per_class": scores["per_class"],
        "confusion": scores["confusion"],
        "decided_by": classified.decided_by.value_counts().to_dict(),
        "rules_fired": classified.rule.dropna().value_counts().to_dict(),
        "model_calls": {"classify": int(stages.get("classify", 0)), "classify_escalate": int(stages.get("classify_escalate", 0))},
        "unclassified": int(classified["class"].isna().sum()),
        "macro_f1_odd_half": classification_scores(odd.label.tolist(), predicted.loc[odd.reply_id].tolist())["macro_f1"],
        "macro_f1_even_half": classification_scores(even.label.tolist(), predicted.loc[even.reply_id].tolist())["macro_f1"],
        "macro_f1_by_language": by_language,
        "misclassified": [
            {
                "reply_id": r.reply_id,
                "language": r.language,
                "label": r.label,
                "predicted": r.predicted,
                "decided_by": r.decided_by,
            }
            for r in wrong.itertuples()
        ],
        "wall_s": round(wall_s, 3),
    }


def run() -> dict[str, Any]:
    frame = load_labelled()
    figures = measure(frame, ClassifySettings().escalate_below)
    figures["targets"] = dict(TARGETS)
    figures["meets_targets"] = figures["macro_f1"] >= TARGETS["macro_f1"] and figures["unsubscribe_recall"] >= 1.0
    figures["other_thresholds"] = {
        str(t): {
            k: v
            for k, v in measure(frame, t).items()
            if k in ("macro_f1", "unsubscribe_recall", "cost_per_reply_usd", "model_calls")
        }
        for t in OTHER_THRESHOLDS
    }
    figures["models"] = (
        "offline stand-ins (no API key): classify offline-cheap (for gpt-4o-mini), classify_escalate offline-premium (for gpt-4o)"
    )
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, ensure_ascii=False))
