"""Batch Dawid–Skene per job: refit every worker's confusion matrix on all of a job's
judgments (gold clamped to its known answers) and write back the refined labels.

A run is queued when a job completes (`aggregate_completed_job`, enqueued after the commit
that completed it) or on a client's request (`request_run`); `perform_run` is the RQ job.
Only labels the online consensus set are rewritten: a label set by review stays.
Single-choice answers are classes by label; multi-choice answers are classes by the whole
set chosen (each distinct set seen is one class).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flask import current_app
from sqlalchemy import bindparam, or_, select, update

from jobs import answers, events
from jobs.access import get_job, get_job_for_update
from jobs.aggregation import dawid_skene
from jobs.batch_models import AggregationRun, AggregationStatus
from jobs.consensus import MAX_ACCURACY, MIN_ACCURACY, PRIOR_CORRECT, PRIOR_WRONG
from jobs.models import Assignment, AssignmentStatus, Job, Task, TaskStatus
from marketplace import audit, background, clock
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import NotFound, ValidationFailed
from marketplace.locking import get_for_update
from marketplace.pagination import paginate

log = logging.getLogger(__name__)

METHOD = "dawid_skene"
CATEGORICAL = ("single_choice", "multi_choice")
# Labels a batch pass must never overwrite: a person decided them.
REVIEW = "review"
# A job this small gives Dawid–Skene too little to fit confusion matrices on; the automatic
# run after completion skips it (a client may still ask for one).
AUTO_MIN_TASKS_DEFAULT = 20
# Changes kept on the run record (the count is always exact).
MAX_CHANGES_KEPT = 20_000
ACTIVE = (AggregationStatus.QUEUED, AggregationStatus.RUNNING)


def _check_categorical(job: Job) -> None:
    kind = (job.answer_spec or {}).get("type")
    if kind not in CATEGORICAL:
        raise ValidationFailed(
            f"Batch aggregation needs a single_choice or multi_choice job; this one is {kind}.",
            errors={"answer_spec": [f"type {kind} has no categorical labels"]},
        )


def _active_run(job_id: int) -> AggregationRun | None:
    return db.session.scalar(
        select(AggregationRun)
        .where(AggregationRun.job_id == job_id, AggregationRun.status.in_(ACTIVE))
        .order_by(AggregationRun.id)
        .limit(1)
    )


def _queue(job: Job, trigger: str, user_id: int | None) -> AggregationRun:
    run = AggregationRun(
        job_id=job.id,
        status=AggregationStatus.QUEUED,
        method=METHOD,
        trigger=trigger,
        requested_by_user_id=user_id,
        created_at=clock.now(),
    )
    db.session.add(run)
    db.session.flush()
    background.enqueue("jobs.batch.perform_run", run.id)
    return run


def request_run(job_id: int) -> AggregationRun:
    """Queue a Dawid–Skene pass over the job (or return the one already queued or running)."""
    job = get_job_for_update(job_id)  # serialises concurrent requests on the job row
    _check_categorical(job)
    run = _active_run(job.id)
    if run is None:
        run = _queue(job, "request", principal().user_id)
        audit.record(
            "aggregation.requested",
            "job",
            job.id,
            organization_id=job.organization_id,
            detail={"run_id": run.id},
        )
    db.session.commit()
    return run


def aggregate_completed_job(job_id: int) -> int | None:
    """Background job enqueued when a job completes: queue and run a pass if it fits."""
    job = get_for_update(Job, job_id)
    minimum = current_app.config.get("BATCH_AUTO_MIN_TASKS", AUTO_MIN_TASKS_DEFAULT)
    if job is None or (job.answer_spec or {}).get("type") not in CATEGORICAL:
        db.session.rollback()
        return None
    real_tasks = db.session.scalar(
        select(db.func.count())
        .select_from(Task)
        .where(Task.job_id == job.id, Task.is_gold.is_(False))
    )
    if real_tasks < minimum or _active_run(job.id) is not None:
        db.session.rollback()
        return None
    run = _queue(job, "job_completed", None)
    db.session.commit()
    return run.id


def list_runs(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    job = get_job(job_id)
    return paginate(
        select(AggregationRun).where(AggregationRun.job_id == job.id), AggregationRun.id, args
    )


def get_run(job_id: int, run_id: int) -> AggregationRun:
    job = get_job(job_id)
    run = db.session.get(AggregationRun, run_id)
    if run is None or run.job_id != job.id:
        raise NotFound(f"aggregation run {run_id} not found")
    return run


# --- the run ------------------------------------------------------------------------------


def perform_run(run_id: int) -> str | None:
    """Run one queued pass; a failure is recorded on the run, never raised."""
    run = get_for_update(AggregationRun, run_id)
    if run is None or run.status != AggregationStatus.QUEUED:
        db.session.rollback()
        return None
    run.status = AggregationStatus.RUNNING
    run.started_at = clock.now()
    db.session.commit()
    try:
        outcome = _aggregate(run)
    except Exception as error:  # recorded for the client; the job must not crash a worker
        log.exception("aggregation run %s failed", run_id)
        db.session.rollback()
        run = db.session.get(AggregationRun, run_id)
        run.status = AggregationStatus.FAILED
        run.error = f"{type(error).__name__}: {error}"[:2000]
        run.finished_at = clock.now()
        db.session.commit()
        return run.status.value
    return outcome


class _Classes:
    """Maps answers to class indices and back."""

    def __init__(self, spec: dict[str, Any], keys: list[str], values: dict[str, Any]):
        if spec.get("type") == "single_choice":
            labels = list(spec["labels"])
            self.keys = [answers.canonical(label) for label in labels]
            self.values = labels
        else:
            self.keys = sorted(set(keys))
            self.values = [values[key] for key in self.keys]
        self.index = {key: i for i, key in enumerate(self.keys)}


def _load(job_id: int):
    """All judgments that count (one query) and the gold answers, as arrays."""
    rows = db.session.execute(
        select(Assignment.task_id, Assignment.worker_id, Assignment.answer, Task.is_gold)
        .join(Task, Task.id == Assignment.task_id)
        .where(
            Assignment.job_id == job_id,
            or_(
                Assignment.status.in_([AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED]),
                # gold judgments teach the confusion matrices, right or wrong
                Task.is_gold.is_(True) & (Assignment.status == AssignmentStatus.REJECTED),
            ),
        )
    ).all()
    gold = db.session.execute(
        select(Task.id, Task.gold_answer).where(
            Task.job_id == job_id, Task.is_gold.is_(True), Task.gold_answer.is_not(None)
        )
    ).all()
    return rows, gold


def _aggregate(run: AggregationRun) -> str:
    job = db.session.get(Job, run.job_id)
    rows, gold = _load(job.id)
    keys = [answers.canonical(row.answer) for row in rows]
    gold_keys = [answers.canonical(answer) for _, answer in gold]
    values = {key: row.answer for key, row in zip(keys, rows, strict=True)}
    values.update({key: answer for key, (_, answer) in zip(gold_keys, gold, strict=True)})
    classes = _Classes(job.answer_spec, keys + gold_keys, values)
    known = np.array([classes.index.get(key, -1) for key in keys], dtype=np.int64)
    # an answer outside the spec (the spec cannot change after activation, so never in
    # practice) is left out rather than guessed at
    keep = known >= 0
    task_ids = np.array([row.task_id for row in rows], dtype=np.int64)[keep]
    worker_ids = np.array([row.worker_id for row in rows], dtype=np.int64)[keep]
    label_index = known[keep]
    gold_task_ids = np.array([task_id for task_id, _ in gold], dtype=np.int64)
    gold_labels = np.array([classes.index.get(key, -1) for key in gold_keys], dtype=np.int64)
    gold_task_ids, gold_labels = gold_task_ids[gold_labels >= 0], gold_labels[gold_labels >= 0]
    tasks, task_index = np.unique(np.concatenate([task_ids, gold_task_ids]), return_inverse=True)
    workers, worker_index = np.unique(worker_ids, return_inverse=True)
    n_labels = len(classes.keys)
    if not task_ids.size or n_labels == 0:
        return _finish(run, tasks=0, workers=0, judgments=0, gold_tasks=int(gold_task_ids.size))
    judged = task_index[: task_ids.size]
    gold_index = task_index[task_ids.size :]
    result = dawid_skene(
        judged,
        worker_index,
        label_index,
        n_tasks=int(tasks.size),
        n_workers=int(workers.size),
        n_labels=n_labels,
        gold_tasks=gold_index,
        gold_labels=gold_labels,
        initial_accuracy=_gold_accuracy(
            judged,
            worker_index,
            label_index,
            gold_index,
            gold_labels,
            int(tasks.size),
            int(workers.size),
        ),  # fmt: skip
    )
    written, changes, changed = _write_labels(job.id, tasks, result, classes)
    return _finish(
        run,
        tasks=int(tasks.size),
        workers=int(workers.size),
        judgments=int(task_ids.size),
        gold_tasks=int(gold_task_ids.size),
        labels=n_labels,
        labels_written=written,
        labels_changed=changed,
        changes=changes,
        iterations=result.iterations,
        converged=result.converged,
        log_likelihood=float(result.log_likelihood),
    )


def _gold_accuracy(judged, worker_index, label_index, gold_index, gold_labels, n_tasks, n_workers):
    """Each worker's smoothed gold accuracy, where EM starts: starting from the majority vote
    instead lets a wrong majority (spammers agreeing) pull EM into its own local optimum."""
    truth = np.full(n_tasks, -1, dtype=np.int64)
    truth[gold_index] = gold_labels
    on_gold = truth[judged] >= 0
    right = np.bincount(
        worker_index[on_gold],
        weights=(label_index[on_gold] == truth[judged][on_gold]).astype(np.float64),
        minlength=n_workers,
    )
    seen = np.bincount(worker_index[on_gold], minlength=n_workers).astype(np.float64)
    accuracy = (PRIOR_CORRECT + right) / (PRIOR_CORRECT + PRIOR_WRONG + seen)
    return np.clip(accuracy, MIN_ACCURACY, MAX_ACCURACY)


def _write_labels(job_id: int, tasks: np.ndarray, result, classes: _Classes):
    """Bulk-update the labels of completed, consensus-closed tasks; return what changed."""
    current = db.session.execute(
        select(Task.id, Task.final_answer, Task.confidence, Task.method).where(
            Task.job_id == job_id,
            Task.is_gold.is_(False),
            Task.status == TaskStatus.COMPLETED,
            Task.method.is_not(None),
            Task.method != REVIEW,
        )
    ).all()
    position = {int(task_id): i for i, task_id in enumerate(tasks.tolist())}
    params, changes = [], []
    changed = 0
    for task_id, previous, previous_confidence, previous_method in current:
        i = position.get(task_id)
        if i is None:
            continue  # closed without judgments (e.g. by a pre-label): nothing to refit
        label = int(result.labels[i])
        answer = classes.values[label]
        confidence = round(float(result.confidence[i]), 4)
        params.append({"b_task": task_id, "b_answer": answer, "b_confidence": confidence})
        if answers.canonical(previous) != classes.keys[label]:
            changed += 1
            if len(changes) < MAX_CHANGES_KEPT:
                changes.append(
                    {
                        "task_id": task_id,
                        "previous_answer": previous,
                        "previous_confidence": previous_confidence,
                        "previous_method": previous_method,
                        "answer": answer,
                        "confidence": confidence,
                    }
                )
    if params:
        table = Task.__table__
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("b_task"),
                table.c.status == TaskStatus.COMPLETED.value,
                # re-checked at write time: a reviewer may have decided the task meanwhile
                table.c.method != REVIEW,
            )
            .values(
                final_answer=bindparam("b_answer", type_=table.c.final_answer.type),
                confidence=bindparam("b_confidence"),
                method=METHOD,
            )
        )
        db.session.execute(statement, params)
    return len(params), changes, changed


def _finish(run: AggregationRun, **figures: Any) -> str:
    for name, value in figures.items():
        setattr(run, name, value)
    run.status = AggregationStatus.SUCCEEDED
    run.finished_at = clock.now()
    job = db.session.get(Job, run.job_id)
    if run.labels_changed:
        events.labels_changed_by_aggregation(job, run.id, run.labels_changed)
    audit.record(
        "aggregation.finished",
        "job",
        run.job_id,
        organization_id=job.organization_id,
        detail={"run_id": run.id, "labels_changed": run.labels_changed},
    )
    db.session.commit()
    return run.status.value
