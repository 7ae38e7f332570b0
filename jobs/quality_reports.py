"""What clients and workers see of measured quality.

A client sees, per pseudonymous worker on its job, the accuracy estimate with its interval,
gold counts, agreement and the confusion matrix. A worker sees their own accuracy per job
and per skill — counts only, never which tasks were gold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from jobs import accuracy, consensus
from jobs.access import get_job
from jobs.models import Job, JobRemoval, WorkerJobQuality
from marketplace.database import db
from marketplace.pagination import decode_cursor, encode_cursor
from workers.access import my_worker_profile
from workers.models import WorkerProfile


def _figures(row: WorkerJobQuality) -> dict[str, Any]:
    low, high = accuracy.interval(row)
    decided = row.agreed + row.disagreed
    return {
        "accuracy": round(accuracy.estimate(row), 4),
        "interval": [round(low, 4), round(high, 4)],
        "gold_correct": row.gold_correct,
        "gold_wrong": row.gold_wrong,
        "agreed": row.agreed,
        "disagreed": row.disagreed,
        "agreement_rate": round(row.agreed / decided, 4) if decided else None,
    }


def job_workers_quality(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """Per-worker quality on one job, keyed by pseudonym, by worker id; cursor-paged."""
    job = get_job(job_id)
    query = (
        select(WorkerJobQuality, WorkerProfile.pseudonym)
        .join(WorkerProfile, WorkerProfile.id == WorkerJobQuality.worker_id)
        .where(WorkerJobQuality.job_id == job.id)
        .order_by(WorkerJobQuality.worker_id)
    )
    if cursor := args.get("cursor"):
        query = query.where(WorkerJobQuality.worker_id > decode_cursor(cursor))
    limit = args.get("limit") or 50
    rows = db.session.execute(query.limit(limit + 1)).all()
    removed = set(
        db.session.scalars(select(JobRemoval.worker_id).where(JobRemoval.job_id == job.id))
    )
    items = [
        {
            "worker": pseudonym,
            **_figures(row),
            "confusion": row.confusion or {},
            "removed": row.worker_id in removed,
        }
        for row, pseudonym in rows[:limit]
    ]
    has_more = len(rows) > limit
    next_cursor = encode_cursor(rows[limit - 1][0].worker_id) if has_more else None
    return {"items": items, "next_cursor": next_cursor}


def _as_worker_sees(row: WorkerJobQuality, revealed: dict[int, tuple[int, int]]):
    right, wrong = revealed.get(row.job_id, (0, 0))
    return right + row.agreed, wrong + row.disagreed, right + wrong


def my_quality() -> dict[str, Any]:
    """The calling worker's accuracy per job they worked on and per skill those jobs need.

    Gold answers count once the gold reveal delay has passed (jobs.gold); agreement counts
    as soon as tasks close."""
    worker = my_worker_profile()
    rows = db.session.execute(
        select(WorkerJobQuality, Job)
        .join(Job, Job.id == WorkerJobQuality.job_id)
        .where(WorkerJobQuality.worker_id == worker.id)
        .order_by(WorkerJobQuality.job_id)
    ).all()
    removed = accuracy.removed_job_ids(worker.id)
    revealed = accuracy.revealed_gold(worker.id)
    jobs = []
    for row, job in rows:
        right, wrong, gold_answers = _as_worker_sees(row, revealed)
        jobs.append(
            {
                "job_id": job.id,
                "title": job.title,
                "accuracy": round(consensus.estimated_accuracy(right, wrong), 4),
                "interval": [round(v, 4) for v in consensus.accuracy_interval(right, wrong)],
                "gold_answers": gold_answers,
                "agreed": row.agreed,
                "disagreed": row.disagreed,
                "min_accuracy": accuracy.min_accuracy(job),
                "removed": job.id in removed,
            }
        )
    skills = [
        {
            "skill": slug,
            "jobs": t["jobs"],
            "accuracy": round(t["accuracy"], 4),
            "interval": [round(v, 4) for v in t["interval"]],
            "judgments_measured": t["right"] + t["wrong"],
        }
        for slug, t in sorted(accuracy.skill_totals(worker.id).items())
    ]
    return {"jobs": jobs, "skills": skills}
