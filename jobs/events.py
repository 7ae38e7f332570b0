"""Events clients subscribe to with webhooks: job.completed, task.completed, job.budget_low,
and job.labels_changed (a label already announced was changed: by a reviewer's correction, or
by the job's Dawid–Skene pass).

Each hook is called inside the transaction that causes the event and writes one
`WebhookDelivery` per subscribed endpoint in it, so a rolled-back change announces nothing;
sending happens after commit (jobs/webhooks.py).

task.completed batching — every completed task is announced exactly once to every endpoint
subscribed when it completed:

- A task completes once (leasing moves it from open to completed under its row lock), and in
  that same transaction `task_completed` appends its result to an *open batch* of
  (endpoint, job): a pending task.completed delivery never attempted (attempts = 0) whose
  next_attempt_at is still in the future. A result thus commits or rolls back together with
  its task's completion: it cannot be lost, and it cannot land in two batches.
- The open batch is taken FOR UPDATE SKIP LOCKED, so concurrent completions never wait for
  one another: one that finds every open batch locked starts a new batch, open for
  WEBHOOK_BATCH_SECONDS.
- A batch closes (its payload frozen) when it holds WEBHOOK_BATCH_SIZE results
  (next_attempt_at set to now, sent after commit), when its window runs out (the periodic
  `jobs.tasks.deliver_due_webhooks` sends it), or when its job completes. Senders claim only
  due deliveries, FOR UPDATE SKIP LOCKED too, so a batch is never sent while a completion is
  appending to it, and no completion appends to a batch a sender has claimed (attempts > 0
  from then on).
- Batches promise no order (retries reorder them); every result names its task, and every
  delivery carries its own event id for receivers to deduplicate retries.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from jobs import results
from jobs.models import DeliveryStatus, Job, Task, WebhookDelivery, WebhookEndpoint
from marketplace import background, clock
from marketplace.database import db

TASK_COMPLETED = "task.completed"
JOB_COMPLETED = "job.completed"
BUDGET_LOW = "job.budget_low"
LABELS_CHANGED = "job.labels_changed"
EVENT_TYPES = (JOB_COMPLETED, TASK_COMPLETED, BUDGET_LOW, LABELS_CHANGED)

BATCH_SIZE = 100
BATCH_SECONDS = 10
SEND_JOB = "jobs.tasks.deliver_webhook"


def batch_size() -> int:
    return int(current_app.config.get("WEBHOOK_BATCH_SIZE", BATCH_SIZE))


def batch_seconds() -> float:
    return float(current_app.config.get("WEBHOOK_BATCH_SECONDS", BATCH_SECONDS))


# --- the hooks ---------------------------------------------------------------------------


def task_completed(job: Job, task: Task) -> None:
    """A task reached its final answer: add its result to an open batch of each endpoint."""
    endpoints = subscribers(job.organization_id, TASK_COMPLETED)[TASK_COMPLETED]
    if not endpoints:
        return
    now = clock.now()
    size, window = batch_size(), batch_seconds()
    item = results.task_line(task)
    for endpoint in endpoints:
        found = _open_batches([endpoint.id], job.id, now, limit=1) if window > 0 else []
        if found:
            batch = found[0]
            batch.payload = {**batch.payload, "tasks": [*batch.payload["tasks"], item]}
        else:
            payload = {"job": _job_ref(job), "tasks": [item]}
            due = now + timedelta(seconds=window)
            batch = _new_delivery(endpoint, TASK_COMPLETED, payload, due)
        if len(batch.payload["tasks"]) >= size or window <= 0:
            _close(batch, now)


def job_completed(job: Job) -> None:
    """Every task of the job is completed or cancelled: send job.completed with the final
    counts, closing the job's open task batches first so its last results go out with it."""
    now = clock.now()
    endpoints = subscribers(job.organization_id, TASK_COMPLETED, JOB_COMPLETED)
    if endpoints[TASK_COMPLETED]:
        ids = [e.id for e in endpoints[TASK_COMPLETED]]
        for batch in _open_batches(ids, job.id, now, limit=None):
            _close(batch, now)
    if not endpoints[JOB_COMPLETED]:
        return
    tasks, _ = results.task_counts(job.id)
    data = {
        "job": {
            **_job_ref(job),
            "status": job.status.value,
            "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        },
        "tasks": tasks["real"],
        "gold_tasks": tasks["gold"],
        "judgments": results.judgment_counts(job.id),
    }
    record_event(job.organization_id, JOB_COMPLETED, data)


def budget_low(job: Job, free_amount: int) -> None:
    """The job's free budget covers few more judgments (webhook `job.budget_low`); billing
    calls it once per funding cycle, with the free budget left in minor units."""
    record_event(
        job.organization_id,
        BUDGET_LOW,
        {"job": _job_ref(job), "free_budget": {"amount": free_amount, "currency": job.currency}},
    )


def labels_changed_by_review(job: Job, task: Task, previous: Any) -> None:
    """A reviewer corrected a closed task's label: the task's new result, and what it was."""
    record_event(
        job.organization_id,
        LABELS_CHANGED,
        {
            "job": _job_ref(job),
            "source": "review",
            "labels_changed": 1,
            "tasks": [{**results.task_line(task), "previous_answer": previous}],
        },
    )


def labels_changed_by_aggregation(job: Job, run_id: int, changed: int) -> None:
    """The job's Dawid–Skene pass changed `changed` labels; they can be many, so the event
    names the run, whose `changes` list them (and the export shows the new labels)."""
    record_event(
        job.organization_id,
        LABELS_CHANGED,
        {
            "job": _job_ref(job),
            "source": "dawid_skene",
            "labels_changed": changed,
            "aggregation_run": {
                "id": run_id,
                "url": f"/api/v1/jobs/{job.id}/aggregations/{run_id}",
            },
        },
    )


# --- deliveries --------------------------------------------------------------------------


def subscribers(organization_id: int, *event_types: str) -> dict[str, list[WebhookEndpoint]]:
    """The organization's active endpoints for each of `event_types`."""
    endpoints = list(
        db.session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.organization_id == organization_id,
                WebhookEndpoint.active.is_(True),
            )
        )
    )
    return {kind: [e for e in endpoints if kind in (e.events or ())] for kind in event_types}


