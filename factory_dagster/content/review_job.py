"""`content_review`: approve, edit or reject one content variant from the Dagster UI (Launchpad).

The same decision as `factory content approve|edit|reject`, through the same functions of `content.review`, so the
rules are identical: a variant that moved on (rejected, published, or changed since `seen_sha256`) is refused, a
hard rule of the gate cannot be approved over, an edit is re-checked by the gate. A refusal fails the run with the
reason as the failure's description, and nothing is written. The reviewer is required: inside a server there is no
OS user to fall back on, and every decision records who made it.
"""

from enum import Enum

import dagster as dg
from pydantic import Field

from factory_dagster.campaign.spec import SpecError
from factory_dagster.content.cli import content_spec_path, published_folder
from factory_dagster.content.review import ContentReviewError, Decision, approve, edit, reject
from factory_dagster.content.spec import ContentSpec, load_content_spec
from factory_dagster.resources import POOL, FactoryResource


class ReviewAction(Enum):
    approve = "approve"
    edit = "edit"
    reject = "reject"


class ContentReviewConfig(dg.Config):
    variant_id: str = Field(description="The variant to decide on (factory content list shows the queue).")
    action: ReviewAction = Field(description="approve, edit (give text) or reject (give reason).")
    reviewer: str = Field(description="Who decides: the decision is recorded under this name.")
    text: str = Field(default="", description="The new text, for edit only; the content gate re-checks it.")
    reason: str = Field(default="", description="Why: required to reject, and to approve over a judgement code of the gate.")
    seen_sha256: str = Field(
        default="", description="The text hash `factory content show` printed: refuse if the text changed since."
    )


def decide(config: ContentReviewConfig, spec: ContentSpec, factory: FactoryResource) -> Decision:
    """Run the config's decision on the warehouse; ContentReviewError says why it was refused (nothing written)."""
    if not config.reviewer.strip():
        raise ContentReviewError("every decision records who made it: set reviewer (your name or e-mail)")
    if config.action is not ReviewAction.edit and config.text.strip():
        raise ContentReviewError(f"text is only for an edit; to {config.action.value} {config.variant_id}, leave it empty")
    if config.action is ReviewAction.edit and not config.text.strip():
        raise ContentReviewError(f"an edit of {config.variant_id} needs the new text")
    options = {"seen_sha256": config.seen_sha256 or None, "published_dir": published_folder(factory.paths)}
    with factory.warehouse() as con:
        if config.action is ReviewAction.approve:
            return approve(con, spec, config.variant_id, config.reviewer, config.reason, **options)
        if config.action is ReviewAction.edit:
            return edit(con, spec, config.variant_id, config.text, config.reviewer, config.reason, **options)
        return reject(con, spec, config.variant_id, config.reviewer, config.reason, **options)


@dg.op(pool=POOL)
def review_content_variant(context: dg.OpExecutionContext, config: ContentReviewConfig, factory: FactoryResource) -> None:
    """Approve, edit or reject the variant; a refusal fails the run with the reason."""
    try:
        spec = load_content_spec(content_spec_path(None))
        decision = decide(config, spec, factory)
    except (SpecError, ContentReviewError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    if decision.already:
        context.log.info(f"{decision.variant_id} is already approved as it stands: nothing recorded")
        return
    done = {"approve": "approved", "edit": "edited and approved", "reject": "rejected"}[decision.action]
    extra = f", word edit distance {decision.edit_distance:.3f}" if decision.edit_distance is not None else ""
    reason = f": {decision.reason}" if decision.reason else ""
    context.log.info(f"{done} {decision.variant_id} by {decision.actor}{reason}{extra} (review {decision.review_id})")


@dg.job(
    description="Approve, edit or reject one content variant (variant_id, action, reviewer; text to edit, reason to reject), "
    "as `factory content approve|edit|reject` would; a refused decision fails the run with the reason."
)
def content_review():
    review_content_variant()
