"""The content line in `factory demo`: its day after the outreach line's, and what it did in a few lines."""

from datetime import date

import dagster as dg

from factory_dagster.content.assets import content_spec
from factory_dagster.content.experiments import KIND
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

CONTENT_JOB = "content_line"


def run_content_day(defs: dg.Definitions, instance: dg.DagsterInstance, day: date, run_config: dict) -> list[str]:
    """Run the content line's day; a line saying what it made, or why it failed (the outreach line goes on)."""
    result = defs.resolve_job_def(CONTENT_JOB).execute_in_process(
        partition_key=day.isoformat(), instance=instance, run_config=run_config, raise_on_error=False
    )
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        return [f"content line FAILED at {', '.join(failed) or 'start'} (see the content_line run in make ui)"]
    made = {k: v.value for m in result.asset_materializations_for_node("content_pieces") for k, v in m.metadata.items()}
    return [
        f"content line: {made.get('briefs', 0)} briefs, {made.get('variants', 0)} variants, "
        f"{made.get('flagged_by_gate', 0)} flagged by the gate, {made.get('auto_approved', 0)} approved by the line, "
        f"{made.get('waiting_for_a_person', 0)} waiting for a person"
    ]


def content_summary(paths: Paths) -> list[str]:
    """What the content line made, published and heard back over the demo's days."""
    spec = content_spec()
    with connect(paths.warehouse, read_only=True) as con:
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
    waiting = variants - sum(decisions.values())
    rate = f"{clicks / impressions:.2%}" if impressions else "-"
    return [
        f"content line ({spec.content_id}): {pieces} pieces, {variants} variants, {flagged} flagged by the gate; "
        f"{decisions.get('auto_approve', 0)} approved by the line, {waiting} waiting for a person (factory content list)",
        f"content engagement: {int(impressions):,} impressions, {int(clicks):,} clicks ({rate}); "
        f"{quarantined} export rows quarantined with a reason",
        f"content experiments: {sum(tests.values())} pieces tested their variants; {tests.get('promoted', 0)} promoted a "
        f"challenger, {tests.get('retired', 0)} kept the first variant, {tests.get('rolled_back', 0)} rolled back, "
        f"{tests.get('running', 0)} still running",
    ]