def record_event(organization_id: int, event_type: str, data: dict[str, Any]) -> int:
    """Queue one delivery of the event per subscribed endpoint; sent after commit."""
    endpoints = subscribers(organization_id, event_type)[event_type]
    now = clock.now()
    for endpoint in endpoints:
        _close(_new_delivery(endpoint, event_type, data, now), now)
    return len(endpoints)


def _new_delivery(
    endpoint: WebhookEndpoint, event_type: str, payload: dict[str, Any], due: datetime
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id="evt_" + uuid.uuid4().hex,
        event_type=event_type,
        payload=payload,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=due,
        created_at=clock.now(),
    )
    db.session.add(delivery)
    db.session.flush()
    return delivery


def _close(delivery: WebhookDelivery, now: datetime) -> None:
    """Make the delivery due now and send it once the transaction commits."""
    delivery.next_attempt_at = now
    background.enqueue(SEND_JOB, delivery.id)


def _job_ref(job: Job) -> dict[str, Any]:
    return {"id": job.id, "title": job.title}


def _open_batches(endpoint_ids: list[int], job_id: int, now: datetime, limit: int | None):
    query = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id.in_(endpoint_ids),
            WebhookDelivery.event_type == TASK_COMPLETED,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == 0,
            WebhookDelivery.next_attempt_at > now,
            WebhookDelivery.payload[("job", "id")].as_integer() == job_id,
        )
        .order_by(WebhookDelivery.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(db.session.scalars(query))
