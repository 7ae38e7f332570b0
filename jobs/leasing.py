"""The task API: lease the next task, heartbeat, release, submit; and lease expiry.

Invariant 1 lives here. A task row carries `live_count` and `submitted_count`; leasing
increments `live_count` only while live + submitted < redundancy_target, on a row it holds
locked (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent leasers take different rows;
SQLite: every transaction holds the write lock). The (task, worker) unique constraint means
a worker can never hold or judge a task twice.

Invariant 2 too: eligibility is checked when leasing, and again at heartbeat and submit, so
a revoked or expired clearance ends a live lease at its next call.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, request
from sqlalchemy import case, exists, or_, select, update

from billing import services as billing
from credentials import eligibility
from jobs import (
    accuracy,
    agreement,
    answers,
    completion,
    escalation,
    fraud_risk,
    money,
    services,
    signals,
)
from jobs.gold import gold_probability, visible_status_filter
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus, Task, TaskStatus
from marketplace import clock
from marketplace.database import commit_and_keep, db, insert_or_skip
from marketplace.errors import (
    Conflict,
    InsufficientFunds,
    NotEligible,
    NotFound,
    ValidationFailed,
)
from marketplace.locking import get_for_update
from marketplace.pagination import paginate
from workers.access import my_worker_profile
from workers.models import WorkerProfile, WorkerStatus

MAX_JOBS_CONSIDERED = 50
EXPIRE_BATCH = 200
# Gold tasks are judged by every worker who meets them once; they never fill up.
GOLD_REDUNDANCY = 1_000_000


def _hash(value: str | None) -> str | None:
    if not value:
        return None
    key = current_app.secret_key.encode()
    return hashlib.sha256(key + b":" + value.encode()).hexdigest()


def _require_working(worker: WorkerProfile) -> None:
    if worker.status != WorkerStatus.ACTIVE:
        raise NotEligible(
            f"Your account is {worker.status.value}; you cannot take tasks now.",
            reason=f"worker_{worker.status.value}",
            status_reason=worker.status_reason,
        )


def _eligibility(worker: WorkerProfile, job: Job) -> eligibility.Eligibility:
    return eligibility.check(worker, eligibility.Requirements.from_dict(job.requirements))


def _open_now(job: Job, now: datetime) -> bool:
    return job.status == JobStatus.ACTIVE and (job.deadline is None or job.deadline > now)


def _due_leases(job_id: Any, now: datetime):
    """Whether any lease of the job is past its expiry (ix_assignments_live_expiry)."""
    return exists().where(
        Assignment.job_id == job_id,
        Assignment.status == AssignmentStatus.LEASED,
        Assignment.lease_expires_at <= now,
    )


def _candidate_jobs(
    worker: WorkerProfile, job_id: int | None, now: datetime
) -> tuple[list[tuple[Job, bool]], str | None]:
    """The jobs to try, in order, each with whether it may have leases past their expiry;
    and the worker's fraud action (a restriction changes what they are leased)."""
    if job_id is not None:
        # The job, whether the worker was removed from it, their fraud action and whether any
        # lease is overdue: one query.
        found = db.session.execute(
            select(
                Job,
                accuracy.removal_reason_column(worker.id, Job.id),
                fraud_risk.action_column(worker.id),
                _due_leases(Job.id, now),
            ).where(Job.id == job_id)
        ).first()
        if found is None:
            raise NotFound(f"job {job_id} not found")
        job, removed, action, due = found
        if not _open_now(job, now):
            return [], action
        verdict = _eligibility(worker, job)
        if not verdict.eligible:
            raise NotEligible(
                "You do not meet this job's requirements.",
                reasons=[r.__dict__ for r in verdict.reasons],
            )
        if removed is not None:
            raise NotEligible(
                "You were removed from this job.", reasons=[accuracy.removal_problem(removed)]
            )
        return [(job, due)], action
    jobs = db.session.scalars(
        select(Job)
        .where(Job.status == JobStatus.ACTIVE, or_(Job.deadline.is_(None), Job.deadline > now))
        .order_by(Job.priority.desc(), Job.id)
        .limit(MAX_JOBS_CONSIDERED * 4)
    )
    removed = accuracy.removed_job_ids(worker.id)
    eligible = [job for job in jobs if job.id not in removed and _eligibility(worker, job).eligible]
    action = db.session.scalar(select(fraud_risk.action_column(worker.id)))
    return [(job, True) for job in eligible[:MAX_JOBS_CONSIDERED]], action


