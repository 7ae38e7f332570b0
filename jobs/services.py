"""Posting and running jobs: creation, the editing rules, the lifecycle, task reads.

Lifecycle: draft → active ⇄ paused → completed | cancelled. A job completes by itself when
its last task does; a client may cancel it at any time before that.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from billing import services as billing
from jobs import events, money
from jobs.access import get_job, get_job_for_update
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus, Task, TaskStatus
from marketplace import audit, background, clock
from marketplace.accounts.models import Organization, OrgKind, Role
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound, ValidationFailed
from marketplace.locking import get_for_update
from marketplace.pagination import paginate

# Where a caller that will call complete_job itself after its commit (submit) collects the
# jobs to complete, saving the background job its own connection and session.
COMPLETE_AFTER_COMMIT = "crowdline.complete_after_commit"

# What may change once a job has been activated: presentation, pacing and quality knobs.
# The contract with workers already holding tasks (what to answer, for how much, who may
# answer) stays fixed; post a new job to change it.
CHANGEABLE_WHILE_RUNNING = {
    "title",
    "instructions",
    "deadline",
    "priority",
    "lease_seconds",
    "gold_rate",
    "review_rate",
    "redundancy",
}


def _client_org_for_new_job(requested: int | None) -> int:
    caller = principal()
    if caller.user is None:
        org_id = caller.organization_id
        if requested not in (None, org_id):
            raise NotFound(f"organization {requested} not found")
    else:
        client_orgs = [
            org_id
            for org_id in caller.roles
            if db.session.get(Organization, org_id).kind == OrgKind.CLIENT
        ]
        if requested is not None:
            if requested not in caller.roles:
                raise NotFound(f"organization {requested} not found")
            org_id = requested
        elif len(client_orgs) == 1:
            org_id = client_orgs[0]
        elif not client_orgs:
            raise Forbidden("Only client organizations post jobs.")
        else:
            raise ValidationFailed(
                "You belong to several client organizations; say which.",
                errors={"organization_id": ["Required when you have several organizations."]},
            )
    if db.session.get(Organization, org_id).kind != OrgKind.CLIENT:
        raise Forbidden("Only client organizations post jobs.")
    return org_id


def _apply(job: Job, data: dict[str, Any]) -> None:
    for field in (
        "title",
        "instructions",
        "answer_spec",
        "gold_rate",
        "requirements",
        "review_rate",
        "deadline",
        "priority",
        "lease_seconds",
    ):
        if field in data:
            setattr(job, field, data[field])
    if "price_per_judgment" in data:
        job.price_amount = data["price_per_judgment"]["amount"]
        job.currency = data["price_per_judgment"]["currency"]
    if "redundancy" in data:
        job.redundancy_min = data["redundancy"]["min"]
        job.redundancy_max = data["redundancy"]["max"]
        job.target_confidence = data["redundancy"]["target_confidence"]
        job.escalation = data["redundancy"].get("escalation")
        job.agreement_threshold = data["redundancy"].get("agreement_threshold")


def _check_crowds(requirements: dict[str, Any], organization_id: int) -> None:
    """A job may name the public crowd, its own client's crowds, or crowds of any vendor."""
    from workers.models import Crowd

    for crowd_id in requirements.get("crowds", []):
        if crowd_id == "public":
            continue
        crowd = db.session.get(Crowd, crowd_id)
        if crowd is None:
            raise ValidationFailed(
                f"Crowd {crowd_id} does not exist.", errors={"requirements": [f"crowd {crowd_id}"]}
            )
        org = db.session.get(Organization, crowd.organization_id)
        if org.kind == OrgKind.CLIENT and org.id != organization_id:
            raise ValidationFailed(
                f"Crowd {crowd_id} is another client's private crowd.",
                errors={"requirements": [f"crowd {crowd_id}"]},
            )


def create_job(data: dict[str, Any]) -> Job:
    """Post a job as a draft."""
    org_id = _client_org_for_new_job(data.get("organization_id"))
    _check_crowds(data.get("requirements", {}), org_id)
    now = clock.now()
    job = Job(
        organization_id=org_id,
        created_by_user_id=principal().user_id,
        status=JobStatus.DRAFT,
        created_at=now,
        updated_at=now,
    )
    _apply(job, data)
    _check_deadline(job)
    db.session.add(job)
    db.session.flush()
    audit.record("job.created", "job", job.id, organization_id=org_id, detail={"title": job.title})
    db.session.commit()
    return job


