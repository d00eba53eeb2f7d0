"""How good a classification is against true labels: per-class precision, recall and F1, macro-F1, the confusion matrix.

A reply left unclassified (quarantined) counts as a miss of its true class; it is its own column
(`unclassified`) of the confusion matrix, never a class anyone predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from factory_dagster.replies.classify import REPLY_CLASSES

UNCLASSIFIED = "unclassified"


def _ratio(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def classification_scores(
    truth: Sequence[str], predicted: Sequence[Any], classes: Sequence[str] = REPLY_CLASSES
) -> dict[str, Any]:
    """`macro_f1`, `accuracy`, `per_class` {class: precision, recall, f1, support} and `confusion` {true: {predicted: n}}."""
    truth = [str(t) for t in truth]
    predicted = [UNCLASSIFIED if p is None or pd.isna(p) else str(p) for p in predicted]
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    columns = [*classes, UNCLASSIFIED]
    confusion = {t: dict.fromkeys(columns, 0) for t in classes}
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p if p in confusion[t] else UNCLASSIFIED] += 1
    per_class = {}
    for c in classes:
        hits = confusion[c][c]
        predicted_c = sum(confusion[t][c] for t in classes)
        support = sum(confusion[c].values())
        precision, recall = _ratio(hits, predicted_c), _ratio(hits, support)
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "macro_f1": round(sum(v["f1"] for v in per_class.values()) / len(classes), 4),
        "accuracy": _ratio(sum(confusion[c][c] for c in classes), len(truth)),
        "per_class": per_class,
        "confusion": confusion,
    }
