"""Periodic fraud scans: answer patterns, agreement, collusion, shared devices and networks.

Bounded work: the most recent judgments of up to MAX_JOBS recently active jobs (up to
MAX_JUDGMENTS each), and grouped SQL over the fingerprint/IP indexes for shared devices.
Signals are upserted (a re-run refreshes, never duplicates); every worker whose signals
changed is then escalated.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select

from jobs import answers, fraud_risk
from jobs.fraud_models import SignalKind
from jobs.models import Assignment, AssignmentStatus, Job, JobStatus, Task, TaskStatus
from marketplace import clock
from marketplace.database import db
from marketplace.errors import NotFound
from workers.models import WorkerProfile

MAX_JOBS = 50
RECENT_DAYS = 14
MAX_JUDGMENTS = 20_000
MIN_JUDGMENTS = 10
DEGENERATE_SHARE = 0.9
OTHERS_MAX_SHARE = 0.6
MIN_OTHERS = 20
RANDOM_MARGIN = 0.15
LOW_AGREEMENT = 0.6
MIN_SHARED = 10
COLLUSION_EXCESS = 0.25
COLLUSION_MIN_AGREEMENT = 0.9
GOLD_WRONG_TOGETHER = 3
SIGNIFICANCE = 1e-4  # collusion needs a pattern this improbable by chance
MAX_WORKERS_PER_TASK = 20
MAX_GROUPS = 200
MAX_ACCOUNTS_LISTED = 20
PRIOR_ACCURACY, PRIOR_WEIGHT = 0.7, 2.0
JUDGED = (AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED, AssignmentStatus.REJECTED)


class _Changes:
    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.workers: set[int] = set()

    def record(self, worker_id: int, kind: SignalKind, key: str, weight: float, evidence, job_id):
        if fraud_risk.record_signal(worker_id, kind, key, weight, evidence, job_id=job_id):
            self.kinds[kind.value] += 1
            self.workers.add(worker_id)


def _recent_jobs() -> list[int]:
    since = clock.now() - timedelta(days=RECENT_DAYS)
    return list(
        db.session.scalars(
            select(Job.id)
            .where(
                Job.status.in_([JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.COMPLETED]),
                or_(Job.completed_at.is_(None), Job.completed_at >= since),
            )
            .order_by(Job.id.desc())
            .limit(MAX_JOBS)
        )
    )


def _chance(spec: dict[str, Any]) -> float | None:
    labels = spec.get("labels") or []
    if spec.get("type") == "single_choice" and len(labels) >= 2:
        return 1.0 / len(labels)
    return None


def scan_job(job: Job, changes: _Changes) -> None:
    """Answer patterns, agreement with final labels and collusion within one job."""
    rows = db.session.execute(
        select(
            Assignment.worker_id,
            Assignment.task_id,
            Assignment.answer,
            Assignment.is_gold,
            Assignment.gold_correct,
        )
        .where(Assignment.job_id == job.id, Assignment.status.in_(JUDGED))
        .order_by(Assignment.id.desc())
        .limit(MAX_JUDGMENTS)
    ).all()
    if not rows:
        return
    finals: dict[int, str] = {}
    task_ids = sorted({r.task_id for r in rows if not r.is_gold})
    for start in range(0, len(task_ids), 1000):
        for task_id, final in db.session.execute(
            select(Task.id, Task.final_answer).where(
                Task.id.in_(task_ids[start : start + 1000]),
                Task.status == TaskStatus.COMPLETED,
            )
        ):
            finals[task_id] = answers.canonical(final)
    by_worker: dict[int, list[tuple[int, str]]] = defaultdict(list)
    by_task: dict[int, list[tuple[int, str, bool, bool | None]]] = defaultdict(list)
    overall: Counter[str] = Counter()
    for r in rows:
        canonical = answers.canonical(r.answer)
        by_task[r.task_id].append((r.worker_id, canonical, r.is_gold, r.gold_correct))
        if not r.is_gold:
            by_worker[r.worker_id].append((r.task_id, canonical))
            overall[canonical] += 1
    accuracy = _patterns(job, by_worker, overall, finals, changes)
    _collusion(job, by_task, finals, accuracy, changes)


def _patterns(job, by_worker, overall, finals, changes) -> dict[int, float]:
    chance = _chance(job.answer_spec or {})
    accuracy: dict[int, float] = {}
    for worker_id, judged in by_worker.items():
        mine = Counter(answer for _, answer in judged)
        agreed = [answer == finals[task] for task, answer in judged if task in finals]
        rate = sum(agreed) / len(agreed) if agreed else None
        accuracy[worker_id] = (sum(agreed) + PRIOR_ACCURACY * PRIOR_WEIGHT) / (
            len(agreed) + PRIOR_WEIGHT
        )
        if len(judged) < MIN_JUDGMENTS:
            continue
        mode, count = mine.most_common(1)[0]
        share = count / len(judged)
        others_total = sum(overall.values()) - len(judged)
        others_share = (overall[mode] - count) / others_total if others_total else 1.0
        if (
            share >= DEGENERATE_SHARE
            and others_total >= MIN_OTHERS
            and others_share <= OTHERS_MAX_SHARE
        ):
            changes.record(
                worker_id,
                SignalKind.DEGENERATE,
                f"degenerate:job:{job.id}",
                0.5,
                {
                    "judgments": len(judged),
                    "same_answer": mode,
                    "share": round(share, 3),
                    "others_share_of_that_answer": round(others_share, 3),
                },
                job.id,
            )
        if rate is None or len(agreed) < MIN_JUDGMENTS:
            continue
        evidence = {
            "compared": len(agreed),
            "agreement": round(rate, 3),
            "chance_agreement": round(chance, 3) if chance else None,
        }
        if chance is not None and rate <= chance + RANDOM_MARGIN:
            # Stronger the longer it lasts: near-chance agreement over 40 answers is rarely
            # an unlucky honest worker.
            weight = min(0.7, 0.5 + 0.2 * (len(agreed) - MIN_JUDGMENTS) / 30)
            changes.record(
                worker_id,
                SignalKind.RANDOM_ANSWERS,
                f"random:job:{job.id}",
                round(weight, 3),
                evidence,
                job.id,
            )
        elif rate < LOW_AGREEMENT:
            changes.record(
                worker_id,
                SignalKind.LOW_AGREEMENT,
                f"agreement:job:{job.id}",
                0.3,
                evidence,
                job.id,
            )
    return accuracy


def _collusion(job, by_task, finals, accuracy, changes) -> None:
    """Pairs whose answers agree far more often than their accuracies explain, and pairs
    wrong together on gold with the same wrong answer."""
    labels = len((job.answer_spec or {}).get("labels") or []) or 10
    shared: Counter[tuple[int, int]] = Counter()
    same: Counter[tuple[int, int]] = Counter()
    gold_wrong: Counter[tuple[int, int]] = Counter()
    gold_failed: Counter[int] = Counter()
    gold_seen: Counter[int] = Counter()
    for _task_id, judged in by_task.items():
        if judged[0][2]:  # gold: pairs wrong together with the same wrong answer
            wrong: dict[str, list[int]] = defaultdict(list)
            for worker_id, answer, _, correct in judged:
                gold_seen[worker_id] += 1
                if correct is False:
                    gold_failed[worker_id] += 1
                    wrong[answer].append(worker_id)
            for group in wrong.values():
                for pair in itertools.combinations(sorted(group)[:MAX_WORKERS_PER_TASK], 2):
                    gold_wrong[pair] += 1
            continue
        for (w1, a1, _, _), (w2, a2, _, _) in itertools.combinations(
            sorted(judged)[:MAX_WORKERS_PER_TASK], 2
        ):
            pair = (w1, w2)
            shared[pair] += 1
            same[pair] += a1 == a2
    for pair in set(shared) | set(gold_wrong):
        n, agreed = shared[pair], same[pair]
        a1, a2 = (accuracy.get(w, PRIOR_ACCURACY) for w in pair)
        expected = a1 * a2 + (1 - a1) * (1 - a2) / max(1, labels - 1)
        rate = agreed / n if n else 0.0
        # Far more alike than chance allows: a big excess over what the two accuracies
        # explain, and improbable (binomial tail) given them.
        too_alike = (
            n >= MIN_SHARED
            and rate >= max(COLLUSION_MIN_AGREEMENT, expected + COLLUSION_EXCESS)
            and _tail(n, agreed, expected) < SIGNIFICANCE
        )
        # Wrong together on gold with the same answer more often than their own gold
        # failure rates allow (on a binary job every wrong answer is the same one, so two
        # honest workers who each fail a fifth of gold share a few failures by chance).
        # (How many gold items both judged is bounded by the fewer either judged: counting
        # every pair on every gold item is quadratic in the crowd, and the bound only makes
        # the test more cautious.)
        together = gold_wrong[pair]
        both = max(together, min(gold_seen[pair[0]], gold_seen[pair[1]]))
        f1, f2 = (
            (gold_failed[w] + 0.5) / (gold_seen[w] + 1.0) if gold_seen[w] else 0.5 for w in pair
        )
        on_gold = (
            together >= GOLD_WRONG_TOGETHER
            and _tail(both, together, f1 * f2 / max(1, labels - 1)) < SIGNIFICANCE
        )
        if not (too_alike or on_gold):
            continue
        names = dict(
            db.session.execute(
                select(WorkerProfile.id, WorkerProfile.pseudonym).where(WorkerProfile.id.in_(pair))
            ).all()
        )
        for me, other in (pair, pair[::-1]):
            changes.record(
                me,
                SignalKind.COLLUSION,
                f"collusion:job:{job.id}:{other}",
                0.6 if on_gold else 0.45,
                {
                    "partner": names.get(other),
                    "shared_tasks": n,
                    "agreement": round(rate, 3),
                    "expected_agreement": round(expected, 3),
                    "gold_wrong_together": gold_wrong[pair],
                },
                job.id,
            )


def _tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    p = min(max(p, 1e-9), 1.0)
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _shared(column, kind: SignalKind, changes: _Changes) -> None:
    """Several worker accounts behind one device fingerprint (or network)."""
    hashes = list(
        db.session.scalars(
            select(column)
            .where(column.is_not(None))
            .group_by(column)
            .having(func.count(func.distinct(Assignment.worker_id)) > 1)
            .limit(MAX_GROUPS)
        )
    )
    if not hashes:
        return
    groups: dict[str, list[int]] = defaultdict(list)
    for value, worker_id in db.session.execute(
        select(column, Assignment.worker_id)
        .where(column.in_(hashes))
        .distinct()
        .order_by(column, Assignment.worker_id)
    ):
        groups[value].append(worker_id)
    names = dict(
        db.session.execute(
            select(WorkerProfile.id, WorkerProfile.pseudonym).where(
                WorkerProfile.id.in_({w for ws in groups.values() for w in ws})
            )
        ).all()
    )
    for value, workers in groups.items():
        accounts = len(workers)
        if kind == SignalKind.SHARED_DEVICE:
            weight, prefix = min(0.8, 0.3 + 0.1 * accounts), "device"
        else:  # offices and carrier NAT share addresses: weak alone
            weight, prefix = min(0.3, 0.05 * accounts), "network"
        for worker_id in workers:
            others = [names.get(w) for w in workers if w != worker_id][:MAX_ACCOUNTS_LISTED]
            changes.record(
                worker_id,
                kind,
                f"{prefix}:{value[:32]}",
                weight,
                {"accounts": accounts, "other_workers": others},
                None,
            )


def run_scan(job_id: int | None = None) -> dict[str, Any]:
    """Run every periodic scan (one job's patterns, or the recent jobs'), then escalate."""
    if job_id is not None:
        job = db.session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", errors={"job_id": ["No such job."]})
        jobs = [job]
    else:
        jobs = [db.session.get(Job, j) for j in _recent_jobs()]
    changes = _Changes()
    for job in jobs:
        scan_job(job, changes)
    _shared(Assignment.fingerprint_hash, SignalKind.SHARED_DEVICE, changes)
    _shared(Assignment.ip_hash, SignalKind.SHARED_NETWORK, changes)
    escalated = 0
    for worker_id in sorted(changes.workers):
        if fraud_risk.escalate(worker_id) is not None:
            escalated += 1
    db.session.commit()
    return {
        "jobs_scanned": len(jobs),
        "signals_changed": dict(changes.kinds),
        "workers_escalated": escalated,
    }


def scheduled_scan() -> dict[str, Any]:
    """Periodic RQ job: scan the recently active jobs."""
    return run_scan(None)
