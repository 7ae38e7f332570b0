"""Real-time fraud signals, checked inside the submit's transaction.

Receivers of `judgment_submitted` run after the sender's locks (task row, the job's money)
and must not commit. Each check is one small indexed query: the job's recent times of
other workers (ix_assignments_job_submitted), and the worker's own recent gold results and
times (ix_assignments_worker_status).
"""

from __future__ import annotations

import statistics

from sqlalchemy import select

from jobs import fraud_risk, signals
from jobs.fraud_models import FraudSignal, SignalKind
from jobs.models import Assignment, Job, Task
from marketplace.database import db

ABSOLUTE_FLOOR_SECONDS = 2.0
RELATIVE_FRACTION = 0.25  # faster than a quarter of the job's median time is implausible
MEDIAN_SAMPLE = 50
MIN_MEDIAN_SAMPLE = 5
FAST_WEIGHT = 0.08
ABSOLUTE_EXTRA_WEIGHT = 0.07
# Speed alone never restricts: a tool may lease ahead, a worker may know the item.
FAST_CAP = 0.45
GOLD_SAMPLE = 50
GOLD_FULL_EVIDENCE = 5
GOLD_TOLERATED_FAILURE = 0.3
GOLD_CAP = 0.7
TIMING_SAMPLE = 20
MIN_TIMING_SAMPLE = 10
REGULAR_CV = 0.05
MIN_REGULAR_MEAN = 1.0
REGULAR_WEIGHT = 0.35
EXAMPLES = 5


def _existing(worker_id: int, key: str) -> FraudSignal | None:
    return db.session.scalar(
        select(FraudSignal).where(FraudSignal.worker_id == worker_id, FraudSignal.key == key)
    )


def check_speed(assignment: Assignment, job: Job) -> bool:
    """Too fast: under an absolute floor, or a small fraction of the job's median time."""
    seconds = assignment.server_seconds
    if seconds is None:
        return False
    if assignment.active_seconds is not None:
        seconds = min(seconds, assignment.active_seconds)
    others = [
        s
        for s in db.session.scalars(
            select(Assignment.server_seconds)
            .where(
                Assignment.job_id == job.id,
                Assignment.submitted_at.is_not(None),
                Assignment.worker_id != assignment.worker_id,
            )
            .order_by(Assignment.submitted_at.desc())
            .limit(MEDIAN_SAMPLE)
        )
        if s is not None
    ]
    median = statistics.median(others) if len(others) >= MIN_MEDIAN_SAMPLE else None
    absolute = seconds < ABSOLUTE_FLOOR_SECONDS
    relative = median is not None and seconds < RELATIVE_FRACTION * median
    if not (absolute or relative):
        return False
    key = f"too_fast:job:{job.id}"
    previous = _existing(assignment.worker_id, key)
    evidence = dict(previous.evidence) if previous else {"fast": 0, "below_floor": 0}
    evidence["fast"] = evidence.get("fast", 0) + 1
    evidence["below_floor"] = evidence.get("below_floor", 0) + int(absolute)
    evidence["examples"] = [
        {
            "assignment_id": assignment.id,
            "seconds": round(seconds, 3),
            "server_seconds": round(assignment.server_seconds, 3),
            "active_seconds": assignment.active_seconds,
            "job_median_seconds": median,
        },
        *evidence.get("examples", []),
    ][:EXAMPLES]
    weight = min(
        FAST_CAP, FAST_WEIGHT * evidence["fast"] + ABSOLUTE_EXTRA_WEIGHT * evidence["below_floor"]
    )
    return fraud_risk.record_signal(
        assignment.worker_id,
        SignalKind.TOO_FAST,
        key,
        weight,
        evidence,
        job_id=job.id,
        found=previous,
    )


def check_gold(assignment: Assignment) -> bool:
    """Failing gold: weighted by the worker's failure rate over their recent gold items."""
    results = list(
        db.session.scalars(
            select(Assignment.gold_correct)
            .where(
                Assignment.worker_id == assignment.worker_id,
                Assignment.is_gold.is_(True),
                Assignment.gold_correct.is_not(None),
            )
            .order_by(Assignment.id.desc())
            .limit(GOLD_SAMPLE)
        )
    )
    judged = len(results)
    failed = sum(1 for r in results if r is False)
    rate = failed / judged if judged else 0.0
    weight = min(GOLD_CAP, max(0.0, rate - GOLD_TOLERATED_FAILURE)) * min(
        1.0, judged / GOLD_FULL_EVIDENCE
    )
    key = "gold_failed"
    previous = _existing(assignment.worker_id, key)
    if previous is None and not failed:
        return False  # the usual case: nothing failed, nothing to write
    earlier = list(previous.evidence.get("failed_assignments") or []) if previous else []
    if assignment.gold_correct is False:
        earlier.insert(0, assignment.id)
    failed_ids = earlier[:EXAMPLES]
    evidence = {
        "gold_judged": judged,
        "gold_failed": failed,
        "failure_rate": round(rate, 3),
        "failed_assignments": failed_ids,
    }
    return fraud_risk.record_signal(
        assignment.worker_id, SignalKind.GOLD_FAILED, key, weight, evidence, found=previous
    )


def check_regularity(assignment: Assignment) -> bool:
    """Machine-regular timing: a tiny coefficient of variation over recent times on task."""
    times = [
        t
        for t in db.session.scalars(
            select(Assignment.server_seconds)
            .where(
                Assignment.worker_id == assignment.worker_id,
                Assignment.server_seconds.is_not(None),
            )
            .order_by(Assignment.id.desc())
            .limit(TIMING_SAMPLE)
        )
    ]
    if len(times) < MIN_TIMING_SAMPLE:
        return False
    mean = statistics.fmean(times)
    if mean < MIN_REGULAR_MEAN:
        return False  # sub-second times are the too-fast signal's business
    cv = statistics.pstdev(times) / mean
    if cv >= REGULAR_CV:
        return False
    evidence = {"samples": len(times), "mean_seconds": round(mean, 3), "cv": round(cv, 4)}
    return fraud_risk.record_signal(
        assignment.worker_id, SignalKind.REGULAR_TIMING, "regular_timing", REGULAR_WEIGHT, evidence
    )


@signals.judgment_submitted.connect
def on_judgment_submitted(assignment: Assignment, *, job: Job, task: Task, **_kw) -> None:
    changed = check_speed(assignment, job)
    if assignment.is_gold:  # passes count too: they dilute earlier failures
        changed = check_gold(assignment) or changed
    changed = check_regularity(assignment) or changed
    if changed:
        fraud_risk.escalate(assignment.worker_id)
