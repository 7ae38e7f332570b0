"""What a client reads back from a job: its progress, and its results as a stream.

Both are computed in the database: progress from a few GROUP BY aggregates, the export from
keyset batches of tasks (and, with detail, their judgments), so neither ever loads a whole
job into memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select

from jobs.access import get_job
from jobs.models import Assignment, AssignmentStatus, Task, TaskStatus
from marketplace import clock
from marketplace.database import db
from workers.models import WorkerProfile

EXPORT_BATCH = 1000
NDJSON = "application/x-ndjson"
CSV = "text/csv"
CSV_COLUMNS = (
    "task_id",
    "external_id",
    "is_gold",
    "status",
    "answer",
    "confidence",
    "judgments",
    "method",
    "completed_at",
)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- progress ----------------------------------------------------------------------------


def task_counts(job_id: int) -> tuple[dict[str, dict[str, int]], int]:
    """Real and gold tasks by status, and the judgments open real tasks still need."""
    open_real = and_(Task.status == TaskStatus.OPEN, Task.is_gold.is_(False))
    still_needed = case(
        (
            and_(open_real, Task.redundancy_target > Task.submitted_count),
            Task.redundancy_target - Task.submitted_count,
        ),
        else_=0,
    )
    tasks = {kind: {s.value: 0 for s in TaskStatus} | {"total": 0} for kind in ("real", "gold")}
    remaining = 0
    for status, is_gold, count, needed in db.session.execute(
        select(Task.status, Task.is_gold, func.count(), func.sum(still_needed))
        .where(Task.job_id == job_id)
        .group_by(Task.status, Task.is_gold)
    ):
        kind = tasks["gold" if is_gold else "real"]
        kind[TaskStatus(status).value] += count
        kind["total"] += count
        remaining += int(needed or 0)
    return tasks, remaining


def judgment_counts(job_id: int) -> dict[str, int]:
    """The job's assignments by status (leases and judgments alike)."""
    counts = {s.value: 0 for s in AssignmentStatus}
    for status, count in db.session.execute(
        select(Assignment.status, func.count())
        .where(Assignment.job_id == job_id)
        .group_by(Assignment.status)
    ):
        counts[AssignmentStatus(status).value] = count
    return counts


def job_progress(job_id: int) -> dict[str, Any]:
    """Tasks by state, judgments by status, live leases, spend, throughput and an ETA."""
    job = get_job(job_id)
    now = clock.now()
    tasks, remaining = task_counts(job.id)
    judgments = judgment_counts(job.id)
    live_leases = db.session.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.job_id == job.id,
            Assignment.status == AssignmentStatus.LEASED,
            Assignment.lease_expires_at > now,
        )
    )
    # Throughput counts judgments on real tasks only: they are what the ETA is made of.
    last_hour, last_day = db.session.execute(
        select(
            func.sum(case((Assignment.submitted_at > now - HOUR, 1), else_=0)),
            func.count(),
        ).where(
            Assignment.job_id == job.id,
            Assignment.submitted_at > now - DAY,
            Assignment.submitted_at <= now,
            Assignment.is_gold.is_(False),
        )
    ).one()
    last_hour, last_day = int(last_hour or 0), int(last_day or 0)
    # The last hour's pace when there is one, else the last day's.
    per_second = last_hour / HOUR.total_seconds() or last_day / DAY.total_seconds()
    if remaining == 0:
        eta: dict[str, Any] | None = {"seconds": 0, "at": _iso(now)}
    elif per_second:
        seconds = round(remaining / per_second)
        eta = {"seconds": seconds, "at": _iso(now + timedelta(seconds=seconds))}
    else:
        eta = None
    return {
        "job_id": job.id,
        "status": job.status.value,
        "as_of": _iso(now),
        "tasks": tasks,
        "judgments": judgments,
        "live_leases": live_leases,
        # Accepted judgments × price for now; the billing issue replaces this with the
        # ledger's settled (and held) figures, which also carry the fee and vendor margin.
        "spend": {
            "amount": judgments[AssignmentStatus.ACCEPTED.value] * job.price_amount,
            "currency": job.currency,
        },
        "throughput": {"last_hour": last_hour, "last_24h": last_day},
        "remaining_judgments": remaining,
        "eta": eta,
    }


