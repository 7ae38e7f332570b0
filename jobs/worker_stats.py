"""What a client sees of the workers on its job: pseudonyms and their stats on this job only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, case, func, select

from jobs.access import get_job
from jobs.models import Assignment, AssignmentStatus
from marketplace.database import db
from workers.models import WorkerProfile

JUDGED = (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED, AssignmentStatus.REJECTED)


def job_worker_stats(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """Per-worker figures for one job, keyed by pseudonym, ordered by first lease; paged."""
    job = get_job(job_id)
    judged = Assignment.status.in_(JUDGED)
    query = (
        select(
            WorkerProfile.id.label("worker_id"),
            WorkerProfile.pseudonym,
            func.count().label("leases"),
            func.sum(case((judged, 1), else_=0)).label("judgments"),
            func.sum(case((Assignment.status == AssignmentStatus.ACCEPTED, 1), else_=0)).label(
                "accepted"
            ),
            func.sum(case((Assignment.is_gold & judged, 1), else_=0)).label("gold_judged"),
            func.sum(case((Assignment.gold_correct.is_(True), 1), else_=0)).label("gold_correct"),
            func.avg(case((judged, Assignment.server_seconds))).label("mean_seconds"),
            func.sum(
                case((Assignment.status == AssignmentStatus.RELEASED, 1), else_=0).cast(Integer)
            ).label("released"),
        )
        .join(WorkerProfile, WorkerProfile.id == Assignment.worker_id)
        .where(Assignment.job_id == job.id)
        .group_by(WorkerProfile.id, WorkerProfile.pseudonym)
        .order_by(WorkerProfile.id)
    )
    if cursor := args.get("cursor"):
        from marketplace.pagination import decode_cursor

        query = query.where(WorkerProfile.id > decode_cursor(cursor))
    limit = args.get("limit") or 50
    rows = db.session.execute(query.limit(limit + 1)).all()
    items = [
        {
            "worker": row.pseudonym,
            "leases": row.leases,
            "judgments": int(row.judgments or 0),
            "accepted": int(row.accepted or 0),
            "released": int(row.released or 0),
            "gold_judged": int(row.gold_judged or 0),
            "gold_accuracy": (
                round(int(row.gold_correct or 0) / row.gold_judged, 4) if row.gold_judged else None
            ),
            "mean_seconds_on_task": (
                round(float(row.mean_seconds), 2) if row.mean_seconds is not None else None
            ),
        }
        for row in rows[:limit]
    ]
    from marketplace.pagination import encode_cursor

    next_cursor = encode_cursor(rows[limit - 1].worker_id) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}
