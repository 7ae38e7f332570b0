"""Adaptive consensus: after each real judgment, decide whether the task closes, asks one
more worker, or escalates (see jobs.consensus for the posterior).

Votes are the task's judgments that are submitted or accepted (a task reopened by a reviewer
keeps its earlier, already paid votes; voided and rejected ones never count), each weighted
by its worker's estimated accuracy in the job, plus the model pre-label as one vote whose
accuracy is its confidence shrunk towards chance: `chance + PRELABEL_SHRINK * (c - chance)`
(models are over-confident; a 0.95 pre-label on two labels weighs as a 0.86 worker).

Everything runs inside submit's transaction with the task row locked: the adaptive target
changes only under that lock (invariant 1). Lock order: task row, workers' quality rows (by
worker id), then money, last (the job's holds account, workers' accounts, the platform's fees).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from billing.models import LedgerAccount, OwnerType, Purpose
from jobs import accuracy, agreement, answers, consensus, escalation, events, money, review
from jobs.models import Assignment, AssignmentStatus, Job, Task, TaskStatus, WorkerJobQuality
from jobs.services import complete_job_soon
from marketplace import clock
from marketplace.database import db

PRELABEL_SHRINK = 0.8
VOTING = (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED)
# The candidate for "none of the answers given" where answers are not a fixed label set, so
# unanimous votes do not make a certainty (a one-candidate posterior is always 1).
OTHER = "\x00other"


def lock_job_money(job_id: int) -> None:
    """Lock the job's escrow account before moving a job's money outside the task loop's
    hot path (gold answers, late judgments, removals, voiding): those paths lock the escrow
    first, as leases do, so they queue behind one row. Closing a task no longer takes it:
    settlement there is the transaction's last write, worker accounts exist before it
    (billing.open_worker_pay), and whether the job is done is looked at after the commit
    (services.complete_job_soon)."""
    db.session.execute(
        select(LedgerAccount.id)
        .where(
            LedgerAccount.owner_type == OwnerType.JOB,
            LedgerAccount.owner_id == job_id,
            LedgerAccount.purpose == Purpose.ESCROW,
        )
        .with_for_update()
    )


def calibrated_prelabel(confidence: float, labels: int) -> float:
    chance = 1 / max(labels, 2)
    return chance + PRELABEL_SHRINK * (min(max(confidence, 0.0), 1.0) - chance)


@dataclass
class Ballot:
    judged: list[Assignment]  # human votes, oldest first
    keys: list[str]  # one answer key per judged vote
    values: dict[str, Any]  # a representative answer per key
    votes: list[consensus.Vote]  # human votes, then the pre-label's
    # The judges' quality rows, locked (those that exist yet).
    quality: dict[int, WorkerJobQuality] = field(default_factory=dict)


def ballot(job: Job, task: Task) -> Ballot:
    """The task's current votes, clustered into answer keys and weighted."""
    judged = list(
        db.session.scalars(
            select(Assignment)
            .where(Assignment.task_id == task.id, Assignment.status.in_(VOTING))
            .order_by(Assignment.submitted_at, Assignment.id)
        )
    )
    kind = job.answer_spec["type"]
    values = [a.answer for a in judged]
    prelabelled = task.prelabel is not None and task.prelabel_confidence is not None
    if prelabelled:
        values.append(task.prelabel)
    keys = agreement.cluster_keys(kind, values, job.agreement_threshold)
    # Locked now, in worker order, since closing the task counts agreement on them.
    quality: dict[int, WorkerJobQuality] = {}
    weights = accuracy.accuracies(job.id, [a.worker_id for a in judged], locked=quality)
    votes = [consensus.Vote(keys[i], weights[a.worker_id]) for i, a in enumerate(judged)]
    if prelabelled:
        labels = len(job.answer_spec.get("labels", [])) if kind == "single_choice" else 2
        votes.append(
            consensus.Vote(keys[-1], calibrated_prelabel(task.prelabel_confidence, labels))
        )
    representative: dict[str, Any] = {}
    for key, value in zip(keys, values, strict=True):
        representative.setdefault(key, value)
    return Ballot(judged, keys[: len(judged)], representative, votes, quality)


def judge_task(job: Job, task: Task) -> consensus.Decision | None:
    """Apply consensus after a judgment of `task` (whose row the caller holds locked)."""
    if task.status == TaskStatus.COMPLETED:
        _late_judgments(job, task)
        return None
    if task.status != TaskStatus.OPEN:
        return None  # cancelled: judgments stay as they are
    current = ballot(job, task)
    human = len(current.judged)
    maximum = escalation.maximum(job, task)
    if job.answer_spec["type"] == "single_choice":  # every label is a candidate, as a key
        labels = [answers.canonical(label) for label in job.answer_spec["labels"]]
    else:  # open answer spaces: "something nobody said" is a candidate too
        labels = [OTHER]
    decision, key, confidence = consensus.decide(
        current.votes,
        human_judgments=human,
        minimum=job.redundancy_min,
        maximum=maximum,
        target_confidence=job.target_confidence,
        labels=labels,
    )
    if key is not None and key not in current.values:
        decision, key, confidence = _unvoted_best(
            current, labels, decision, key, confidence, human, maximum
        )
    if decision == consensus.Decision.CLOSE:
        close(job, task, current, key, confidence, None)
    elif decision == consensus.Decision.EXTEND:
        task.redundancy_target = max(task.redundancy_target, min(human + 1, maximum))
    elif not escalation.escalate(job, task, human):
        reason = "escalated" if task.escalation_level else "low_confidence"
        close(job, task, current, key, confidence, reason)
    return decision


