"""Asking the premium model for something the improve stage proposes: a draft prompt, a hook.

Why one function: every writing request has the same contract. It is retried a bounded number of
times with a new seed, a call the budget defers ends the attempts at once, and an answer that does
not parse or breaks a rule is said in words, never stored and never a failed run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from factory_dagster.models.gateway import DEFERRED, CallRequest, ModelGateway
from factory_dagster.models.prompts import build_messages

IMPROVE_STAGE = "improve"
IMPROVE_ATTEMPTS = 2

Answer = TypeVar("Answer", bound=BaseModel)


@dataclass(frozen=True)
class Written(Generic[Answer]):
    """A usable answer and the call that gave it."""

    answer: Answer
    model: str
    call_id: str | None


def parse_answer(text: str, shape: type[Answer], what: str) -> tuple[Answer | None, list[str]]:
    """The answer in `shape`, or why it is not one."""
    try:
        return shape.model_validate_json(text), []
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "top level"
        return None, [f"not {what}: {problem['msg']} at {where}: {text[:120]!r}"]


def ask_premium(
    gateway: ModelGateway,
    prompt_version: str,
    brief: Mapping[str, Any],
    shape: type[Answer],
    problems_of: Callable[[str], tuple[Answer | None, list[str]]],
) -> tuple[Written[Answer] | None, list[str]]:
    """Ask stage `improve` with `prompt_version` for an answer `problems_of` accepts; (None, why) when none was usable."""
    messages = build_messages(prompt_version, dict(brief))
    problems: list[str] = []
    for seed in range(IMPROVE_ATTEMPTS):
        result = gateway.complete(CallRequest(IMPROVE_STAGE, prompt_version, messages, seed=seed, response_model=shape))
        if result.status == DEFERRED:
            return None, [*problems, "the daily model budget is spent"]
        if result.status not in {"ok", "invalid"}:
            problems.append(f"attempt {seed + 1}: model call {result.status}" + (f": {result.error}" if result.error else ""))
            continue
        answer, wrong = problems_of(result.text)
        if answer is None or wrong:
            problems.append(f"attempt {seed + 1} ({result.model}): " + "; ".join(wrong))
            continue
        return Written(answer, result.model, result.call_id), []
    return None, problems
