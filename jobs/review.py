"""The review queue: closed tasks a person of the client looks at.

Tasks enter it when they close with low confidence (only possible at the maximum), after an
escalation that did not reach the target, when non-categorical answers were split
(ambiguous), or by sampling at the job's review_rate. Reviewers are the job organisation's
admins and owners, and platform admins. A decision accepts the label, corrects it (method
"review"; the workers who were wrong are counted as disagreeing) or sends the task back for
more judgments (reopened with 1 or 2 more slots, even beyond the job's maximum).
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select

from jobs import accuracy, agreement, answers, events
from jobs.access import get_job, get_job_for_update
from jobs.models import (
    Assignment,
    AssignmentStatus,
    Job,
    JobStatus,
    ReviewItem,
    ReviewStatus,
    Task,
    TaskStatus,
)
from marketplace import audit, clock
from marketplace.accounts.models import Role
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, NotFound, ValidationFailed
from marketplace.locking import get_for_update
from marketplace.pagination import paginate

ACTIONS = {
    "accept": ReviewStatus.ACCEPTED,
    "correct": ReviewStatus.CORRECTED,
    "send_back": ReviewStatus.SENT_BACK,
}


def queue_if_needed(job: Job, task: Task, reason: str | None) -> ReviewItem | None:
    """Put a just-closed task in the review queue when a rule or the sample says so."""
    if reason is None and job.review_rate > 0 and random.random() < job.review_rate:
        reason = "sampled"
    if reason is None:
        return None
    existing = db.session.scalar(
        select(ReviewItem).where(
            ReviewItem.task_id == task.id, ReviewItem.status == ReviewStatus.PENDING
        )
    )
    if existing is not None:
        return existing
    task.review_reason = reason
    item = ReviewItem(
        job_id=job.id,
        task_id=task.id,
        reason=reason,
        status=ReviewStatus.PENDING,
        created_at=clock.now(),
    )
    db.session.add(item)
    return item


def list_reviews(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """The job's review items (reviewers only), oldest first."""
    job = get_job(job_id, Role.ADMIN)
    query = select(ReviewItem).where(ReviewItem.job_id == job.id)
    if status := args.get("status"):
        query = query.where(ReviewItem.status == status)
    return paginate(query, ReviewItem.id, args)


def _same_decision(item: ReviewItem, data: dict[str, Any]) -> bool:
    if ACTIONS[data["action"]] != item.status:
        return False
    if item.status == ReviewStatus.CORRECTED:
        return answers.canonical(item.answer) == answers.canonical(data.get("answer"))
    return True


def decide(review_id: int, data: dict[str, Any]) -> ReviewItem:
    """Record a reviewer's decision; repeating the same decision returns it unchanged."""
    found = db.session.get(ReviewItem, review_id)
    if found is None:
        raise NotFound(f"review {review_id} not found")
    job = get_job(found.job_id, Role.ADMIN)
    if data["action"] == "send_back":
        # The job's row first (as cancel does): send_back may reopen a completed job. Only
        # then: a correction locks workers' quality rows, which a closing submit holds while
        # it waits for the job's row (to complete the job).
        job = get_job_for_update(found.job_id, Role.ADMIN)
    item = get_for_update(ReviewItem, review_id)
    if item.status != ReviewStatus.PENDING:
        if _same_decision(item, data):
            return item
        raise Conflict(
            f"This review was already decided ({item.status.value}).",
            review_status=item.status.value,
        )
    task = get_for_update(Task, item.task_id)
    if task.status != TaskStatus.COMPLETED:
        raise Conflict(f"The task is {task.status.value}; only closed tasks are reviewed.")
    action = data["action"]
    if action == "correct":
        _correct(job, task, data["answer"])
        item.answer = data["answer"]
    elif action == "send_back":
        _send_back(job, task, data.get("extra", 1))
    item.status = ACTIONS[action]
    item.decided_by_user_id = principal().user_id
    item.decided_at = clock.now()
    audit.record(
        "review.decided",
        "task",
        task.id,
        organization_id=job.organization_id,
        detail={"review_id": item.id, "action": action},
    )
    db.session.commit()
    return item


def _correct(job: Job, task: Task, answer: Any) -> None:
    if problem := answers.check_answer(job.answer_spec, answer):
        raise ValidationFailed(
            f"The answer does not fit the job's answer_spec: {problem}.",
            errors={"answer": [problem]},
        )
    kind, threshold = job.answer_spec["type"], job.agreement_threshold
    judged = db.session.scalars(
        select(Assignment).where(
            Assignment.task_id == task.id, Assignment.status == AssignmentStatus.ACCEPTED
        )
    )
    accuracy.correct_agreement(
        job.id,
        [
            (
                a.worker_id,
                agreement.agree(kind, a.answer, task.final_answer, threshold),
                agreement.agree(kind, a.answer, answer, threshold),
                a.answer,
            )
            for a in judged
        ],
        task.final_answer,
        answer,
    )
    previous = task.final_answer
    task.final_answer = answer
    task.confidence = 1.0
    task.method = "review"
    if answers.canonical(previous) != answers.canonical(answer):
        events.labels_changed_by_review(job, task, previous)


def _send_back(job: Job, task: Task, extra: int) -> None:
    task.reopen(task.submitted_count + task.live_count + extra)
    if job.status == JobStatus.COMPLETED:
        job.status = JobStatus.ACTIVE
        job.completed_at = None


def review_view(item: ReviewItem) -> dict[str, Any]:
    """A review item with what the reviewer needs: the task's data, label and judgments."""
    task = db.session.get(Task, item.task_id)
    judgments = db.session.scalars(
        select(Assignment.answer)
        .where(
            Assignment.task_id == task.id,
            Assignment.status.in_((AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED)),
        )
        .order_by(Assignment.id)
    )
    return {
        "id": item.id,
        "job_id": item.job_id,
        "task_id": item.task_id,
        "reason": item.reason,
        "status": item.status.value,
        "answer": item.answer,
        "created_at": item.created_at,
        "decided_at": item.decided_at,
        "task": {
            "external_id": task.external_id,
            "payload": task.payload,
            "status": task.status.value,
            "final_answer": task.final_answer,
            "confidence": task.confidence,
            "method": task.method,
            "judgments": list(judgments),
        },
    }
