"""Throughput: how fast workers judge, per job and per worker, and tasks that take too long.

Time on task is `server_seconds` (lease → submit, measured by the server) and, when the tool
reported it, `active_seconds`. A worker's active time is the union of their lease → submit
intervals, with gaps of up to `SESSION_GAP` seconds between them counted as work (reading
the next task, a short pause); judgments per hour is judgments over that active time.
Medians and quartiles use linear interpolation (numpy's default percentile).

A task whose median time on task (among workers with good gold accuracy, or all workers
when no one has enough gold) is an outlier — above Q3 + 3·IQR of the job's task medians — is
flagged `slow_task`: possibly ambiguous or hard. Flags live in `task_flags` and are
refreshed by a periodic job and when a job completes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from jobs.access import get_job
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus
from jobs.throughput_models import SLOW_TASK, TaskFlag
from marketplace import clock
from marketplace.database import db
from marketplace.pagination import paginate
from workers.access import my_worker_profile
from workers.models import WorkerProfile

SESSION_GAP = 300.0  # seconds between judgments still counted as one working span
BUCKETS = {"hour": 3600, "day": 86_400}
MAX_BUCKETS = 200  # a trend shows at most this many of the latest buckets
# Who counts as a good worker for the slow-task baseline.
MIN_GOLD_JUDGMENTS = 3
GOOD_GOLD_ACCURACY = 0.8
# A task median needs this many judgments; the quartiles need this many task medians.
MIN_TASK_JUDGMENTS = 2
MIN_TASKS_FOR_FLAGS = 8
OUTLIER_IQRS = 3.0
# Spread floor (share of the median task median): with near-identical times, IQR ≈ 0 would
# flag any task a second slower than the rest.
MIN_SPREAD_SHARE = 0.1
RECENT = timedelta(days=2)  # completed jobs keep their flags refreshed this long
COUNTED = (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED, AssignmentStatus.REJECTED)


def spread(values: np.ndarray) -> dict[str, Any] | None:
    """Median, quartiles and IQR of some durations (None when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": int(values.size),
        "median": round(float(median), 3),
        "q1": round(float(q1), 3),
        "q3": round(float(q3), 3),
        "iqr": round(float(q3 - q1), 3),
    }


def active_seconds(starts: np.ndarray, ends: np.ndarray, gap: float = SESSION_GAP) -> float:
    """Length of the union of [start, end] intervals, short gaps between them included."""
    if not len(starts):
        return 0.0
    order = np.argsort(starts, kind="stable")
    total, span_start, span_end = 0.0, starts[order[0]], ends[order[0]]
    for i in order[1:]:
        if starts[i] <= span_end + gap:
            span_end = max(span_end, ends[i])
        else:
            total += span_end - span_start
            span_start, span_end = starts[i], ends[i]
    return float(total + span_end - span_start)


class _Rows:
    """Judgments as arrays (one query): epoch seconds, durations, gold outcome."""

    def __init__(self, rows: list[Any]):
        self.worker = np.array([r.worker_id for r in rows], dtype=np.int64)
        self.task = np.array([r.task_id for r in rows], dtype=np.int64)
        self.job = np.array([r.job_id for r in rows], dtype=np.int64)
        self.leased = np.array([r.leased_at.timestamp() for r in rows], dtype=np.float64)
        self.submitted = np.array([r.submitted_at.timestamp() for r in rows], dtype=np.float64)
        self.server = np.array(
            [np.nan if r.server_seconds is None else r.server_seconds for r in rows], np.float64
        )
        self.active = np.array(
            [np.nan if r.active_seconds is None else r.active_seconds for r in rows], np.float64
        )
        self.gold = np.array([bool(r.is_gold) for r in rows], dtype=bool)
        self.correct = np.array([r.gold_correct is True for r in rows], dtype=bool)

    def __len__(self) -> int:
        return int(self.worker.size)

    def subset(self, mask: np.ndarray) -> _Rows:
        part = object.__new__(_Rows)
        for name, value in vars(self).items():
            setattr(part, name, value[mask])
        return part


