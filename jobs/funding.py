"""A client's money on its jobs: funding, refunds of unused budget, spend, bonuses."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import select

from billing import services as billing
from jobs.access import get_job, get_job_for_update
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, NotFound, ValidationFailed
from workers.models import WorkerProfile


def _in_job_currency(job: Job, money: dict[str, Any], field: str = "amount") -> int:
    if money["currency"] not in (None, job.currency):
        raise ValidationFailed(
            f"This job is in {job.currency}.",
            errors={field: [f"Currency must be {job.currency}."]},
        )
    return money["amount"]


def _key(prefix: str) -> str:
    header = request.headers.get("Idempotency-Key")
    if not header:
        raise ValidationFailed(
            "Send an Idempotency-Key header with money-moving calls.",
            errors={"Idempotency-Key": ["Required for this call."]},
        )
    return f"{prefix}:{principal().idempotency_owner}:{header.strip()}"


def fund_job(job_id: int, money: dict[str, Any]):
    """Add budget to a job through a PaymentIntent (the offline gateway confirms at once)."""
    job = get_job(job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        raise Conflict(f"A {job.status.value} job takes no more money.")
    amount = _in_job_currency(job, money)
    return billing.start_job_funding(
        job.organization_id,
        job.id,
        amount,
        job.currency,
        principal().user_id,
        _key(f"fund:{job.id}"),
    )


def refund_job(job_id: int, money: dict[str, Any]):
    """Return unspent budget to the client's card."""
    job = get_job_for_update(job_id)
    amount = _in_job_currency(job, money)
    return billing.refund_unused_budget(
        job.organization_id, job.id, amount, job.currency, _key(f"refund:{job.id}")
    )


def job_spend(job_id: int) -> dict[str, Any]:
    job = get_job(job_id)
    return billing.job_spend(job.id, job.currency)


def pay_bonus(job_id: int, data: dict[str, Any]):
    """A bonus to a worker who judged tasks of this job, by their pseudonym."""
    job = get_job(job_id)
    amount = _in_job_currency(job, data["amount"])
    worker = db.session.scalar(
        select(WorkerProfile).where(WorkerProfile.pseudonym == data["worker"])
    )
    worked = worker is not None and db.session.scalar(
        select(Assignment.id)
        .where(
            Assignment.job_id == job.id,
            Assignment.worker_id == worker.id,
            Assignment.status.in_(
                (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED, AssignmentStatus.REJECTED)
            ),
        )
        .limit(1)
    )
    if not worked:
        raise NotFound(
            "No worker with that pseudonym has judged tasks of this job.",
            errors={"worker": ["Never worked on this job."]},
        )
    return billing.pay_bonus(
        job_id=job.id,
        organization_id=job.organization_id,
        worker_id=worker.id,
        amount=amount,
        currency=job.currency,
        reason=data["reason"],
        key=_key(f"bonus:{job.id}"),
    )
