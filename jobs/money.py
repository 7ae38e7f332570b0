"""Where the task loop meets the ledger. Leasing calls `place_hold`, giving a task back or
losing a lease calls `release_hold`, and an accepted judgment calls `settle_judgment` — each
inside the same database transaction as the change that causes it, so a lease without its
hold (or a judgment accepted without its pay) can never be committed."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select, update

from billing import services as billing
from jobs import events
from jobs.models import Assignment, Job
from marketplace import clock
from marketplace.accounts.models import Organization, OrgKind
from marketplace.database import db
from workers.models import Crowd, CrowdMember


def vendor_margin(job: Job, worker_id: int) -> tuple[int, int | None]:
    """The margin of the vendor through whose crowd the worker reaches this job, if any."""
    crowd_ids = [c for c in (job.requirements or {}).get("crowds", []) if c != "public"]
    if not crowd_ids:
        return 0, None
    row = db.session.execute(
        select(Crowd.vendor_margin_bps, Crowd.organization_id)
        .join(CrowdMember, CrowdMember.crowd_id == Crowd.id)
        .join(Organization, Organization.id == Crowd.organization_id)
        .where(
            CrowdMember.worker_id == worker_id,
            Crowd.id.in_(crowd_ids),
            Organization.kind == OrgKind.VENDOR,
            Crowd.vendor_margin_bps > 0,
        )
        .order_by(Crowd.id)
        .limit(1)
    ).first()
    if row is None:
        return 0, None
    return (job.price_amount * row.vendor_margin_bps + 5000) // 10_000, row.organization_id


def place_hold(job: Job, assignment: Assignment) -> bool:
    """Reserve one judgment's price (+ fee, + margin) on the job's escrow for a new lease;
    raises InsufficientFunds when the free budget cannot cover it. Returns whether the free
    budget is now low and the client not yet told: the caller then calls `warn_budget_low`
    after its commit (the warning writes the job's row, which funding and refunds lock
    before the escrow, so it may not be written while this transaction holds the escrow)."""
    margin, vendor = vendor_margin(job, assignment.worker_id)
    free = billing.place_hold_in_txn(
        job_id=job.id,
        worker_id=assignment.worker_id,
        assignment_id=assignment.id,
        price=job.price_amount,
        currency=job.currency,
        margin=margin,
        vendor_organization_id=vendor,
    )
    return job.budget_low_notified_at is None and free < _low_budget(job)


def _low_budget(job: Job) -> int:
    return current_app.config["CROWDLINE"].budget_low_judgments * billing.hold_cost(
        job.price_amount
    )


def warn_budget_low(job_id: int) -> None:
    """Tell the client once that the job's budget is running low (its own transaction)."""
    job = db.session.get(Job, job_id)
    free = billing.free_budget(job.id, job.currency)
    if free < _low_budget(job):
        marked = db.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.budget_low_notified_at.is_(None))
            .values(budget_low_notified_at=clock.now())
        )
        if marked.rowcount == 1:  # not already told by a concurrent lease
            events.budget_low(job, free)
    db.session.commit()


def release_hold(assignment: Assignment) -> None:
    """Free the hold of a lease that was released, expired or lost eligibility."""
    billing.release_hold_in_txn(assignment.id)


def settle_judgment(assignment: Assignment) -> None:
    """Turn an accepted judgment's hold into the worker's pending earnings, fee and margin."""
    settle_judgments(db.session.get(Job, assignment.job_id), [assignment])


def settle_judgments(job: Job, assignments: list[Assignment]) -> None:
    """Settle a task's accepted judgments together: the busy accounts move once for all."""
    if assignments:
        billing.settle_judgments_in_txn([a.id for a in assignments], job.organization_id)


def reverse_judgment(assignment: Assignment, reason: str) -> bool:
    """Take back a voided judgment's pay while still pending (the quality engine calls it)."""
    return billing.reverse_judgment_pay_in_txn(assignment.id, reason)


@billing.funds_added.connect
def _rearm_budget_warning(_payment, *, job_id: int | None, **_kwargs) -> None:
    if job_id is not None:
        job = db.session.get(Job, job_id)
        if job is not None:
            job.budget_low_notified_at = None