def _claim(job: Job, worker: WorkerProfile, gold: bool) -> Task | None:
    """Take one slot on the next task of `job` this worker has never had, atomically: one
    UPDATE of the row a locking sub-select picked (PostgreSQL: FOR UPDATE SKIP LOCKED, so
    concurrent leasers take different rows), returning the task."""
    never_had = ~exists().where(Assignment.task_id == Task.id, Assignment.worker_id == worker.id)
    tier = escalation.lease_filter(job, worker)  # escalated tasks: qualified workers only
    pick = (
        select(Task.id)
        .where(
            Task.job_id == job.id,
            Task.status == TaskStatus.OPEN,
            Task.is_gold.is_(gold),
            Task.live_count + Task.submitted_count < Task.redundancy_target,
            never_had,
            tier,
        )
        .order_by(Task.priority.desc(), Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return db.session.scalar(
        update(Task)
        .where(Task.id == pick)
        .values(live_count=Task.live_count + 1)
        .returning(Task)
        .execution_options(populate_existing=True)
    )


def _assign(job: Job, task: Task, worker: WorkerProfile, now: datetime, fingerprint: str | None):
    """The assignment of a claimed slot, or None when this worker already holds the task: a
    parallel lease of theirs (another tool) committed after the claim's snapshot was taken.
    The slot is then given back, in the same transaction, which still holds the task's row."""
    assignment = db.session.scalar(
        insert_or_skip(Assignment)
        .values(
            task_id=task.id,
            job_id=job.id,
            worker_id=worker.id,
            status=AssignmentStatus.LEASED,
            leased_at=now,
            lease_expires_at=now + timedelta(seconds=job.lease_seconds),
            is_gold=task.is_gold,
            fingerprint_hash=_hash(fingerprint),
            ip_hash=_hash(request.remote_addr),
        )
        .on_conflict_do_nothing(index_elements=["task_id", "worker_id"])
        .returning(Assignment)
    )
    if assignment is None:
        db.session.execute(
            update(Task).where(Task.id == task.id).values(live_count=Task.live_count - 1)
        )
    return assignment


def lease_next_task(job_id: int | None, fingerprint: str | None) -> Assignment | None:
    """Lease the next task the calling worker may do (None when there is nothing).

    A lease is a claim (one slot on a task row it locks), the assignment, and the budget
    hold, in that order: the hold comes last so the job's escrow (every lease of the job
    takes it) is locked for the least time, from the hold to the commit. A refused hold rolls
    the whole transaction back. Leases past their expiry give their slots back first."""
    worker = my_worker_profile()
    _require_working(worker)
    now = clock.now()
    jobs, fraud_action = _candidate_jobs(worker, job_id, now)
    # Restricted workers (fraud review) get gold-heavy work, in every job.
    restricted_share = fraud_risk.restricted_gold_rate(fraud_action) or 0.0
    for job, due in jobs:
        if due and expire_due_leases(job.id):
            # Committed on their own: giving holds back locks the job's escrow, and a lease
            # may then write the job's row (a budget warning), which funding and refunds
            # lock before the escrow.
            db.session.commit()
        share = max(gold_probability(job, worker), restricted_share)
        order = [True, False] if random.random() < share else [False, True]
        claimed = _claim_in_order(job, worker, order)
        if claimed is None:
            continue
        assignment = _assign(job, claimed, worker, now, fingerprint)
        if assignment is None:
            continue
        try:
            budget_low = money.place_hold(job, assignment)
        except InsufficientFunds:
            # The whole transaction goes, claim and assignment with it (leases expired
            # lazily above were committed on their own); leasing for this job stops until
            # it is funded again.
            db.session.rollback()
            break
        commit_and_keep(claimed, job)  # the response shows both
        if budget_low:
            money.warn_budget_low(job.id)
        return assignment
    db.session.commit()
    return None


def _claim_in_order(job: Job, worker: WorkerProfile, order: list[bool]) -> Task | None:
    for gold in order:
        if (task := _claim(job, worker, gold)) is not None:
            return task
    return None


def _mine(assignment_id: int) -> tuple[Assignment, WorkerProfile]:
    worker = my_worker_profile()
    assignment = get_for_update(Assignment, assignment_id)
    if assignment is None or assignment.worker_id != worker.id:
        raise NotFound(f"assignment {assignment_id} not found")
    return assignment, worker


def _close_lease(assignment: Assignment, status: AssignmentStatus, reason: str | None) -> None:
    """End a live lease and give its slot on the task back (the caller holds its lock)."""
    assignment.status = status
    assignment.release_reason = reason
    assignment.ended_at = clock.now()
    db.session.execute(
        update(Task)
        .where(Task.id == assignment.task_id, Task.live_count > 0)
        .values(live_count=Task.live_count - 1)
    )


def _end_lease(assignment: Assignment, status: AssignmentStatus, reason: str | None) -> None:
    """Close a live lease: its slot and its hold go back (the caller holds its lock)."""
    _close_lease(assignment, status, reason)
    money.release_hold(assignment)


def _lapse_if_due(assignment: Assignment) -> None:
    if assignment.status == AssignmentStatus.LEASED and clock.now() >= assignment.lease_expires_at:
        _end_lease(assignment, AssignmentStatus.EXPIRED, "lease expired")
        db.session.commit()
        raise Conflict("The lease has expired; lease a new task.", assignment_status="expired")


def _job_of(assignment: Assignment, worker: WorkerProfile) -> tuple[Job, str | None]:
    """The assignment's job, and why the worker was removed from it (None: not removed), in
    one query."""
    job, removed = db.session.execute(
        select(Job, accuracy.removal_reason_column(worker.id, Job.id)).where(
            Job.id == assignment.job_id
        )
    ).one()
    return job, removed


def _check_still_eligible(
    assignment: Assignment, worker: WorkerProfile, job: Job, removed: str | None
) -> None:
    problems: list[dict[str, Any]] = []
    if worker.status != WorkerStatus.ACTIVE:
        problems.append({"code": f"worker_{worker.status.value}", "detail": worker.status.value})
    else:
        problems = [r.__dict__ for r in _eligibility(worker, job).reasons]
        if removed is not None:
            problems.append(accuracy.removal_problem(removed))
    if problems:
        _end_lease(assignment, AssignmentStatus.RELEASED, "lost eligibility")
        db.session.commit()
        raise NotEligible(
            "You no longer meet this job's requirements; the task was given back.",
            reasons=problems,
        )


def heartbeat(assignment_id: int) -> Assignment:
    """Extend a live lease by the job's lease duration."""
    assignment, worker = _mine(assignment_id)
    if assignment.status != AssignmentStatus.LEASED:
        raise Conflict(
            f"The assignment is {assignment.status.value}, not leased.",
            assignment_status=assignment.status.value,
        )
    _lapse_if_due(assignment)
    job, removed = _job_of(assignment, worker)
    _check_still_eligible(assignment, worker, job, removed)
    if job.status == JobStatus.CANCELLED:
        raise Conflict("The job was cancelled.")
    assignment.lease_expires_at = clock.now() + timedelta(seconds=job.lease_seconds)
    db.session.commit()
    return assignment


def release(assignment_id: int, reason: str | None) -> Assignment:
    """Give a leased task back (a skip). Releasing twice is harmless."""
    assignment, _ = _mine(assignment_id)
    if assignment.status == AssignmentStatus.RELEASED:
        return assignment
    if assignment.status != AssignmentStatus.LEASED:
        raise Conflict(
            f"The assignment is {assignment.status.value}; only leased tasks can be released.",
            assignment_status=assignment.status.value,
        )
    _end_lease(assignment, AssignmentStatus.RELEASED, reason or "released")
    db.session.commit()
    return assignment


def submit(assignment_id: int, answer: Any, active_seconds: float | None) -> Assignment:
    """Record a judgment. A retry with the same answer returns the same result."""
    assignment, worker = _mine(assignment_id)
    if assignment.status in (
        AssignmentStatus.SUBMITTED,
        AssignmentStatus.ACCEPTED,
        AssignmentStatus.REJECTED,
    ):
        if answers.canonical(assignment.answer) == answers.canonical(answer):
            return assignment
        raise Conflict(
            "This assignment was already submitted with a different answer.",
            assignment_status=assignment.status.value,
        )
    if assignment.status != AssignmentStatus.LEASED:
        raise Conflict(
            f"The assignment is {assignment.status.value}; it takes no answer.",
            assignment_status=assignment.status.value,
        )
    _lapse_if_due(assignment)
    job, removed = _job_of(assignment, worker)
    if problem := answers.check_answer(job.answer_spec, answer):
        raise ValidationFailed(
            f"The answer does not fit the job's answer_spec: {problem}.",
            errors={"answer": [problem]},
        )
    _check_still_eligible(assignment, worker, job, removed)
    billing.open_worker_pay(worker.id, job.currency)
    now = clock.now()
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.answer = answer
    assignment.submitted_at = now
    assignment.ended_at = now
    assignment.server_seconds = (now - assignment.leased_at).total_seconds()
    assignment.active_seconds = active_seconds
    # The slot turns from live to submitted, and the task's row is locked from here on.
    task = db.session.scalar(
        update(Task)
        .where(Task.id == assignment.task_id)
        .values(
            live_count=case((Task.live_count > 0, Task.live_count - 1), else_=0),
            submitted_count=Task.submitted_count + 1,
        )
        .returning(Task)
        .execution_options(populate_existing=True)
    )
    if task.is_gold:
        assignment.gold_correct = agreement.agree(
            job.answer_spec["type"], answer, task.gold_answer, job.agreement_threshold
        )
        assignment.status = (
            AssignmentStatus.ACCEPTED if assignment.gold_correct else AssignmentStatus.REJECTED
        )
        # Shown to the worker as "submitted" for a while (jobs.gold): gold stays invisible.
        accuracy.record_gold(job, worker, assignment.gold_correct, task.gold_answer, answer)
        completion.lock_job_money(job.id)
        if assignment.gold_correct:
            money.settle_judgment(assignment)
        else:
            money.release_hold(assignment)  # a wrong gold answer earns nothing
    db.session.flush()
    signals.judgment_submitted.send(assignment, job=job, task=task)
    # A job whose last open task this closes is completed after the commit, here.
    to_complete: set[int] = db.session.info.setdefault(services.COMPLETE_AFTER_COMMIT, set())
    try:
        if not task.is_gold:
            completion.judge_task(job, task)  # adaptive consensus: close, extend or escalate
        accuracy.feed_skill_levels(job, worker)
        commit_and_keep(task, job)
    finally:
        db.session.info.pop(services.COMPLETE_AFTER_COMMIT, None)
    for done_job_id in to_complete:
        services.complete_job(done_job_id)
    return assignment


def expire_due_leases(job_id: int | None = None, limit: int = EXPIRE_BATCH) -> int:
    """Return the slots of leases past their expiry (in the caller's transaction)."""
    query = (
        select(Assignment.id)
        .where(
            Assignment.status == AssignmentStatus.LEASED,
            Assignment.lease_expires_at <= clock.now(),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if job_id is not None:
        query = query.where(Assignment.job_id == job_id)
    ids = list(db.session.scalars(query))
    if not ids:
        return 0  # the usual case, checked on every lease: no second query
    expiring = list(
        db.session.scalars(
            select(Assignment).where(Assignment.id.in_(ids)).order_by(Assignment.task_id)
        )
    )
    # Every task row before any money: a lease holds its task row while it waits for the
    # job's escrow, so holding the escrow while waiting for the next task row deadlocked.
    for assignment in expiring:
        _close_lease(assignment, AssignmentStatus.EXPIRED, "lease expired")
    for assignment in sorted(expiring, key=lambda a: (a.job_id, a.id)):
        money.release_hold(assignment)
    return len(ids)


def expire_leases_everywhere() -> int:
    """Periodic job: expire due leases in batches until none are left."""
    total = 0
    while True:
        count = expire_due_leases()
        db.session.commit()
        total += count
        if count < EXPIRE_BATCH:
            return total


def my_assignments(args: dict[str, Any]) -> dict[str, Any]:
    worker = my_worker_profile()
    query = select(Assignment).where(Assignment.worker_id == worker.id)
    if status := args.get("status"):
        query = query.where(visible_status_filter(status))
    if job_id := args.get("job_id"):
        query = query.where(Assignment.job_id == job_id)
    return paginate(query, Assignment.id, args)


def my_assignment(assignment_id: int) -> Assignment:
    worker = my_worker_profile()
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None or assignment.worker_id != worker.id:
        raise NotFound(f"assignment {assignment_id} not found")
    return assignment
