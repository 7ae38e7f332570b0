"""Worker accuracy per job: gold results (at once, inside submit) and agreement with the final
label (when a task closes), smoothed by the Beta prior of jobs.consensus.

Lock order: the task row first, then these rows (several at once: by worker id), then the
job's money. The accuracy floor (`requirements.min_accuracy`) removes a worker from a job;
their undecided judgments there are rejected and their tasks re-decided by a background job
that takes each task row before anything else (see `reject_pending_of_removed`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ScalarSelect, case, func, select
from sqlalchemy.exc import IntegrityError

from credentials import skills as skill_service
from credentials.models import SkillSource, WorkerSkill
from jobs import consensus, gold
from jobs.models import Assignment, Job, JobRemoval, WorkerJobQuality
from marketplace import audit, background, clock
from marketplace.database import db
from workers.models import WorkerProfile

# The floor applies only once a worker has this many gold answers in the job.
MIN_GOLD_FOR_FLOOR = 4
# Measured accuracy sets a skill's level (source "performance") from this many gold answers
# across the jobs requiring the skill, when it moves the level by at least LEVEL_STEP.
MIN_GOLD_FOR_LEVEL = 10
LEVEL_STEP = 5


def estimate(row: WorkerJobQuality | None) -> float:
    """The smoothed accuracy from gold and agreement evidence (the prior mean for newcomers)."""
    if row is None:
        return consensus.estimated_accuracy(0, 0)
    return consensus.estimated_accuracy(
        row.gold_correct + row.agreed, row.gold_wrong + row.disagreed
    )


def interval(row: WorkerJobQuality | None) -> tuple[float, float]:
    if row is None:
        return consensus.accuracy_interval(0, 0)
    return consensus.accuracy_interval(
        row.gold_correct + row.agreed, row.gold_wrong + row.disagreed
    )


def accuracies(
    job_id: int, worker_ids: list[int], locked: dict[int, WorkerJobQuality] | None = None
) -> dict[int, float]:
    """Estimated accuracy of each worker in a job: weights for consensus. Given `locked`, the
    rows are locked as locked_rows locks them (in worker order, one statement) and kept there,
    so that closing the task need not look them up again (missing rows stay missing)."""
    query = select(WorkerJobQuality).where(
        WorkerJobQuality.job_id == job_id, WorkerJobQuality.worker_id.in_(sorted(set(worker_ids)))
    )
    if locked is not None:
        query = (
            query.order_by(WorkerJobQuality.worker_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    rows = {row.worker_id: row for row in db.session.scalars(query)}
    if locked is not None:
        locked.update(rows)
    return {w: estimate(rows.get(w)) for w in worker_ids}


def locked_row(worker_id: int, job_id: int) -> WorkerJobQuality:
    """The (worker, job) row, locked; created on first use."""
    query = (
        select(WorkerJobQuality)
        .where(WorkerJobQuality.worker_id == worker_id, WorkerJobQuality.job_id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = db.session.scalar(query)
    if row is not None:
        return row
    attempt = db.session.begin_nested()
    try:
        row = WorkerJobQuality(
            worker_id=worker_id,
            job_id=job_id,
            gold_correct=0,
            gold_wrong=0,
            agreed=0,
            disagreed=0,
            confusion={},
            updated_at=clock.now(),
        )
        db.session.add(row)
        db.session.flush()
        attempt.commit()
        return row
    except IntegrityError:  # a concurrent first use created it
        attempt.rollback()
        return db.session.scalar(query)


def _count_confusion(row: WorkerJobQuality, truth: Any, given: Any, delta: int = 1) -> None:
    if not isinstance(truth, str) or not isinstance(given, str):
        return  # single_choice answers only
    confusion = {k: dict(v) for k, v in (row.confusion or {}).items()}
    cell = confusion.setdefault(truth, {})
    cell[given] = max(0, cell.get(given, 0) + delta)
    row.confusion = confusion  # a new object, so the JSON column is written


def record_gold(job: Job, worker: WorkerProfile, correct: bool, truth: Any, given: Any) -> None:
    """Count one gold answer at once (the caller holds the task row), then apply the floor."""
    row = locked_row(worker.id, job.id)
    if correct:
        row.gold_correct += 1
    else:
        row.gold_wrong += 1
    _count_confusion(row, truth, given)
    row.updated_at = clock.now()
    enforce_floor(job, worker.id, row)


def locked_rows(
    worker_ids: list[int], job_id: int, locked: dict[int, WorkerJobQuality] | None = None
) -> dict[int, WorkerJobQuality]:
    """The (worker, job) rows of several workers, locked in worker order in one statement
    (as locked_row would, one by one); created on first use. `locked`: rows this transaction
    already holds locked (accuracies), not looked up again."""
    if locked is not None:  # the rows that existed are held; the missing ones are made below
        rows = {w: locked[w] for w in worker_ids if w in locked}
    else:
        rows = {
            row.worker_id: row
            for row in db.session.scalars(
                select(WorkerJobQuality)
                .where(
                    WorkerJobQuality.worker_id.in_(sorted(set(worker_ids))),
                    WorkerJobQuality.job_id == job_id,
                )
                .order_by(WorkerJobQuality.worker_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
    for worker_id in sorted(set(worker_ids) - set(rows)):
        rows[worker_id] = locked_row(worker_id, job_id)
    return rows


def record_agreement(
    job_id: int,
    judged: list[tuple[int, bool, Any]],
    final: Any,
    locked: dict[int, WorkerJobQuality] | None = None,
) -> None:
    """Count agreement with a task's final label: `judged` is (worker id, agreed, answer);
    `locked` as for locked_rows."""
    rows = locked_rows([worker_id for worker_id, _, _ in judged], job_id, locked)
    for worker_id, agreed, given in judged:
        row = rows[worker_id]
        if agreed:
            row.agreed += 1
        else:
            row.disagreed += 1
        _count_confusion(row, final, given)
        row.updated_at = clock.now()


def correct_agreement(
    job_id: int, judged: list[tuple[int, bool, bool, Any]], old_final: Any, new_final: Any
) -> None:
    """A reviewer changed the final label: move each judgment's agreement and confusion count.
    `judged` is (worker id, agreed with the old label, agrees with the new one, answer)."""
    rows = locked_rows([worker_id for worker_id, *_ in judged], job_id)
    for worker_id, agreed_before, agrees_now, given in judged:
        row = rows[worker_id]
        if agreed_before:
            row.agreed = max(0, row.agreed - 1)
        else:
            row.disagreed = max(0, row.disagreed - 1)
        if agrees_now:
            row.agreed += 1
        else:
            row.disagreed += 1
        _count_confusion(row, old_final, given, -1)
        _count_confusion(row, new_final, given)
        row.updated_at = clock.now()


def min_accuracy(job: Job) -> float | None:
    return (job.requirements or {}).get("min_accuracy")


def enforce_floor(job: Job, worker_id: int, row: WorkerJobQuality) -> bool:
    """Remove the worker from the job when measured below its floor; True if removed now."""
    floor = min_accuracy(job)
    gold = row.gold_correct + row.gold_wrong
    if floor is None or gold < MIN_GOLD_FOR_FLOOR:
        return False
    measured = estimate(row)
    if measured >= floor or is_removed(worker_id, job.id):
        return False
    db.session.add(
        JobRemoval(
            worker_id=worker_id,
            job_id=job.id,
            reason=f"measured accuracy {measured:.2f} is below the job's minimum {floor:.2f}",
            accuracy=round(measured, 4),
            created_at=clock.now(),
        )
    )
    db.session.flush()
    audit.record(
        "worker.removed_from_job",
        "worker",
        worker_id,
        detail={"job_id": job.id, "accuracy": round(measured, 4), "min_accuracy": floor},
    )
    # After commit, task by task (task rows before quality rows, as everywhere).
    background.enqueue("jobs.tasks.reject_pending_of_removed", worker_id, job.id)
    return True


def is_removed(worker_id: int, job_id: int) -> bool:
    return (
        db.session.scalar(
            select(JobRemoval.id).where(
                JobRemoval.worker_id == worker_id, JobRemoval.job_id == job_id
            )
        )
        is not None
    )


def removed_job_ids(worker_id: int) -> set[int]:
    return set(
        db.session.scalars(select(JobRemoval.job_id).where(JobRemoval.worker_id == worker_id))
    )


def removal_reason_column(worker_id: int, job_id: Any) -> ScalarSelect:
    """The reason the worker was removed from the job (None: not removed), as a column to
    select with others; `job_id` may be a column (Job.id)."""
    return (
        select(JobRemoval.reason)
        .where(JobRemoval.worker_id == worker_id, JobRemoval.job_id == job_id)
        .scalar_subquery()
    )


def removal_problem(reason: str) -> dict[str, Any]:
    """A removal as a problem's reason (for leasing and submitting)."""
    return {"code": "accuracy_below_minimum", "requirement": "min_accuracy", "detail": reason}


