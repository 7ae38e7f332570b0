"""Voiding a confirmed fraudster's judgments: tasks re-opened, pending pay clawed back.

Lock order: the worker's live leases (SKIP LOCKED: a call of the worker's own may hold one
and want its task next), then the task rows (by id), then the worker's judgments on them (a
task completing under another worker's submit holds the task row, then accepts them), then
each job's money (its escrow row), then the ledger. Only submitted and accepted judgments
are voided, so running it again voids nothing twice. The worker's live leases are given
back too (their slots and holds). Work goes in batches; the caller commits each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from billing.models import Earning, Hold
from jobs import money
from jobs.completion import lock_job_money
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus, Task, TaskStatus
from marketplace import audit, clock
from marketplace.database import db

VOID_BATCH = 500
MAX_LISTED = 100
JUDGED = (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED)


@dataclass
class VoidResult:
    voided: int = 0
    leases_ended: int = 0
    tasks_reopened: int = 0
    jobs_reactivated: list[int] = field(default_factory=list)
    holds_released: int = 0
    pay_reversed: int = 0
    pay_reversed_amount: int = 0
    # Pay already available or paid out: it cannot be taken back, only recorded.
    pay_unrecoverable: int = 0
    pay_unrecoverable_amount: int = 0
    unrecoverable_assignments: list[int] = field(default_factory=list)

    def add(self, other: VoidResult) -> None:
        for name in (
            "voided",
            "leases_ended",
            "tasks_reopened",
            "holds_released",
            "pay_reversed",
            "pay_reversed_amount",
            "pay_unrecoverable",
            "pay_unrecoverable_amount",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.jobs_reactivated = sorted(set(self.jobs_reactivated) | set(other.jobs_reactivated))
        self.unrecoverable_assignments = (
            self.unrecoverable_assignments + other.unrecoverable_assignments
        )[:MAX_LISTED]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _reopen(task: Task) -> bool:
    """Make a completed task leasable again, its remaining judgments intact."""
    if task.is_gold or task.status != TaskStatus.COMPLETED:
        return False
    task.reopen(max(task.redundancy_target, task.submitted_count + 1))
    return True


def _settle_money(assignments: list[tuple[Assignment, AssignmentStatus]], reason: str, result):
    by_job: dict[int, list[tuple[Assignment, AssignmentStatus]]] = {}
    for item in assignments:
        by_job.setdefault(item[0].job_id, []).append(item)
    for job_id in sorted(by_job):
        lock_job_money(job_id)
        for assignment, was in sorted(by_job[job_id], key=lambda item: item[0].id):
            if was in (AssignmentStatus.SUBMITTED, AssignmentStatus.LEASED):
                money.release_hold(assignment)  # never settled: its hold goes back
                result.holds_released += 1
                continue
            hold = db.session.get(Hold, assignment.id)
            if money.reverse_judgment(assignment, reason):
                result.pay_reversed += 1
                result.pay_reversed_amount += hold.price if hold else 0
                continue
            earning = db.session.scalar(
                select(Earning).where(Earning.assignment_id == assignment.id)
            )
            if earning is not None and earning.status.value != "reversed":
                result.pay_unrecoverable += 1
                result.pay_unrecoverable_amount += earning.amount
                result.unrecoverable_assignments.append(assignment.id)


def void_batch(worker_id: int, job_id: int | None, reason: str) -> tuple[VoidResult, bool]:
    """Void up to VOID_BATCH of the worker's judgments (in the caller's transaction).

    Returns what it did and whether more are left."""
    result = VoidResult()
    scope = [Assignment.worker_id == worker_id]
    if job_id is not None:
        scope.append(Assignment.job_id == job_id)
    # Live leases first, skipping any the worker's own call holds: that call locks its
    # assignment and then its task, so waiting for it while holding task rows could deadlock
    # (it ends the lease itself: the worker is already suspended).
    leased_ids = list(
        db.session.scalars(
            select(Assignment.id)
            .where(*scope, Assignment.status == AssignmentStatus.LEASED)
            .order_by(Assignment.id)
            .limit(VOID_BATCH + 1)
            .with_for_update(skip_locked=True)
        )
    )
    rows = db.session.execute(
        select(Assignment.id, Assignment.task_id)
        .where(*scope, Assignment.status.in_(JUDGED))
        .order_by(Assignment.task_id)
        .limit(VOID_BATCH + 1)
    ).all()
    more = len(rows) > VOID_BATCH or len(leased_ids) > VOID_BATCH
    rows, leased_ids = rows[:VOID_BATCH], leased_ids[:VOID_BATCH]
    if not rows and not leased_ids:
        return result, False
    leased = list(
        db.session.scalars(
            select(Assignment)
            .where(Assignment.id.in_(leased_ids))
            .execution_options(populate_existing=True)
        )
    )
    task_ids = sorted({row.task_id for row in rows} | {a.task_id for a in leased})
    # Then the task rows, in id order, like every other writer of tasks; then the judgments
    # (a completing task may have just accepted one: it is reloaded as it is now).
    db.session.execute(
        select(Task.id).where(Task.id.in_(task_ids)).order_by(Task.id).with_for_update()
    ).all()
    tasks = {
        t.id: t
        for t in db.session.scalars(
            select(Task).where(Task.id.in_(task_ids)).execution_options(populate_existing=True)
        )
    }
    judged = list(
        db.session.scalars(
            select(Assignment)
            .where(Assignment.id.in_([row.id for row in rows]), Assignment.status.in_(JUDGED))
            .order_by(Assignment.task_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    assignments = leased + judged
    voided: list[tuple[Assignment, AssignmentStatus]] = []
    reopened_jobs: set[int] = set()
    now = clock.now()
    for assignment in assignments:
        was = assignment.status
        task = tasks[assignment.task_id]
        if was == AssignmentStatus.LEASED:  # no judgment yet: the lease is given back
            assignment.status = AssignmentStatus.RELEASED
            assignment.release_reason = "fraud: the worker's judgments were voided"
            assignment.ended_at = now
            task.live_count = max(0, task.live_count - 1)
            result.leases_ended += 1
        else:
            assignment.status = AssignmentStatus.VOIDED
            task.submitted_count = max(0, task.submitted_count - 1)
            result.voided += 1
            if _reopen(task):
                result.tasks_reopened += 1
                reopened_jobs.add(task.job_id)
        voided.append((assignment, was))
    _settle_money(voided, reason, result)
    for reopened in sorted(reopened_jobs):
        back = db.session.execute(
            update(Job)
            .where(Job.id == reopened, Job.status == JobStatus.COMPLETED)
            .values(status=JobStatus.ACTIVE, completed_at=None, updated_at=now)
        )
        if back.rowcount:
            result.jobs_reactivated.append(reopened)
            audit.record(
                "job.reopened",
                "job",
                reopened,
                detail={"reason": reason, "worker_id": worker_id},
            )
    audit.record(
        "fraud.judgments_voided",
        "worker",
        worker_id,
        detail={"job_id": job_id, "reason": reason, **result.as_dict()},
    )
    return result, more


def void_worker_judgments(worker_id: int, job_id: int | None, reason: str) -> VoidResult:
    """Void every submitted or accepted judgment of the worker (in one job, or all), committing
    each batch; confirming twice voids nothing twice."""
    total = VoidResult()
    while True:
        result, more = void_batch(worker_id, job_id, reason)
        db.session.commit()
        total.add(result)
        if not more:
            return total
