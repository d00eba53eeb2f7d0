"""The `raw` schema: the data contracts every Python stage writes and dbt reads.

Each table carries the ids that tie a row back to its run, day and campaign
(`run_id`, `partition_day`, `campaign_id`) plus the lead/send/model ids where they
apply. dbt declares these tables as sources; change a column here and in
`dbt_project/models/staging/_sources.yml` together.
"""

from __future__ import annotations

from typing import NamedTuple

RAW_TABLES: dict[str, str] = {
    "intake_files": """
        kind VARCHAR NOT NULL,
        file_path VARCHAR NOT NULL,
        file_sha256 VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        rows_total INTEGER NOT NULL,
        rows_accepted INTEGER NOT NULL,
        rows_quarantined INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        error VARCHAR,
        imported_at TIMESTAMP NOT NULL,
        PRIMARY KEY (kind, campaign_id, file_sha256)
    """,
    # A person may be a lead of several campaigns: one row per campaign (the lead_id is the email's hash).
    "leads": """
        lead_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        email VARCHAR NOT NULL,
        first_name VARCHAR NOT NULL,
        last_name VARCHAR,
        company VARCHAR NOT NULL,
        industry VARCHAR NOT NULL,
        company_size INTEGER NOT NULL,
        role VARCHAR NOT NULL,
        seniority VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        note VARCHAR,
        segment VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL,
        PRIMARY KEY (campaign_id, lead_id)
    """,
    "leads_quarantine": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        column_name VARCHAR,
        reason_code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        raw_record VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    "plans": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        spec_version VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        hook VARCHAR NOT NULL,
        claims VARCHAR[] NOT NULL,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "allocations": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        policy_version VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        sends INTEGER NOT NULL,
        replies INTEGER NOT NULL,
        posterior_mean DOUBLE NOT NULL,
        p_best DOUBLE NOT NULL,
        share DOUBLE NOT NULL,
        reason VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        positive_replies INTEGER,
        holdout BOOLEAN,
        experiment_id VARCHAR,
        experiment_arm VARCHAR,
        angle_share DOUBLE,
        arm_share DOUBLE,
        routing_experiment_id VARCHAR,
        routing_arm VARCHAR,
        routing_share DOUBLE,
        hook_experiment_id VARCHAR,
        hook_arm VARCHAR,
        hook_share DOUBLE,
        hook_version VARCHAR,
        split_experiment_id VARCHAR,
        split_arm VARCHAR,
        split_share DOUBLE,
        split_rule VARCHAR,
        part VARCHAR
    """,
    "assignments": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        spec_version VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        propensity DOUBLE NOT NULL,
        policy_version VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        assigned_at TIMESTAMP NOT NULL,
        experiment_id VARCHAR,
        experiment_arm VARCHAR,
        holdout BOOLEAN,
        routing_experiment_id VARCHAR,
        routing_arm VARCHAR,
        hook_experiment_id VARCHAR,
        hook_arm VARCHAR,
        hook_version VARCHAR,
        split_experiment_id VARCHAR,
        split_arm VARCHAR,
        part VARCHAR,
        PRIMARY KEY (campaign_id, lead_id)
    """,
    # stage and cost_usd are the model call's (its raw.llm_calls row), written with the draft so that dbt's
    # int_draft_jobs need not join every draft with its call (24M drafts and 25M calls at 10M events). Nullable: a
    # newer contract added them; BACKFILLS fills them on warehouses from before.
    "drafts": """
        draft_id VARCHAR NOT NULL PRIMARY KEY,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        candidate_index INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        llm_call_id VARCHAR NOT NULL,
        subject VARCHAR,
        body VARCHAR,
        parse_error VARCHAR,
        created_at TIMESTAMP NOT NULL,
        stage VARCHAR,
        cost_usd DOUBLE
    """,
    "gate_results": """
        draft_id VARCHAR NOT NULL PRIMARY KEY,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        passed BOOLEAN NOT NULL,
        violation_codes VARCHAR[] NOT NULL,
        violation_details VARCHAR[] NOT NULL,
        agreement DOUBLE NOT NULL,
        selected BOOLEAN NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "messages": """
        message_id VARCHAR NOT NULL PRIMARY KEY,
        send_id VARCHAR NOT NULL UNIQUE,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        spec_version VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        to_email VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        draft_id VARCHAR NOT NULL,
        subject VARCHAR NOT NULL,
        body VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "messages_quarantine": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        reason_codes VARCHAR[] NOT NULL,
        reason VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "audits": """
        audit_id VARCHAR NOT NULL PRIMARY KEY,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        message_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        llm_call_id VARCHAR,
        status VARCHAR NOT NULL,
        scores MAP(VARCHAR, INTEGER) NOT NULL,
        passed BOOLEAN NOT NULL,
        reasons VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "sends": """
        send_id VARCHAR NOT NULL PRIMARY KEY,
        message_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        message_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        spec_version VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        to_email VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        subject VARCHAR NOT NULL,
        body_sha256 VARCHAR NOT NULL,
        transport VARCHAR NOT NULL,
        transport_ref VARCHAR NOT NULL,
        sent_at TIMESTAMP NOT NULL,
        status VARCHAR
    """,
    "events": """
        event_id VARCHAR NOT NULL PRIMARY KEY,
        send_id VARCHAR NOT NULL,
        event_type VARCHAR NOT NULL,
        occurred_at TIMESTAMP NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        imported_at TIMESTAMP NOT NULL,
        reply_id VARCHAR,
        reply_class VARCHAR,
        reply_confidence DOUBLE,
        reply_model VARCHAR
    """,
    "events_quarantine": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        column_name VARCHAR,
        reason_code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        raw_record VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    "suppression": """
        email VARCHAR NOT NULL PRIMARY KEY,
        reason VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        added_at TIMESTAMP NOT NULL
    """,
    "llm_calls": """
        call_id VARCHAR NOT NULL PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        campaign_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        provider VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        lead_id VARCHAR,
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        cost_usd DOUBLE NOT NULL,
        latency_ms DOUBLE NOT NULL,
        status VARCHAR NOT NULL,
        mode VARCHAR NOT NULL,
        retries INTEGER NOT NULL,
        reasks INTEGER NOT NULL,
        cache_hit BOOLEAN NOT NULL,
        fallback_used BOOLEAN NOT NULL,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL
    """,
    "llm_cache": """
        cache_key VARCHAR NOT NULL PRIMARY KEY,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        response_text VARCHAR NOT NULL,
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "prompt_versions": """
        prompt_version VARCHAR NOT NULL PRIMARY KEY,
        stage VARCHAR NOT NULL,
        template_sha256 VARCHAR NOT NULL,
        template VARCHAR NOT NULL,
        first_seen_at TIMESTAMP NOT NULL,
        parent VARCHAR,
        campaign_id VARCHAR,
        origin VARCHAR
    """,
    "routing": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        fallbacks VARCHAR[] NOT NULL,
        mode VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        recorded_at TIMESTAMP NOT NULL
    """,
    "incidents": """
        incident_id VARCHAR NOT NULL PRIMARY KEY,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        severity VARCHAR NOT NULL,
        detail VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    """,
    "send_holds": """
        partition_day DATE NOT NULL,
        campaign_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        held_at TIMESTAMP NOT NULL,
        released_at TIMESTAMP,
        released_by VARCHAR,
        release_reason VARCHAR,
        PRIMARY KEY (partition_day, campaign_id)
    """,
    "kill_switch": """
        changed_at TIMESTAMP NOT NULL,
        engaged BOOLEAN NOT NULL,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        campaign_id VARCHAR
    """,
    # The latest version of each experiment (factory_dagster/improve/experiments.py
    # `Experiment.to_record`); run_id and partition_day are those of the run that proposed it.
    "experiments": """
        experiment_id VARCHAR NOT NULL PRIMARY KEY,
        campaign_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        design_key VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        hypothesis VARCHAR NOT NULL,
        control VARCHAR NOT NULL,
        challengers VARCHAR[] NOT NULL,
        target_segments VARCHAR[] NOT NULL,
        primary_metric VARCHAR NOT NULL,
        guardrails_json VARCHAR NOT NULL,
        max_traffic_share DOUBLE NOT NULL,
        base_rate DOUBLE NOT NULL,
        mde DOUBLE NOT NULL,
        alpha DOUBLE NOT NULL,
        power DOUBLE NOT NULL,
        planned_sample_size INTEGER NOT NULL,
        stopping_rule_json VARCHAR NOT NULL,
        motivating_figures_json VARCHAR NOT NULL,
        winner VARCHAR,
        proposed_by VARCHAR NOT NULL,
        proposed_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    """,
    # Append-only history of every lifecycle move (`ExperimentEvent.to_record`, whose `at` is
    # stored as occurred_at: AT is reserved in DuckDB); run_id and partition_day are null when no
    # run made the move (a person approving from the CLI).
    "experiment_events": """
        event_id VARCHAR NOT NULL PRIMARY KEY,
        experiment_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        run_id VARCHAR,
        partition_day DATE,
        from_state VARCHAR NOT NULL,
        to_state VARCHAR NOT NULL,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        evidence_json VARCHAR NOT NULL,
        occurred_at TIMESTAMP NOT NULL
    """,
    # The loop's versioned state (factory_dagster/improve/versions.py): one row per campaign and
    # version with the whole state as JSON; promotions, routing changes and rollbacks append.
    "loop_versions": """
        campaign_id VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        state_json VARCHAR NOT NULL,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        experiment_id VARCHAR,
        created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (campaign_id, version)
    """,
    # One row per experiment, arm and day the decision step looked at a running experiment
    # (factory_dagster/improve/decisions.py `look_rows`): the statistics `improve.stats.decide`
    # computed and the verdict. Experiment-level figures (SRM p-value, decision, reasons) repeat
    # on every arm's row; the challengers' comparison columns are null on the control's row.
    "experiment_looks": """
        experiment_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        arm VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        assigned INTEGER NOT NULL,
        mature_sends INTEGER NOT NULL,
        primary_events INTEGER NOT NULL,
        posterior_mean DOUBLE NOT NULL,
        interval_low DOUBLE NOT NULL,
        interval_high DOUBLE NOT NULL,
        p_better DOUBLE,
        expected_loss DOUBLE,
        expected_loss_relative DOUBLE,
        lift DOUBLE,
        lift_low DOUBLE,
        lift_high DOUBLE,
        guardrail_status VARCHAR,
        guardrails_json VARCHAR NOT NULL,
        srm_p_value DOUBLE,
        look VARCHAR,
        days_running INTEGER NOT NULL,
        decision VARCHAR NOT NULL,
        reasons VARCHAR NOT NULL,
        winner VARCHAR,
        rule_version VARCHAR NOT NULL,
        looked_at TIMESTAMP NOT NULL,
        PRIMARY KEY (experiment_id, partition_day, arm)
    """,
    # ESP events with no Factory meaning (clicks, deferrals, machine opens…), counted and kept with
    # the reason instead of dropped (factory_dagster/feedback/esp_events.py has the mapping table).
    "esp_events_skipped": """
        event_id VARCHAR NOT NULL PRIMARY KEY,
        provider VARCHAR NOT NULL,
        provider_event VARCHAR NOT NULL,
        send_id VARCHAR,
        reason_code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        occurred_at TIMESTAMP,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        raw_record VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    # Inbound replies threaded to their send (factory_dagster/feedback/reply_import.py); the
    # classifier reads them. `threaded_by` says which header or text tied the reply to its send.
    "replies": """
        reply_id VARCHAR NOT NULL PRIMARY KEY,
        send_id VARCHAR NOT NULL,
        threaded_by VARCHAR NOT NULL,
        message_id VARCHAR,
        in_reply_to VARCHAR,
        reference_ids VARCHAR,
        from_address VARCHAR NOT NULL,
        to_address VARCHAR,
        subject VARCHAR NOT NULL,
        body_text VARCHAR NOT NULL,
        sent_at TIMESTAMP,
        received_at TIMESTAMP NOT NULL,
        received_via VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    "replies_quarantine": """
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        message_id VARCHAR,
        from_address VARCHAR,
        subject VARCHAR,
        reason_code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        raw_record VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    # The crash-safe outbox (factory_dagster/delivery/states.py): one row per send with its current
    # state (queued, claimed, sent, failed, uncertain); partition_day and run_id are those of the run
    # that queued it and then of the run that claimed it.
    "outbox": """
        send_id VARCHAR NOT NULL PRIMARY KEY,
        campaign_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        message_id VARCHAR NOT NULL,
        header_message_id VARCHAR NOT NULL,
        to_email VARCHAR NOT NULL,
        transport VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        mailbox VARCHAR,
        attempts INTEGER NOT NULL,
        last_error VARCHAR,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        queued_at TIMESTAMP NOT NULL,
        claimed_at TIMESTAMP,
        finished_at TIMESTAMP,
        updated_at TIMESTAMP NOT NULL
    """,
    # Append-only history of every outbox move, with who made it and why; run_id and partition_day
    # are null when a person moved it from the CLI (factory outbox resolve).
    "outbox_transitions": """
        send_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        from_state VARCHAR,
        to_state VARCHAR NOT NULL,
        mailbox VARCHAR,
        attempts INTEGER NOT NULL,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        run_id VARCHAR,
        partition_day DATE,
        occurred_at TIMESTAMP NOT NULL
    """,
    "reply_classes": """
        reply_id VARCHAR NOT NULL PRIMARY KEY,
        class VARCHAR,
        confidence DOUBLE,
        model VARCHAR,
        decided_by VARCHAR NOT NULL,
        rule VARCHAR,
        reason VARCHAR,
        quarantine_reason VARCHAR,
        cost_usd DOUBLE NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        classified_at TIMESTAMP NOT NULL
    """,
    # A person's edits of a message before it went (factory_dagster/review/actions.py), one row per edit,
    # append-only: both texts, a unified diff, the word-level edit distance and what changed per section
    # (review/analysis.py). No run_id: a person makes them; partition_day is the message's day.
    # `base_sha256` is the hash of the model's text the edit applies to (review/sendable.py).
    "message_edits": """
        edit_id VARCHAR NOT NULL PRIMARY KEY,
        message_id VARCHAR NOT NULL,
        edit_seq INTEGER NOT NULL,
        send_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        campaign_id VARCHAR NOT NULL,
        lead_id VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        arm_id VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        draft_id VARCHAR NOT NULL,
        base_sha256 VARCHAR NOT NULL,
        old_subject VARCHAR NOT NULL,
        old_body VARCHAR NOT NULL,
        new_subject VARCHAR NOT NULL,
        new_body VARCHAR NOT NULL,
        diff VARCHAR NOT NULL,
        edit_distance DOUBLE NOT NULL,
        words_before INTEGER NOT NULL,
        words_after INTEGER NOT NULL,
        sections_changed VARCHAR[] NOT NULL,
        changes STRUCT(section VARCHAR, kind VARCHAR, change VARCHAR, value VARCHAR)[] NOT NULL,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        edited_at TIMESTAMP NOT NULL
    """,
    # Every review action on a message (approve, edit, hold, release), append-only and numbered per
    # message by seq; the latest hold or release says whether it is held, and an approval counts for
    # the text whose hash it carries (review/sendable.py). No run_id: a person acts from the CLI.
    "message_reviews": """
        review_id VARCHAR NOT NULL PRIMARY KEY,
        message_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        send_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        campaign_id VARCHAR NOT NULL,
        prompt_version VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        text_sha256 VARCHAR NOT NULL,
        edit_id VARCHAR,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        reviewed_at TIMESTAMP NOT NULL
    """,
    # Hook wordings the improve stage's premium model wrote (experiment kind `hook`), content-addressed
    # (hook-<first 8 hex of the text's SHA-256>) per campaign and angle; drafting uses the text when an
    # assignment names the hook (hook_version), else the day's plan hook.
    "hook_versions": """
        hook_version VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        angle VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        parent VARCHAR NOT NULL,
        origin VARCHAR NOT NULL,
        rationale VARCHAR,
        created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (campaign_id, hook_version)
    """,
    # The content line's engagement (factory_dagster/content/engagement.py): one row per variant, metric and day
    # from a LinkedIn or GA4 export row or an e-mail event; source_file/source_row name where it came from.
    "content_engagement": """
        variant_id VARCHAR NOT NULL,
        channel VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        day DATE NOT NULL,
        source VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    "content_engagement_quarantine": """
        source VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        source_row INTEGER NOT NULL,
        column_name VARCHAR,
        reason_code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        raw_record VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        imported_at TIMESTAMP NOT NULL
    """,
    # The content line's variants of a day (content/review.py `store_pieces`), one row per variant, written once after
    # the gate and the premium audit: the model's text, its gate verdict and codes, and the audit's verdict (null: not
    # audited). `content_id` is the content spec's id; `brief_source` the outside text a brief was built from, if any.
    "content_pieces": """
        variant_id VARCHAR NOT NULL PRIMARY KEY,
        piece_id VARCHAR NOT NULL,
        day DATE NOT NULL,
        content_id VARCHAR NOT NULL,
        spec_version VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        topic VARCHAR NOT NULL,
        segment VARCHAR NOT NULL,
        channel VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        hook VARCHAR NOT NULL,
        claim_ids VARCHAR[] NOT NULL,
        gate_verdict VARCHAR NOT NULL,
        violation_codes VARCHAR[] NOT NULL,
        audit_verdict VARCHAR,
        audit_reasons VARCHAR,
        brief_source VARCHAR,
        model VARCHAR NOT NULL,
        prompt_version VARCHAR,
        llm_call_id VARCHAR,
        created_at TIMESTAMP NOT NULL
    """,
    # Every review decision on a content variant (approve, edit, reject, auto_approve), append-only and numbered per
    # variant by seq; the latest one is the variant's state (content/review.py). An edit carries the new text, its diff
    # and word-level edit distance against the text it replaced; text_sha256 is the hash of the text decided on.
    "content_reviews": """
        review_id VARCHAR NOT NULL PRIMARY KEY,
        variant_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        content_id VARCHAR NOT NULL,
        day DATE NOT NULL,
        action VARCHAR NOT NULL,
        text_sha256 VARCHAR NOT NULL,
        edited_text VARCHAR,
        diff VARCHAR,
        edit_distance DOUBLE,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        reviewed_at TIMESTAMP NOT NULL
    """,
    # Each day's split of a live content piece's audience over its variants (content/experiments.py): the share the
    # scheduler, A/B tool or ESP gives each variant that day, with the counts and prior it came from. One row per
    # (day, variant); a re-run of the day replaces them. experiment_id is null for a piece with one variant.
    "content_allocations": """
        day DATE NOT NULL,
        variant_id VARCHAR NOT NULL,
        piece_id VARCHAR NOT NULL,
        content_id VARCHAR NOT NULL,
        experiment_id VARCHAR,
        share DOUBLE NOT NULL,
        impressions_before DOUBLE NOT NULL,
        events_before DOUBLE NOT NULL,
        prior_mean DOUBLE NOT NULL,
        run_id VARCHAR NOT NULL,
        allocated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (day, variant_id)
    """,
    # The learn stage's whole-project dbt builds on the PostgreSQL warehouse (learning/build_log.py), by the database's
    # clock: a campaign's run whose observe stage ended before a build started reuses that build instead of building
    # the same relations again. One row per build, failed ones included (never reused).
    "dbt_builds": """
        build_id VARCHAR NOT NULL PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        campaign_id VARCHAR NOT NULL,
        partition_day DATE NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        success BOOLEAN NOT NULL
    """,
}


class Backfill(NamedTuple):
    """A one-time fill of `columns` of a table, once a newer contract has added them to a table an older one created."""

    columns: tuple[str, ...]
    sql: str  # runs on DuckDB and PostgreSQL alike


# Run in the transaction that adds any of the columns (warehouse/store.py, warehouse/postgres.py), so the rows written
# before hold what today's writers write. A draft whose call is not in raw.llm_calls keeps nulls (dbt leaves it out,
# as the inner join with the calls it replaces did).
BACKFILLS: dict[str, Backfill] = {
    "drafts": Backfill(
        ("stage", "cost_usd"),
        """UPDATE raw.drafts AS drafts SET stage = calls.stage, cost_usd = calls.cost_usd
           FROM raw.llm_calls AS calls WHERE calls.call_id = drafts.llm_call_id""",
    ),
}