def _check_deadline(job: Job) -> None:
    if job.deadline is not None and job.deadline <= clock.now() and job.status == JobStatus.DRAFT:
        raise ValidationFailed(
            "The deadline is in the past.", errors={"deadline": ["In the past."]}
        )


def list_jobs(args: dict[str, Any]) -> dict[str, Any]:
    caller = principal()
    query = select(Job)
    if not caller.is_platform_admin:
        query = query.where(Job.organization_id.in_(list(caller.roles) or [-1]))
    if status := args.get("status"):
        query = query.where(Job.status == status)
    return paginate(query, Job.id, args)


def update_job(job_id: int, changes: dict[str, Any]) -> Job:
    """Change a job; once it has run, only presentation, pacing and quality settings."""
    job = get_job_for_update(job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        raise Conflict(f"A {job.status.value} job cannot change.")
    if job.status != JobStatus.DRAFT:
        frozen = sorted(set(changes) - CHANGEABLE_WHILE_RUNNING)
        if frozen:
            raise Conflict(
                f"These cannot change once a job has been activated: {', '.join(frozen)}.",
                errors={name: ["Fixed once the job has been activated."] for name in frozen},
            )
        if "redundancy" in changes and changes["redundancy"]["min"] != job.redundancy_min:
            raise Conflict(
                "redundancy.min cannot change once a job has been activated.",
                errors={"redundancy": ["min is fixed once the job has been activated."]},
            )
    if "requirements" in changes:
        _check_crowds(changes["requirements"], job.organization_id)
    _apply(job, changes)
    if "deadline" in changes and job.deadline is not None and job.deadline <= clock.now():
        raise ValidationFailed(
            "The deadline is in the past.", errors={"deadline": ["In the past."]}
        )
    job.updated_at = clock.now()
    audit.record(
        "job.updated",
        "job",
        job.id,
        organization_id=job.organization_id,
        detail={"fields": sorted(changes)},
    )
    db.session.commit()
    return job


def activate_job(job_id: int) -> Job:
    job = get_job_for_update(job_id)
    if job.status not in (JobStatus.DRAFT, JobStatus.PAUSED):
        raise Conflict(
            f"Only draft or paused jobs can be activated; this one is {job.status.value}."
        )
    real_tasks = db.session.scalar(
        select(func.count()).select_from(Task).where(Task.job_id == job.id, Task.is_gold.is_(False))
    )
    if not real_tasks:
        raise Conflict("Import tasks before activating the job.")
    if job.gold_rate > 0 and not db.session.scalar(
        select(func.count()).select_from(Task).where(Task.job_id == job.id, Task.is_gold.is_(True))
    ):
        raise Conflict("The job has a gold rate but no gold tasks; import some or set gold_rate 0.")
    if job.deadline is not None and job.deadline <= clock.now():
        raise Conflict("The deadline has passed; move it before activating.")
    if billing.free_budget(job.id, job.currency) < billing.hold_cost(job.price_amount):
        raise Conflict(
            "Fund the job before activating it: its free budget does not cover one judgment.",
            free_budget={
                "amount": billing.free_budget(job.id, job.currency),
                "currency": job.currency,
            },
        )
    previous = job.status
    job.status = JobStatus.ACTIVE
    job.activated_at = job.activated_at or clock.now()
    audit.record(
        "job.activated",
        "job",
        job.id,
        organization_id=job.organization_id,
        detail={"from": previous.value},
    )
    db.session.commit()
    return job


def pause_job(job_id: int) -> Job:
    """Stop handing out tasks; live leases may still be submitted."""
    job = get_job_for_update(job_id)
    if job.status != JobStatus.ACTIVE:
        raise Conflict(f"Only active jobs can be paused; this one is {job.status.value}.")
    job.status = JobStatus.PAUSED
    audit.record("job.paused", "job", job.id, organization_id=job.organization_id)
    db.session.commit()
    return job


def cancel_job(job_id: int) -> Job:
    """Stop the job for good: open tasks are cancelled and live leases given back."""
    job = get_job_for_update(job_id, Role.MEMBER)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        raise Conflict(f"The job is already {job.status.value}.")
    now = clock.now()
    live = list(
        db.session.scalars(
            select(Assignment)
            .where(Assignment.job_id == job.id, Assignment.status == AssignmentStatus.LEASED)
            .with_for_update()
        )
    )
    for assignment in live:
        assignment.status = AssignmentStatus.RELEASED
        assignment.release_reason = "job cancelled"
        assignment.ended_at = now
        money.release_hold(assignment)
    db.session.execute(
        update(Task)
        .where(Task.job_id == job.id, Task.status == TaskStatus.OPEN)
        .values(status=TaskStatus.CANCELLED, live_count=0)
    )
    job.status = JobStatus.CANCELLED
    job.completed_at = now
    audit.record(
        "job.cancelled",
        "job",
        job.id,
        organization_id=job.organization_id,
        detail={"leases_released": len(live)},
    )
    db.session.commit()
    return job


def complete_job_if_done(job: Job) -> bool:
    """Mark the job completed when no real task is open (inside the caller's transaction)."""
    if job.status not in (JobStatus.ACTIVE, JobStatus.PAUSED) or _open_task(job.id):
        return False
    job.status = JobStatus.COMPLETED
    job.completed_at = clock.now()
    audit.record("job.completed", "job", job.id, organization_id=job.organization_id)
    events.job_completed(job)
    background.enqueue("jobs.tasks.job_completed", job.id)  # flags, batch labels
    return True


def complete_job_soon(job: Job) -> None:
    """After a task of `job` closed: once this transaction commits, complete the job when no
    real task is left open, in a transaction of its own that takes the job's row first (as
    cancelling does), not while this one holds task rows and money.

    The look happens after the commit, so of the last two tasks closing side by side at
    least one closer sees both closed: each looks only after its own commit, and the one
    that looks second does so after both commits. Nothing is locked until a look finds the
    job done."""
    if job.status not in (JobStatus.ACTIVE, JobStatus.PAUSED):
        return
    after_commit = db.session.info.get(COMPLETE_AFTER_COMMIT)
    if after_commit is not None:  # the caller completes it itself, on its connection
        after_commit.add(job.id)
    else:
        background.enqueue("jobs.tasks.complete_job", job.id)


def complete_job(job_id: int) -> bool:
    """Complete the job if no real task is open (background: see complete_job_soon)."""
    if _open_task(job_id):  # the common case, answered without a lock (nor a commit, which
        return False  # would expire the caller's objects)
    job = get_for_update(Job, job_id)
    done = job is not None and complete_job_if_done(job)
    db.session.commit()
    return done


def _open_task(job_id: int) -> bool:
    # In the lease's order, so the partial index of open tasks (ix_tasks_leasable) answers
    # it: without an order the planner may scan the table for the first open row, which
    # near a big job's end means reading nearly all of it.
    return (
        db.session.scalar(
            select(Task.id)
            .where(Task.job_id == job_id, Task.is_gold.is_(False), Task.status == TaskStatus.OPEN)
            .order_by(Task.priority.desc(), Task.id)
            .limit(1)
        )
        is not None
    )


def list_tasks(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    job = get_job(job_id)
    query = select(Task).where(Task.job_id == job.id)
    if status := args.get("status"):
        query = query.where(Task.status == status)
    if "gold" in args:
        query = query.where(Task.is_gold.is_(args["gold"]))
    return paginate(query, Task.id, args)


def get_task(job_id: int, task_id: int) -> Task:
    job = get_job(job_id)
    task = db.session.get(Task, task_id)
    if task is None or task.job_id != job.id:
        raise NotFound(f"task {task_id} not found")
    return task


def cancel_task(job_id: int, task_id: int) -> Task:
    """Withdraw one task; its live leases are given back."""
    job = get_job_for_update(job_id)
    task = get_for_update(Task, get_task(job.id, task_id).id)
    if task.status != TaskStatus.OPEN:
        raise Conflict(f"The task is already {task.status.value}.")
    now = clock.now()
    for assignment in db.session.scalars(
        select(Assignment)
        .where(Assignment.task_id == task.id, Assignment.status == AssignmentStatus.LEASED)
        .with_for_update()
    ):
        assignment.status = AssignmentStatus.RELEASED
        assignment.release_reason = "task cancelled"
        assignment.ended_at = now
        money.release_hold(assignment)
    task.status = TaskStatus.CANCELLED
    task.live_count = 0
    audit.record("task.cancelled", "task", task.id, organization_id=job.organization_id)
    complete_job_if_done(job)
    db.session.commit()
    return task