def _load(*criteria: Any) -> _Rows:
    return _Rows(
        db.session.execute(
            select(
                Assignment.worker_id,
                Assignment.task_id,
                Assignment.job_id,
                Assignment.leased_at,
                Assignment.submitted_at,
                Assignment.server_seconds,
                Assignment.active_seconds,
                Assignment.is_gold,
                Assignment.gold_correct,
            ).where(Assignment.submitted_at.is_not(None), Assignment.status.in_(COUNTED), *criteria)
        ).all()
    )


def summary(rows: _Rows) -> dict[str, Any]:
    """Judgments, active time, judgments per active hour, time-on-task spread, gold."""
    active = 0.0
    # one sort, then each worker's judgments are a slice (no mask per worker)
    order = np.argsort(rows.worker, kind="stable")
    _, starts = np.unique(rows.worker[order], return_index=True)
    for start, end in zip(starts, [*starts[1:], len(rows)][: len(starts)], strict=True):
        mine = order[start:end]
        active += active_seconds(rows.leased[mine], rows.submitted[mine])
    gold_judged = int(rows.gold.sum())
    gold_right = int((rows.gold & rows.correct).sum())
    return {
        "judgments": len(rows),
        "active_seconds": round(active, 3),
        "judgments_per_hour": round(len(rows) / active * 3600, 3) if active > 0 else None,
        "server_seconds": spread(rows.server),
        "active_seconds_reported": spread(rows.active),
        "gold": {
            "judged": gold_judged,
            "correct": gold_right,
            "accuracy": round(gold_right / gold_judged, 4) if gold_judged else None,
        },
    }


def trend(rows: _Rows, bucket: str) -> list[dict[str, Any]]:
    """Judgments and median time on task per hour or day (UTC), latest `MAX_BUCKETS`."""
    if not len(rows):
        return []
    width = BUCKETS[bucket]
    slots = np.floor(rows.submitted / width).astype(np.int64)
    out = []
    for slot in np.unique(slots)[-MAX_BUCKETS:]:
        mine = slots == slot
        server = spread(rows.server[mine])
        out.append(
            {
                "start": datetime.fromtimestamp(int(slot) * width, UTC).isoformat(),
                "judgments": int(mine.sum()),
                "workers": int(np.unique(rows.worker[mine]).size),
                "median_server_seconds": server["median"] if server else None,
            }
        )
    return out


def _flag_view(flag: TaskFlag) -> dict[str, Any]:
    return {
        "task_id": flag.task_id,
        "kind": flag.kind,
        "evidence": flag.evidence,
        "created_at": flag.created_at,
        "updated_at": flag.updated_at,
    }


