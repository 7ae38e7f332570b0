"""Settlement throughput on PostgreSQL: accepted judgments settled per second, legs and all.

Rebuilds the database named by DATABASE_URL (default
postgresql://postgres@127.0.0.1/crowdline_bench_settle, created when missing) from the
migrations, then prepares --n leased assignments with their holds: a client with --jobs
funded jobs (through the offline gateway, so the funding is in the ledger), one task per
assignment, --workers workers (every other one in a vendor crowd with a margin, unless
--no-margin), the rows bulk-inserted and every hold placed through
billing.services.place_hold_in_txn, in batches, from --procs processes.

Then it times settling them all: each judgment is billing.services.settle_judgment_in_txn
plus its own commit, from --procs processes at once, each taking every --procs-th assignment
so they all work the same jobs. It prints progress, judgments settled per second, ledger legs
written per second, latency percentiles per settlement, and checks the ledger afterwards
(every transaction balances, every cached balance equals its legs, no hold left held).

Every settlement credits the one platform fee account, so settlements serialize on that row
for as long as each transaction stays open; --procs shows how far concurrency still helps.

It asserts nothing about speed and is never collected by the test suite.

    .venv/bin/python bench/bench_settlement.py
    .venv/bin/python bench/bench_settlement.py --n 2000 --procs 2      # quick smoke run
    .venv/bin/python bench/bench_settlement.py --procs 1 --jobs 1      # one hot job, serial
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import conninfo, sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1/crowdline_bench_settle"
PRICE = 25  # minor units per judgment
MARGIN_BPS = 1000


# ---------------------------------------------------------------------------- database


def ensure_database(url: str) -> None:
    """CREATE DATABASE when the one named in `url` does not exist yet."""
    info = conninfo.conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://"))
    name = info["dbname"]
    with psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")


def build_app(url: str):
    os.environ["DATABASE_URL"] = url  # read (and given its driver) by Settings.from_env
    os.environ.setdefault("SECRET_KEY", "bench")  # keep the bench from writing instance/
    from marketplace import create_app

    app = create_app({"redis_url": None, "jobs_inline": True})
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def reset_schema(app) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    from marketplace.database import db

    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        logging.disable(logging.INFO)  # alembic's per-migration lines
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
        db.engine.dispose()


# ---------------------------------------------------------------------------- the data


@dataclass
class Prepared:
    organization_id: int
    job_ids: list[int]
    assignment_ids: list[int]


def seed(app, args: argparse.Namespace) -> Prepared:
    """A client, a vendor with a margin-bearing crowd, workers, funded jobs, tasks and leased
    assignments (the holds come next, through the service)."""
    from sqlalchemy import insert, select

    from billing import services as billing
    from jobs.models import Assignment, AssignmentStatus, Job, JobStatus, Task, TaskStatus
    from marketplace.accounts.models import (
        AccountType,
        Organization,
        OrgKind,
        User,
        UserStatus,
    )
    from marketplace.database import db
    from workers.models import Crowd, CrowdMember, WorkerProfile, WorkerStatus

    now = datetime.now(UTC)
    with app.app_context():
        client = Organization(name="Bench client", kind=OrgKind.CLIENT, created_at=now)
        vendor = Organization(name="Bench vendor", kind=OrgKind.VENDOR, created_at=now)
        db.session.add_all([client, vendor])
        db.session.flush()
        crowd = Crowd(
            organization_id=vendor.id,
            name="Bench crowd",
            description="",
            vendor_margin_bps=0 if args.no_margin else MARGIN_BPS,
            created_at=now,
        )
        db.session.add(crowd)
        db.session.flush()
        user_ids = db.session.scalars(
            insert(User).returning(User.id),
            [
                {
                    "email": f"worker{i}@bench.example",
                    "email_normalized": f"worker{i}@bench.example",
                    "name": f"Worker {i}",
                    "password_hash": "!",
                    "account_type": AccountType.WORKER,
                    "status": UserStatus.ACTIVE,
                    "created_at": now,
                    "password_changed_at": now,
                }
                for i in range(args.workers)
            ],
        ).all()
        worker_ids = db.session.scalars(
            insert(WorkerProfile).returning(WorkerProfile.id),
            [
                {
                    "user_id": user_id,
                    "pseudonym": f"w_bench{i:08d}",
                    "display_name": f"Worker {i}",
                    "status": WorkerStatus.ACTIVE,
                    "created_at": now,
                }
                for i, user_id in enumerate(user_ids)
            ],
        ).all()
        db.session.execute(
            insert(CrowdMember),
            [
                {"crowd_id": crowd.id, "worker_id": w, "joined_at": now, "source": "invitation"}
                for w in worker_ids[::2]
            ],
        )
        requirements = {"crowds": [crowd.id, "public"]}
        jobs = [
            Job(
                organization_id=client.id,
                title=f"Bench job {j}",
                instructions="",
                answer_spec={"type": "single_choice", "labels": ["cat", "dog"]},
                price_amount=PRICE,
                currency="USD",
                redundancy_min=1,
                redundancy_max=1,
                target_confidence=0.9,
                requirements=requirements,
                lease_seconds=3600,
                status=JobStatus.ACTIVE,
                created_at=now,
                activated_at=now,
            )
            for j in range(args.jobs)
        ]
        db.session.add_all(jobs)
        db.session.flush()
        job_ids = [job.id for job in jobs]
        per_job = [
            args.n // args.jobs + (1 if j < args.n % args.jobs else 0) for j in range(args.jobs)
        ]
        rows = []
        for job_id, count in zip(job_ids, per_job, strict=True):
            rows += [
                {
                    "job_id": job_id,
                    "payload": {"n": i},
                    "status": TaskStatus.OPEN,
                    "redundancy_target": 1,
                    "live_count": 1,
                    "submitted_count": 0,
                    "created_at": now,
                }
                for i in range(count)
            ]
        task_rows = db.session.execute(
            insert(Task).returning(Task.id, Task.job_id, sort_by_parameter_order=True), rows
        ).all()
        db.session.execute(
            insert(Assignment),
            [
                {
                    "task_id": task_id,
                    "job_id": job_id,
                    "worker_id": worker_ids[i % len(worker_ids)],
                    "status": AssignmentStatus.LEASED,
                    "leased_at": now,
                    "lease_expires_at": now + timedelta(hours=1),
                    "is_gold": False,
                }
                for i, (task_id, job_id) in enumerate(task_rows)
            ],
        )
        db.session.commit()
        # Fund each job through the gateway (offline: confirmed at once) with room to spare.
        most = max(per_job) * billing.hold_cost(PRICE, PRICE * MARGIN_BPS // 10_000 + 1)
        for job_id in job_ids:
            billing.start_job_funding(client.id, job_id, most, "USD", None, f"bench-{job_id}")
        assignment_ids = list(db.session.scalars(select(Assignment.id).order_by(Assignment.id)))
        prepared = Prepared(client.id, job_ids, assignment_ids)
        db.session.remove()
        db.engine.dispose()
    return prepared


# Shared with the pool's processes by its initializer: the progress counter, how many are
# ready (app built, connected), and the signal to start together.
_done = _ready = _go = None


def _share(done, ready, go) -> None:
    global _done, _ready, _go
    _done, _ready, _go = done, ready, go


def _ready_set_go(app) -> None:
    """Connect, say so, and wait for the others: process start-up is not what we time."""
    from sqlalchemy import text

    from marketplace.database import db

    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    with _ready.get_lock():
        _ready.value += 1
    _go.wait()


def _count(n: int) -> None:
    with _done.get_lock():
        _done.value += n


def place_holds(url: str, ids: list[int], batch: int) -> int:
    """One preparing process: hold each assignment's price, fee and margin, a batch per
    commit, the way leasing does (through jobs.money, so the vendor margin applies)."""
    from jobs import money
    from jobs.models import Assignment, Job
    from marketplace.database import db

    app = build_app(url)
    _ready_set_go(app)
    with app.app_context():
        jobs: dict[int, Job] = {}
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            for assignment in db.session.query(Assignment).filter(Assignment.id.in_(chunk)):
                job = jobs.get(assignment.job_id) or db.session.get(Job, assignment.job_id)
                jobs[job.id] = job
                money.place_hold(job, assignment)
            db.session.commit()
            _count(len(chunk))
        db.session.remove()
        db.engine.dispose()
    return len(ids)


def settle(url: str, organization_id: int, ids: list[int]) -> tuple[list[float], int]:
    """One settling process: settle each judgment in its own transaction; returns the
    seconds each took and how many failed."""
    from billing import services as billing
    from marketplace.database import db

    app = build_app(url)
    _ready_set_go(app)
    took: list[float] = []
    failed = 0
    with app.app_context():
        for assignment_id in ids:
            started = time.perf_counter()
            try:
                billing.settle_judgment_in_txn(assignment_id, organization_id)
                db.session.commit()
            except Exception as error:  # counted and shown; the ledger check says the rest
                db.session.rollback()
                failed += 1
                if failed <= 3:
                    print(f"  settlement of {assignment_id} failed: {error!r}"[:300])
                continue
            took.append(time.perf_counter() - started)
            _count(1)
        db.session.remove()
        db.engine.dispose()
    return took, failed


# ---------------------------------------------------------------------------- running


def in_processes(
    label: str, target: Callable, slices: list[tuple], total: int
) -> tuple[list, float]:
    """Run `target(*slice)` in one process per slice, printing progress."""
    context = multiprocessing.get_context("spawn")
    done, ready, go = context.Value("i", 0), context.Value("i", 0), context.Event()
    with context.Pool(len(slices), initializer=_share, initargs=(done, ready, go)) as pool:
        pending = [pool.apply_async(target, s) for s in slices]
        while ready.value < len(slices) and not any(p.ready() for p in pending):
            time.sleep(0.05)
        started = time.perf_counter()
        go.set()
        last = 0.0
        while not all(p.ready() for p in pending):
            time.sleep(0.25)
            now = time.perf_counter() - started
            if now - last >= 2:
                last = now
                rate = done.value / now
                print(f"  {label}: {done.value:>8,} / {total:,}  ({rate:,.0f}/s)", flush=True)
        results = [p.get() for p in pending]
    return results, time.perf_counter() - started


def check_ledger(app) -> dict[str, int]:
    from sqlalchemy import func, select

    from billing.models import Hold, HoldStatus, LedgerAccount, LedgerEntry, LedgerTransaction
    from marketplace.database import db

    with app.app_context():
        unbalanced = db.session.execute(
            select(func.count()).select_from(
                select(LedgerEntry.transaction_id)
                .group_by(LedgerEntry.transaction_id)
                .having(func.sum(LedgerEntry.amount) != 0)
                .subquery()
            )
        ).scalar()
        sums = (
            select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
            .group_by(LedgerEntry.account_id)
            .subquery()
        )
        drifted = db.session.scalar(
            select(func.count())
            .select_from(LedgerAccount)
            .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
            .where(LedgerAccount.balance != func.coalesce(sums.c.total, 0))
        )
        held = db.session.scalar(
            select(func.count()).select_from(Hold).where(Hold.status == HoldStatus.HELD)
        )
        settlements = db.session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "settlement")
        )
        legs = db.session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerTransaction.kind == "settlement")
        )
        db.session.remove()
    return {
        "unbalanced": unbalanced,
        "drifted": drifted,
        "held": held,
        "settlements": settlements,
        "legs": legs,
    }


def baseline(url: str, rounds: int = 200) -> tuple[float, float]:
    """Median milliseconds of a bare round trip and of a one-row write + commit, to read the
    settlement figures against (this box may be busy with other work)."""
    info = conninfo.conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://"))
    with psycopg.connect(**info) as conn:
        conn.execute("CREATE TEMP TABLE bench_scratch (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO bench_scratch VALUES (1, 0)")
        conn.commit()
        trips, writes = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            trips.append(time.perf_counter() - started)
            conn.rollback()
            started = time.perf_counter()
            conn.execute("UPDATE bench_scratch SET n = n + 1 WHERE id = 1")
            conn.commit()
            writes.append(time.perf_counter() - started)
    return 1000 * statistics.median(trips), 1000 * statistics.median(writes)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="judgments to settle")
    parser.add_argument("--jobs", type=int, default=10, help="jobs they belong to")
    parser.add_argument("--workers", type=int, default=500, help="workers who judged them")
    parser.add_argument("--procs", type=int, default=4, help="settling processes")
    parser.add_argument("--batch", type=int, default=500, help="holds per commit when preparing")
    parser.add_argument("--no-margin", action="store_true", help="no vendor margin legs")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    args.jobs = max(1, min(args.jobs, args.n))

    ensure_database(args.url)
    app = build_app(args.url)
    reset_schema(app)
    print(
        f"preparing {args.n:,} leased assignments on {args.jobs} jobs for {args.workers} "
        f"workers ({'no margin' if args.no_margin else 'half with a vendor margin'})"
    )
    started = time.perf_counter()
    prepared = seed(app, args)
    print(f"  rows and funding in {time.perf_counter() - started:.1f} s")
    ids = prepared.assignment_ids
    preparers = max(1, min(args.procs, 4))
    _, took = in_processes(
        "holds",
        place_holds,
        [(args.url, ids[k::preparers], args.batch) for k in range(preparers)],
        len(ids),
    )
    print(f"  {len(ids):,} holds placed in {took:.1f} s ({len(ids) / took:,.0f}/s)")

    trip, write = baseline(args.url)
    print(f"baseline: round trip {trip:.2f} ms, one-row write + commit {write:.2f} ms (medians)")
    print(f"settling {len(ids):,} judgments from {args.procs} processes, one commit each")
    results, elapsed = in_processes(
        "settled",
        settle,
        [(args.url, prepared.organization_id, ids[k :: args.procs]) for k in range(args.procs)],
        len(ids),
    )
    latencies = sorted(s for took, _ in results for s in took)
    failed = sum(f for _, f in results)
    ledger = check_ledger(app)
    ms = [1000 * s for s in latencies]
    settled = len(latencies)
    print()
    print("settlement throughput (PostgreSQL)")
    print(f"  judgments settled     {settled:>10,}   failed {failed}")
    print(f"  wall time             {elapsed:>10.1f} s   ({args.procs} processes)")
    print(f"  settled per second    {settled / elapsed:>10,.0f}")
    print(
        f"  ledger legs per sec   {ledger['legs'] / elapsed:>10,.0f}   "
        f"({ledger['legs']:,} legs in {ledger['settlements']:,} transactions, "
        f"{ledger['legs'] / max(1, ledger['settlements']):.2f} a settlement)"
    )
    if ms:
        print(
            f"  latency per settlement  p50 {statistics.median(ms):.1f} ms   "
            f"p90 {percentile(ms, 90):.1f} ms   p99 {percentile(ms, 99):.1f} ms   "
            f"max {ms[-1]:.1f} ms"
        )
    print(f"  baseline              round trip {trip:.2f} ms, write + commit {write:.2f} ms")
    print(f"  load average          {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = ledger["unbalanced"] == 0 and ledger["drifted"] == 0 and ledger["held"] == 0
    print(
        f"  ledger check          {'ok' if ok else 'FAILED'}: {ledger['unbalanced']} unbalanced "
        f"transactions, {ledger['drifted']} drifted balances, {ledger['held']} holds left held"
    )


if __name__ == "__main__":
    main()
