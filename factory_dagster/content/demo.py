"""The content line in `factory demo`: its day after the outreach line's, the demo's operator working the
approval queue between the day's pieces and their publishing, and what it all did in a few lines."""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime

import dagster as dg

from factory_dagster.content.assets import content_engagement, content_pieces, content_spec
from factory_dagster.content.cli import published_folder
from factory_dagster.content.edit_proposals import KIND as PROMPT_KIND
from factory_dagster.content.experiments import KIND
from factory_dagster.content.review import OVERRIDABLE, ContentItem, ContentReviewError, approve, edit, queue, reject
from factory_dagster.content.spec import ContentSpec
from factory_dagster.improve import store as experiment_store
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

CONTENT_JOB = "content_line"
DEMO_OPERATOR = "demo operator"
Review = Callable[[date], list[str]]


def _run(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: date, run_config: dict, assets: list
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(CONTENT_JOB).execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        asset_selection=[a.key for a in assets],
    )


def run_content_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: date, run_config: dict, review: Review | None = None
) -> list[str]:
    """Run the content line's day; lines saying what it made, or why it failed (the outreach line goes on).

    With `review` (the demo's operator), the day runs as two runs: the pieces, then the person's decisions on the
    queue, then publishing and engagement, so what the person approved goes out the same day.
    """
    stages = [[content_pieces], [content_engagement]] if review else [[content_pieces, content_engagement]]
    lines: list[str] = []
    for number, assets in enumerate(stages):
        result = _run(defs, instance, day, run_config, assets)
        if not result.success:
            failed = [e.step_key for e in result.all_events if e.is_step_failure]
            return [*lines, f"content line FAILED at {', '.join(failed) or 'start'} (see the content_line run in make ui)"]
        if number == 0:
            made = {k: v.value for m in result.asset_materializations_for_node("content_pieces") for k, v in m.metadata.items()}
            lines.append(
                f"content line: {made.get('briefs', 0)} briefs, {made.get('variants', 0)} variants, "
                f"{made.get('flagged_by_gate', 0)} flagged by the gate, {made.get('auto_approved', 0)} approved by the line, "
                f"{made.get('waiting_for_a_person', 0)} waiting for a person"
            )
            lines += review(day) if review else []
    return lines


# -- the demo's operator -------------------------------------------------------------------------------------


_DANGLING = re.compile(r"(?i)[\s,;:-]+(and|or|but|with|for|the|a|an|of|to|in|on|at|by|from|as|that|this|so)$")


def fixed_text(text: str, codes: list[str], spec: ContentSpec, channel: str) -> str:
    """What a hurried editor does to a text a hard rule flagged: drop the sentences with a banned phrase (or the
    phrase, when nothing else would be left), then trim to the channel's limit at a sentence end, else at a word end
    without a dangling "and". The result goes through the gate again (`content.review.edit`)."""
    fixed = text
    if "banned_phrase" in codes:
        banned = re.compile("|".join(rf"\b{re.escape(p)}\b" for p in spec.banned_phrases), re.IGNORECASE)
        kept = [" ".join(x for x in re.split(r"(?<=[.!?])\s+", line) if not banned.search(x)) for line in fixed.split("\n")]
        if any(line.strip() for line in kept):
            fixed = "\n".join(kept).strip()
        else:  # the phrase is in the text's only sentence: cut the phrase itself
            fixed = re.sub(r"\s{2,}", " ", banned.sub("", fixed)).strip(" ,;:-")
        fixed = re.sub(r"\n{3,}", "\n\n", fixed)
    limit = spec.channel(channel).max_chars
    if len(fixed) > limit:
        cut = fixed[:limit]
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("\n"))
        fixed = cut[: end + 1].rstrip() if end > limit // 2 else cut.rsplit(" ", 1)[0]
        while _DANGLING.search(fixed):
            fixed = _DANGLING.sub("", fixed)
        fixed = fixed.rstrip(" ,;:-")
    return fixed[:1].upper() + fixed[1:]


def _decide(con, spec: ContentSpec, item: ContentItem, paths: Paths) -> str:
    """One queued variant: judgement calls approved with a reason, hard rules edited if a quick fix passes, else rejected."""
    where = {"published_dir": published_folder(paths)}
    codes = list(item.violation_codes)
    hard = [c for c in codes if c not in OVERRIDABLE]
    try:
        if not hard and item.audit_verdict != "failed":
            approve(
                con,
                spec,
                item.variant_id,
                DEMO_OPERATOR,
                f"the demo's operator accepts the judgement call ({', '.join(codes)})",
                **where,
            )
            return "approved"
        if hard:
            text = fixed_text(item.text, codes, spec, item.channel)
            if text != item.text:
                edit(con, spec, item.variant_id, text, DEMO_OPERATOR, f"fixed {', '.join(hard)}", **where)
                return "edited"
    except ContentReviewError:
        pass  # the quick fix did not pass the gate: it goes, like an audit failure
    why = f"gate: {', '.join(codes)}" if codes else f"audit: {item.audit_reasons or 'failed'}"
    reject(con, spec, item.variant_id, DEMO_OPERATOR, f"the demo's operator rejects it ({why})"[:300], **where)
    return "rejected"