def _unvoted_best(current, labels, decision, key, confidence, human, maximum):
    """The posterior's best answer is one nobody gave: a label (a weak vote against the
    others) is a fine answer; OTHER never is — take the best given answer, never closing."""
    if key != OTHER:
        current.values[key] = json.loads(key)
        return decision, key, confidence
    probabilities = consensus.posterior(current.votes, labels).probabilities
    given = {k: p for k, p in probabilities.items() if k in current.values}
    best = max(given, key=lambda k: (given[k], k)) if given else None
    if decision == consensus.Decision.CLOSE:
        decision = consensus.Decision.EXTEND if human < maximum else consensus.Decision.ESCALATE
    return decision, best, given.get(best, 0.0)


def close(
    job: Job,
    task: Task,
    current: Ballot,
    key: str | None,
    confidence: float,
    review_reason: str | None,
    method: str = "posterior",
) -> None:
    """Close the task on `key`: settle its undecided judgments, count agreement, announce."""
    if key is None:  # no votes at all (every judgment was rejected): leave it open
        return
    task.final_answer = current.values[key]
    task.confidence = round(confidence, 4)
    task.method = method
    task.status = TaskStatus.COMPLETED
    task.completed_at = clock.now()
    newly = [
        (a, k)
        for a, k in zip(current.judged, current.keys, strict=True)
        if a.status == AssignmentStatus.SUBMITTED
    ]
    accuracy.record_agreement(
        job.id,
        [(a.worker_id, k == key, a.answer) for a, k in newly],
        task.final_answer,
        current.quality,
    )
    if review_reason is None and _ambiguous(current, key):
        review_reason = "ambiguous"
    events.task_completed(job, task)
    review.queue_if_needed(job, task, review_reason)
    complete_job_soon(job)
    # Money last: settling locks the job's holds account and the platform's fees account,
    # which every settlement needs, so they are held only from here to the commit.
    for assignment, _ in newly:
        assignment.status = AssignmentStatus.ACCEPTED
    money.settle_judgments(job, [assignment for assignment, _ in newly])


def _ambiguous(current: Ballot, key: str) -> bool:
    """Non-categorical answers whose winning cluster holds under half of the human votes."""
    human = len(current.keys)
    return human >= 3 and 2 * current.keys.count(key) < human


def _late_judgments(job: Job, task: Task) -> None:
    """Judgments of a lease that was still live when its task closed: accepted and paid."""
    late = list(
        db.session.scalars(
            select(Assignment).where(
                Assignment.task_id == task.id, Assignment.status == AssignmentStatus.SUBMITTED
            )
        )
    )
    if not late:
        return
    kind = job.answer_spec["type"]
    accuracy.record_agreement(
        job.id,
        [
            (
                a.worker_id,
                agreement.agree(kind, a.answer, task.final_answer, job.agreement_threshold),
                a.answer,
            )
            for a in late
        ],
        task.final_answer,
    )
    lock_job_money(job.id)
    for assignment in late:
        assignment.status = AssignmentStatus.ACCEPTED
    money.settle_judgments(job, late)


def reject_pending_of_removed(worker_id: int, job_id: int) -> int:
    """Reject the undecided judgments of a worker removed from a job, one task per
    transaction, and decide each task again without them. Returns how many were rejected."""
    job = db.session.get(Job, job_id)
    pending = list(
        db.session.execute(
            select(Assignment.id, Assignment.task_id)
            .where(
                Assignment.job_id == job_id,
                Assignment.worker_id == worker_id,
                Assignment.status == AssignmentStatus.SUBMITTED,
                Assignment.is_gold.is_(False),
            )
            .order_by(Assignment.task_id)
        )
    )
    rejected = 0
    for assignment_id, task_id in pending:
        assignment = db.session.get(
            Assignment, assignment_id, with_for_update=True, populate_existing=True
        )
        task = db.session.get(Task, task_id, with_for_update=True, populate_existing=True)
        if assignment.status != AssignmentStatus.SUBMITTED:
            db.session.commit()
            continue
        assignment.status = AssignmentStatus.REJECTED
        assignment.release_reason = "removed from the job: accuracy below its minimum"
        task.submitted_count = max(0, task.submitted_count - 1)  # the slot goes to someone else
        db.session.flush()
        judge_task(job, task)
        lock_job_money(job.id)
        money.release_hold(assignment)
        db.session.commit()
        rejected += 1
    return rejected