def revealed_gold(worker_id: int) -> dict[int, tuple[int, int]]:
    """(right, wrong) gold answers per job older than the gold reveal delay: what a worker
    may see, and what skill levels are set from (a level that moved the moment a task was
    submitted would tell it was gold)."""
    cutoff = clock.now() - timedelta(seconds=gold.GOLD_REVEAL_SECONDS)
    rows = db.session.execute(
        select(
            Assignment.job_id,
            func.sum(case((Assignment.gold_correct.is_(True), 1), else_=0)),
            func.sum(case((Assignment.gold_correct.is_(False), 1), else_=0)),
        )
        .where(
            Assignment.worker_id == worker_id,
            Assignment.is_gold.is_(True),
            Assignment.submitted_at <= cutoff,
        )
        .group_by(Assignment.job_id)
    ).all()
    return {job_id: (int(right or 0), int(wrong or 0)) for job_id, right, wrong in rows}


def skill_totals(worker_id: int) -> dict[str, dict[str, Any]]:
    """Per skill the worker's jobs require: revealed gold and agreement summed over those
    jobs, with the accuracy estimate and interval."""
    rows = db.session.execute(
        select(WorkerJobQuality, Job.requirements)
        .join(Job, Job.id == WorkerJobQuality.job_id)
        .where(WorkerJobQuality.worker_id == worker_id)
    ).all()
    revealed = revealed_gold(worker_id) if rows else {}
    totals: dict[str, dict[str, Any]] = {}
    for row, requirements in rows:
        right, wrong = revealed.get(row.job_id, (0, 0))
        for requirement in (requirements or {}).get("skills", []):
            t = totals.setdefault(
                requirement["skill"], {"gold": 0, "right": 0, "wrong": 0, "jobs": 0}
            )
            t["jobs"] += 1
            t["gold"] += right + wrong
            t["right"] += right + row.agreed
            t["wrong"] += wrong + row.disagreed
    for t in totals.values():
        t["accuracy"] = consensus.estimated_accuracy(t["right"], t["wrong"])
        t["interval"] = consensus.accuracy_interval(t["right"], t["wrong"])
    return totals


def feed_skill_levels(job: Job, worker: WorkerProfile) -> None:
    """Set the level of each skill the job requires from the measured accuracy over the jobs
    requiring it, once MIN_GOLD_FOR_LEVEL gold answers are revealed (history: every change is
    audited by credentials.skills.set_skill_level). Called on every judgment, after the
    money moved (lock order), so a change says nothing about the task just submitted."""
    required = [r["skill"] for r in (job.requirements or {}).get("skills", [])]
    if not required:
        return
    totals = skill_totals(worker.id)
    for slug in required:
        t = totals.get(slug)
        skill = skill_service.skill_by_slug(slug)
        if t is None or skill is None or t["gold"] < MIN_GOLD_FOR_LEVEL:
            continue
        level = round(100 * t["accuracy"])
        current = db.session.scalar(
            select(WorkerSkill.level).where(
                WorkerSkill.worker_id == worker.id, WorkerSkill.skill_id == skill.id
            )
        )
        if current is None or abs(current - level) >= LEVEL_STEP:
            skill_service.set_skill_level(
                worker, skill, level, SkillSource.PERFORMANCE, source_ref=f"job:{job.id}"
            )