def review_as_operator(paths: Paths, day: date) -> list[str]:
    """The demo plays the content editor: works the day's queue (`factory content approve|edit|reject` would do the
    same) and approves the content prompt experiments operators' edits proposed, as `factory experiments approve`."""
    spec = content_spec()
    counts: dict[str, int] = {}
    lines = []
    with open_warehouse(paths) as con:
        for item in queue(con, spec.content_id, day):
            outcome = _decide(con, spec, item, paths)
            counts[outcome] = counts.get(outcome, 0) + 1
        for experiment in experiment_store.list_experiments(con, spec.content_id, ["proposed"]):
            if experiment.kind != PROMPT_KIND:
                continue
            experiment_store.decide_by_person(
                con,
                experiment.experiment_id,
                "approve",
                DEMO_OPERATOR,
                "the demo approves every design a person must decide",
                "demo",
                datetime.now(UTC),
            )
            lines.append(
                f"the demo's operator approved {experiment.experiment_id} (content prompt from operators' edits: "
                f"{' '.join(experiment.motivating_figures.get('rules', []))})"
            )
    if counts:
        lines.insert(0, "the demo's content editor: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    return lines


def content_summary(paths: Paths) -> list[str]:
    """What the content line made, published and heard back over the demo's days."""
    spec = content_spec()
    with open_warehouse(paths, read_only=True) as con:
        pieces, variants, flagged = con.execute(
            """SELECT count(DISTINCT piece_id), count(*), count(*) FILTER (WHERE gate_verdict = 'flagged')
               FROM raw.content_pieces WHERE content_id = ?""",
            [spec.content_id],
        ).fetchone()
        decisions = dict(
            con.execute(
                """SELECT action, count(*) FROM raw.content_reviews r JOIN raw.content_pieces p USING (variant_id)
                   WHERE p.content_id = ? GROUP BY action""",
                [spec.content_id],
            ).fetchall()
        )
        impressions, clicks = con.execute(
            """SELECT coalesce(sum(value) FILTER (WHERE metric = 'impressions'), 0),
                      coalesce(sum(value) FILTER (WHERE metric = 'clicks'), 0)
               FROM raw.content_engagement e JOIN raw.content_pieces p USING (variant_id) WHERE p.content_id = ?""",
            [spec.content_id],
        ).fetchone()
        quarantined = con.execute(
            "SELECT count(*) FROM raw.content_engagement_quarantine WHERE campaign_id = ?", [spec.content_id]
        ).fetchone()[0]
        tests = dict(
            con.execute(
                "SELECT state, count(*) FROM raw.experiments WHERE campaign_id = ? AND kind = ? GROUP BY state",
                [spec.content_id, KIND],
            ).fetchall()
        )
        prompt_tests = con.execute(
            "SELECT experiment_id, state, winner FROM raw.experiments WHERE campaign_id = ? AND kind = ? ORDER BY proposed_at",
            [spec.content_id, PROMPT_KIND],
        ).fetchall()
    waiting = variants - sum(decisions.values())
    rate = f"{clicks / impressions:.2%}" if impressions else "-"
    return [
        f"content line ({spec.content_id}): {pieces} pieces, {variants} variants, {flagged} flagged by the gate; "
        f"{decisions.get('auto_approve', 0)} approved by the line; by a person {decisions.get('approve', 0)} approved, "
        f"{decisions.get('edit', 0)} edited, {decisions.get('reject', 0)} rejected; {waiting} waiting (factory content list)",
        f"content engagement: {int(impressions):,} impressions, {int(clicks):,} clicks ({rate}); "
        f"{quarantined} export rows quarantined with a reason",
        f"content experiments: {sum(tests.values())} pieces tested their variants; {tests.get('promoted', 0)} promoted a "
        f"challenger, {tests.get('retired', 0)} kept the first variant, {tests.get('rolled_back', 0)} rolled back, "
        f"{tests.get('running', 0)} still running",
        "content prompt experiments from operators' edits: "
        + (
            "; ".join(
                f"{e} {state}" + (f" ({winner} is the variants prompt)" if winner else "") for e, state, winner in prompt_tests
            )
            or "none yet"
        ),
    ]
