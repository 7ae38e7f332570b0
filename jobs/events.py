"""Events clients subscribe to with webhooks. Called inside the transaction that causes them;
deliveries are queued and sent after commit."""

from __future__ import annotations

from jobs.models import Job, Task


def task_completed(job: Job, task: Task) -> None:
    """A task reached its final answer (delivered to subscribers in batches)."""


def job_completed(job: Job) -> None:
    """Every task of the job is completed or cancelled."""


def budget_low(job: Job, free_amount: int) -> None:
    """The job's free budget covers few more judgments (webhook `job.budget_low`)."""