# --- results export ----------------------------------------------------------------------

_LINE_COLUMNS = (
    Task.id,
    Task.external_id,
    Task.is_gold,
    Task.status,
    Task.final_answer,
    Task.confidence,
    Task.submitted_count,
    Task.method,
    Task.completed_at,
)


def task_line(task: Any) -> dict[str, Any]:
    """One task's result as the export and the task.completed webhook carry it."""
    return {
        "task_id": task.id,
        "external_id": task.external_id,
        "is_gold": task.is_gold,
        "status": TaskStatus(task.status).value,
        "answer": task.final_answer,
        "confidence": task.confidence,
        "judgments": task.submitted_count,
        "method": task.method,
        "completed_at": _iso(task.completed_at),
    }


def _judgments_of(job_id: int, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per-judgment detail for a batch of tasks, workers named only by their pseudonym."""
    detail: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = db.session.execute(
        select(
            Assignment.task_id,
            WorkerProfile.pseudonym,
            Assignment.answer,
            Assignment.submitted_at,
            Assignment.server_seconds,
            Assignment.active_seconds,
            Assignment.status,
        )
        .join(WorkerProfile, WorkerProfile.id == Assignment.worker_id)
        .where(
            Assignment.job_id == job_id,
            Assignment.task_id.in_(task_ids),
            Assignment.submitted_at.is_not(None),
        )
        .order_by(Assignment.task_id, Assignment.submitted_at, Assignment.id)
    )
    for task_id, pseudonym, answer, submitted_at, server_s, active_s, status in rows:
        detail[task_id].append(
            {
                "worker": pseudonym,
                "answer": answer,
                "submitted_at": _iso(submitted_at),
                "server_seconds": server_s,
                "active_seconds": active_s,
                "status": AssignmentStatus(status).value,
            }
        )
    return detail


def _result_batches(job_id: int, args: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    query = select(*_LINE_COLUMNS).where(Task.job_id == job_id)
    if not args.get("include_gold"):
        query = query.where(Task.is_gold.is_(False))
    if status := args.get("status"):
        query = query.where(Task.status == status)
    if since := args.get("since"):
        query = query.where(Task.completed_at >= since)
    if until := args.get("until"):
        query = query.where(Task.completed_at < until)
    after = 0
    while True:
        rows = db.session.execute(
            query.where(Task.id > after).order_by(Task.id).limit(EXPORT_BATCH)
        ).all()
        lines = [task_line(row) for row in rows]
        if rows and args.get("detail"):
            detail = _judgments_of(job_id, [row.id for row in rows])
            for line in lines:
                line["detail"] = detail.get(line["task_id"], [])
        # End the read transaction between batches: a slow reader must not pin a snapshot
        # (PostgreSQL) or the write lock every SQLite transaction takes.
        db.session.commit()
        if lines:
            yield lines
        if len(rows) < EXPORT_BATCH:
            return
        after = rows[-1].id


def _ndjson(batches: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    for lines in batches:
        yield "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def _csv(batches: Iterator[list[dict[str, Any]]], detail: bool) -> Iterator[str]:
    columns = CSV_COLUMNS + (("detail",) if detail else ())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    yield buffer.getvalue()
    for lines in batches:
        buffer.seek(0)
        buffer.truncate()
        for line in lines:
            row = dict(line)
            # Structured values travel as JSON text so any answer type fits one column.
            row["answer"] = "" if line["answer"] is None else json.dumps(line["answer"])
            if detail:
                row["detail"] = json.dumps(line["detail"], separators=(",", ":"))
            row["is_gold"] = "true" if line["is_gold"] else "false"
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        yield buffer.getvalue()


def export_results(job_id: int, args: dict[str, Any], media_type: str) -> Iterator[str]:
    """Check access now; return the export as chunks of text (one per batch) to stream."""
    job = get_job(job_id)
    job_id = job.id
    db.session.commit()
    batches = _result_batches(job_id, args)
    if media_type == CSV:
        return _csv(batches, bool(args.get("detail")))
    return _ndjson(batches)
