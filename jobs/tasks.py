"""Job-loop background jobs (RQ). Each takes ids or nothing and calls a service."""

from __future__ import annotations

from jobs import batch, completion, leasing, services, throughput, webhooks
from marketplace.background import register_periodic


def expire_leases() -> int:
    """Give back the slots of leases nobody heartbeated in time."""
    return leasing.expire_leases_everywhere()


def deliver_webhook(delivery_id: int) -> str | None:
    """Send one webhook delivery now (enqueued after the commit that created or closed it)."""
    return webhooks.deliver(delivery_id)


def deliver_due_webhooks() -> int:
    """Send what is due: retries after their backoff, and task batches whose window ended."""
    return webhooks.deliver_due()


def reject_pending_of_removed(worker_id: int, job_id: int) -> int:
    """A worker fell below a job's accuracy floor: reject their undecided judgments there."""
    return completion.reject_pending_of_removed(worker_id, job_id)


def complete_job(job_id: int) -> bool:
    """Complete a job whose last open task just closed (after that commit)."""
    return services.complete_job(job_id)


def job_completed(job_id: int) -> None:
    """After a job completes: refresh its task flags, then refine its labels by DS."""
    throughput.refresh_flags(job_id)
    batch.aggregate_completed_job(job_id)


def refresh_task_flags() -> int:
    """Recompute slow-task flags of running and recently ended jobs."""
    return throughput.refresh_flags_everywhere()


register_periodic("jobs.tasks.expire_leases", 60)
register_periodic("jobs.tasks.refresh_task_flags", 900)
register_periodic("jobs.tasks.deliver_due_webhooks", 15)
register_periodic("jobs.fraud_scan.scheduled_scan", 3600)