def job_throughput(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """The job's totals, trend and flags, and one page of per-worker rows (pseudonymous)."""
    job = get_job(job_id)
    rows = _load(Assignment.job_id == job.id)
    workers = paginate(
        select(WorkerProfile).where(
            WorkerProfile.id.in_(
                select(Assignment.worker_id)
                .where(
                    Assignment.job_id == job.id,
                    Assignment.submitted_at.is_not(None),
                    Assignment.status.in_(COUNTED),
                )
                .distinct()
            )
        ),
        WorkerProfile.id,
        args,
    )
    items = [
        {"worker": profile.pseudonym, **summary(rows.subset(rows.worker == profile.id))}
        for profile in workers["items"]
    ]
    flags = db.session.scalars(
        select(TaskFlag).where(TaskFlag.job_id == job.id).order_by(TaskFlag.id).limit(100)
    )
    return {
        "job_id": job.id,
        "as_of": clock.now(),
        "bucket": args["bucket"],
        "totals": summary(rows) | {"workers": int(np.unique(rows.worker).size)},
        "trend": trend(rows, args["bucket"]),
        "flags": [_flag_view(flag) for flag in flags],
        "workers": {"items": items, "next_cursor": workers["next_cursor"]},
    }


def my_throughput(args: dict[str, Any]) -> dict[str, Any]:
    """The calling worker's own throughput, overall, over time and by job."""
    worker = my_worker_profile()
    rows = _load(Assignment.worker_id == worker.id)
    by_job = [
        {"job_id": int(job_id), **summary(rows.subset(rows.job == job_id))}
        for job_id in np.unique(rows.job)[-100:]
    ]
    return {
        "as_of": clock.now(),
        "bucket": args["bucket"],
        "totals": summary(rows),
        "trend": trend(rows, args["bucket"]),
        "jobs": by_job,
    }


def list_flags(job_id: int, args: dict[str, Any]) -> dict[str, Any]:
    job = get_job(job_id)
    query = select(TaskFlag).where(TaskFlag.job_id == job.id)
    if kind := args.get("kind"):
        query = query.where(TaskFlag.kind == kind)
    page = paginate(query, TaskFlag.id, args)
    return {"items": [_flag_view(f) for f in page["items"]], "next_cursor": page["next_cursor"]}


# --- slow tasks ---------------------------------------------------------------------------


def group_medians(keys: np.ndarray, values: np.ndarray):
    """Each key's median value, vectorised: sort by (key, value), pick the middle of each run."""
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    groups, starts, counts = np.unique(keys, return_index=True, return_counts=True)
    low = values[starts + (counts - 1) // 2]
    high = values[starts + counts // 2]
    return groups, (low + high) / 2, counts


def slow_tasks(rows: _Rows) -> tuple[dict[int, dict[str, Any]], str]:
    """Tasks whose median time on task is an outlier, with the evidence, and the baseline."""
    gold_seen: dict[int, int] = defaultdict(int)
    gold_right: dict[int, int] = defaultdict(int)
    for worker, correct in zip(rows.worker[rows.gold], rows.correct[rows.gold], strict=True):
        gold_seen[int(worker)] += 1
        gold_right[int(worker)] += int(correct)
    measured = [w for w, n in gold_seen.items() if n >= MIN_GOLD_JUDGMENTS]
    good = [w for w in measured if gold_right[w] / gold_seen[w] >= GOOD_GOLD_ACCURACY]
    real = rows.subset(~rows.gold & ~np.isnan(rows.server))
    basis = "good_workers" if good else "all_workers"
    if good:
        real = real.subset(np.isin(real.worker, good))
    tasks, medians, counts = group_medians(real.task, real.server)
    enough = counts >= MIN_TASK_JUDGMENTS
    if enough.sum() < MIN_TASKS_FOR_FLAGS:
        return {}, basis
    q1, middle, q3 = np.percentile(medians[enough], [25, 50, 75])
    spread_ = max(q3 - q1, MIN_SPREAD_SHARE * middle)
    threshold = q3 + OUTLIER_IQRS * spread_
    slow = {}
    for i in np.flatnonzero(enough & (medians > threshold)):
        slow[int(tasks[i])] = {
            "median_seconds": round(float(medians[i]), 3),
            "judgments": int(counts[i]),
            "threshold_seconds": round(float(threshold), 3),
            "job_median_seconds": round(float(middle), 3),
            "q3_seconds": round(float(q3), 3),
            "iqr_seconds": round(float(q3 - q1), 3),
            "basis": basis,
        }
    return slow, basis


def refresh_flags(job_id: int) -> int:
    """Recompute the job's slow-task flags: add new ones, update, drop those that cleared."""
    rows = _load(Assignment.job_id == job_id)
    slow, _ = slow_tasks(rows)
    now = clock.now()
    existing = {
        flag.task_id: flag
        for flag in db.session.scalars(
            select(TaskFlag).where(TaskFlag.job_id == job_id, TaskFlag.kind == SLOW_TASK)
        )
    }
    for task_id, evidence in slow.items():
        flag = existing.get(task_id)
        if flag is None:
            db.session.add(
                TaskFlag(
                    task_id=task_id,
                    job_id=job_id,
                    kind=SLOW_TASK,
                    evidence=evidence,
                    created_at=now,
                    updated_at=now,
                )
            )
        elif flag.evidence != evidence:
            flag.evidence, flag.updated_at = evidence, now
    cleared = [flag.id for task_id, flag in existing.items() if task_id not in slow]
    if cleared:
        db.session.execute(delete(TaskFlag).where(TaskFlag.id.in_(cleared)))
    db.session.commit()
    return len(slow)


def refresh_flags_everywhere() -> int:
    """Refresh flags of running jobs and of jobs that ended recently; the number flagged."""
    since = clock.now() - RECENT
    job_ids = list(
        db.session.scalars(
            select(Job.id).where(
                (Job.status.in_([JobStatus.ACTIVE, JobStatus.PAUSED])) | (Job.completed_at > since)
            )
        )
    )
    db.session.commit()
    return sum(refresh_flags(job_id) for job_id in job_ids)
