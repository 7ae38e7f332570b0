"""Gold: how often a worker meets gold tasks, and keeping gold invisible to them.

A worker's first FIRST_TASKS leases in a job draw gold with probability at least
FIRST_TASKS_GOLD_RATE (when the job uses gold at all), so their accuracy is measured early;
afterwards the job's own gold_rate applies.

A gold judgment is decided the moment it is submitted (accepted and paid when right,
rejected when wrong). Showing that at once would tell the worker which task was gold, so
worker-facing responses show a gold judgment as "submitted" until GOLD_REVEAL_SECONDS after
it was submitted (ordinary tasks of a job normally close within that time); listing by
status follows the same rule. The stored status and the client's views are the real ones.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, not_, or_, select

from jobs.models import Assignment, AssignmentStatus, Job
from marketplace import clock
from marketplace.database import db
from workers.models import WorkerProfile

FIRST_TASKS = 10
FIRST_TASKS_GOLD_RATE = 0.5
GOLD_REVEAL_SECONDS = 24 * 3600
DECIDED = (AssignmentStatus.ACCEPTED, AssignmentStatus.REJECTED)


def gold_probability(job: Job, worker: WorkerProfile) -> float:
    """The chance that the worker's next lease in `job` tries a gold task first."""
    if job.gold_rate <= 0:
        return 0.0
    first = (
        select(Assignment.id)
        .where(Assignment.job_id == job.id, Assignment.worker_id == worker.id)
        .limit(FIRST_TASKS)  # counting stops there: a veteran's history is not scanned
        .subquery()
    )
    seen = db.session.scalar(select(func.count()).select_from(first))
    if seen < FIRST_TASKS:
        return max(job.gold_rate, FIRST_TASKS_GOLD_RATE)
    return job.gold_rate


def _hidden(assignment: Assignment) -> bool:
    return (
        assignment.is_gold
        and assignment.status in DECIDED
        and assignment.submitted_at is not None
        and clock.now() - assignment.submitted_at < timedelta(seconds=GOLD_REVEAL_SECONDS)
    )


def visible_status(assignment: Assignment) -> str | None:
    """The status a worker is shown for their own assignment."""
    if getattr(assignment, "status", None) is None:
        return None  # not an assignment (an empty 204 body passes through the schema)
    if _hidden(assignment):
        return AssignmentStatus.SUBMITTED.value
    return assignment.status.value


def visible_status_filter(status: AssignmentStatus | str) -> ColumnElement[bool]:
    """A worker's `?status=` filter, on the statuses they are shown."""
    status = AssignmentStatus(status)
    hidden = and_(
        Assignment.is_gold.is_(True),
        Assignment.status.in_(DECIDED),
        Assignment.submitted_at > clock.now() - timedelta(seconds=GOLD_REVEAL_SECONDS),
    )
    if status == AssignmentStatus.SUBMITTED:
        return or_(Assignment.status == AssignmentStatus.SUBMITTED, hidden)
    if status in DECIDED:
        return and_(Assignment.status == status, not_(hidden))
    return Assignment.status == status
