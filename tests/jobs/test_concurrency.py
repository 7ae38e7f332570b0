"""Invariant 1 under concurrency: a task never has more live + submitted assignments than its
redundancy target, a worker never holds or judges a task twice, and nothing is lost.

The crowd test is the one the jobs issue asks for: 64 workers, each on its own thread with
its own test client and account, lease and judge one job of 2,000 tasks with redundancy 3
until nobody can lease anything (PostgreSQL, the workers spread over four processes of
their own; 8 workers and 100 tasks on SQLite, on threads of this one), while a monitor
checks the counts in SQL. The simulated workers live in tests.jobs.crowd. Some workers
skip (release) tasks, some retry their submits, and some walk away from leases, which come
back through lease expiry.

Time is a ManualClock frozen while the workers run, so no lease expires by accident and
every run ends the same way: a round lasts until every worker has been told there is nothing
to do (204); then the clock moves past the lease duration, the expiry job runs, and the next
round starts. The run ends with a round in which nobody leases anything.

On PostgreSQL the full-size run takes minutes: about 12,800 requests of some 13 ms of
Python each. In one process they all queue for one interpreter lock, and a request holding
a busy row lock (a job's escrow and holds accounts) waits for it too; four processes use
both cores and keep those waits short.

Then the races that broke it, each on its own: one worker leasing in parallel, a burst of
retried submits, a submit racing a release, and leases expiring while others lease.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text, update

from billing.models import Earning, Hold, HoldStatus
from jobs.leasing import expire_leases_everywhere
from jobs.models import Assignment, Task, TaskStatus
from marketplace import clock
from marketplace.database import db
from tests.billing.helpers import assert_ledger_consistent
from tests.conftest import app_settings, build_app, database_url
from tests.helpers import Account, Api
from tests.jobs.crowd import CrowdProcesses, Tally, all_at_once, client_for, post, work
from tests.jobs.helpers import active_job, active_worker, lease

ON_POSTGRES = database_url().startswith("postgresql")
LEASE_SECONDS = 60
REDUNDANCY = {"min": 3, "max": 3, "target_confidence": 0.9}
SINGLE = {"min": 1, "max": 1, "target_confidence": 0.9}


# --- the monitor ---------------------------------------------------------------------------

# Tasks with more live + judged assignments than their target, or whose cached counts differ
# from the assignments table. One statement sees one snapshot, and every transaction moves
# the counts and the assignment rows together, so this must be empty at every instant.
VIOLATIONS = text(
    """
    SELECT t.id, t.redundancy_target, t.live_count, t.submitted_count, c.live, c.judged
    FROM tasks t
    LEFT JOIN (
        SELECT task_id,
               SUM(CASE WHEN status = 'leased' THEN 1 ELSE 0 END) AS live,
               SUM(CASE WHEN status IN ('submitted', 'accepted') THEN 1 ELSE 0 END) AS judged
        FROM assignments WHERE job_id = :job_id GROUP BY task_id
    ) c ON c.task_id = t.id
    WHERE t.job_id = :job_id
      AND (COALESCE(c.live, 0) + COALESCE(c.judged, 0) > t.redundancy_target
           OR t.live_count + t.submitted_count > t.redundancy_target
           OR t.live_count <> COALESCE(c.live, 0)
           OR t.submitted_count <> COALESCE(c.judged, 0))
    LIMIT 20
    """
)
LIVE = text("SELECT COALESCE(SUM(live_count), 0) FROM tasks WHERE job_id = :job_id")


class Monitor:
    """Runs VIOLATIONS over and over on a connection of its own while the workers run."""

    def __init__(self, job_id: int):
        # On SQLite it queues for the write lock with the crowd (whose timeout is 120 s): the
        # default 5 s starved it on a loaded machine ("database is locked").
        waits = {} if ON_POSTGRES else {"connect_args": {"timeout": 120}}
        self.engine = create_engine(database_url(), isolation_level="AUTOCOMMIT", **waits)
        self.job_id = job_id
        self.samples = 0
        self.max_live = 0
        self.violations: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(VIOLATIONS, {"job_id": self.job_id}).all()
            live = conn.scalar(LIVE, {"job_id": self.job_id})
        self.samples += 1
        self.max_live = max(self.max_live, int(live))
        self.violations.extend(tuple(row) for row in rows)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.check()
            except Exception:  # a monitor that stops looking must fail the test
                self.violations.append(("monitor crashed", traceback.format_exc()))
                return

    def __enter__(self) -> Monitor:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self.engine.dispose()


# --- the crowd run -------------------------------------------------------------------------


def _engine_options(connections: int) -> dict[str, Any]:
    if ON_POSTGRES:
        # The server's connection limit is shared with everything else on the machine, so
        # the pool is bounded as a production server's is: a request waits for a connection.
        # Commits do not wait for the WAL flush: what one transaction sees of another and
        # every lock are unchanged; only durability across a server crash is given up.
        return {
            "pool_size": connections,
            "max_overflow": 0,
            "pool_timeout": 120,
            "connect_args": {
                "options": "-c synchronous_commit=off -c plan_cache_mode=force_custom_plan"
            },
        }
    return {"connect_args": {"timeout": 120, "check_same_thread": False}}


def _crowd_app(connections: int) -> tuple[Flask, clock.ManualClock]:
    """An app of the test's own: a pool for the crowd, and a clock the test moves."""
    app = build_app(SQLALCHEMY_ENGINE_OPTIONS=_engine_options(connections))
    frozen = clock.ManualClock(start=clock.SystemClock().now())
    clock.install(app, frozen)
    return app, frozen


def _judge_until_done(
    app: Flask,
    frozen: clock.ManualClock,
    job_id: int,
    workers: list[Account],
    budget: float,
    processes: CrowdProcesses | None,
) -> dict[str, Any]:
    """Rounds of every worker at once until a round leases nothing; between rounds the clock
    passes the lease duration and the periodic expiry job runs. With `processes`, the
    workers are spread over them; otherwise they run on threads of this process."""
    deadline = time.monotonic() + budget
    started = time.monotonic()
    monitor = Monitor(job_id)
    rounds: list[list[Tally]] = []
    expired = 0
    tokens = [w.token for w in workers]
    try:
        while True:
            first = not rounds
            with monitor:
                if processes is not None:
                    tallies = processes.round(frozen.now(), job_id, tokens, first, deadline)
                else:
                    tallies = all_at_once(
                        [
                            lambda i=i, t=t, first=first: work(app, i, t, job_id, first, deadline)
                            for i, t in enumerate(tokens)
                        ]
                    )
            rounds.append(tallies)
            if not any(t.leased for t in tallies) or any(t.crashed or t.timed_out for t in tallies):
                break
            frozen.advance(LEASE_SECONDS + 1)
            with app.app_context():
                expired += expire_leases_everywhere()
                db.session.remove()
        monitor.check()  # once more, quiescent
    finally:
        monitor.close()
    return {
        "tallies": [t for tallies in rounds for t in tallies],
        "rounds": len(rounds),
        "expired": expired,
        "monitor": monitor,
        "seconds": time.monotonic() - started,
    }


def _assert_every_task_judged_three_times(job_id: int, tasks: int, run: dict[str, Any]) -> None:
    tallies: list[Tally] = run["tallies"]
    crashed = [t.crashed for t in tallies if t.crashed]
    assert not crashed, crashed[0]
    assert not any(t.timed_out for t in tallies), "the crowd did not finish in time"
    unexpected = [u for t in tallies for u in t.unexpected]
    assert unexpected == [], unexpected[:5]  # no 5xx, nor any other surprise, ever
    monitor: Monitor = run["monitor"]
    assert monitor.violations == [], monitor.violations[:10]
    assert monitor.samples >= 2, "the monitor never got to look"

    engine = create_engine(database_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:

            def rows(sql: str) -> list[tuple]:
                return [tuple(r) for r in conn.execute(text(sql), {"j": job_id})]

            assert rows("SELECT status, COUNT(*) FROM tasks WHERE job_id = :j GROUP BY status") == [
                ("completed", tasks)
            ]
            assert rows(
                "SELECT DISTINCT live_count, submitted_count FROM tasks WHERE job_id = :j"
            ) == [(0, 3)]
            accepted = rows(
                "SELECT task_id, COUNT(*) FROM assignments"
                " WHERE job_id = :j AND status = 'accepted' GROUP BY task_id"
            )
            assert len(accepted) == tasks and {n for _, n in accepted} == {3}
            twice = "SELECT task_id, worker_id FROM assignments WHERE job_id = :j"
            assert rows(f"{twice} GROUP BY task_id, worker_id HAVING COUNT(*) > 1") == []
            status_of = dict(rows("SELECT id, status FROM assignments WHERE job_id = :j"))
            job_status = rows("SELECT status FROM jobs WHERE id = :j")
    finally:
        engine.dispose()
    assert job_status == [("completed",)]

    # Nothing lost: every answer a worker was told was taken is one of the three accepted
    # judgments, and every skipped or abandoned lease gave its slot back.
    submitted = [a for t in tallies for a in t.submitted]
    assert len(submitted) == len(set(submitted)) == tasks * 3
    assert {status_of[a] for a in submitted} == {"accepted"}
    released = [a for t in tallies for a in t.released]
    abandoned = [a for t in tallies for a in t.abandoned]
    assert released and {status_of[a] for a in released} == {"released"}
    assert abandoned and {status_of[a] for a in abandoned} == {"expired"}
    assert run["expired"] == len(abandoned)
    assert sum(t.retries for t in tallies) > 0


def _crowd_judges_a_job(
    workers_count: int, tasks: int, connections: int, budget: float, processes: int = 0
) -> None:
    app, frozen = _crowd_app(connections)
    crowd = None
    try:
        api = Api(client_for(app, 10_000))
        admin = api.admin(app)
        client = api.signup("client")
        job = active_job(
            api,
            app,
            client,
            tasks=tasks,
            budget=tasks * 3 * 6 * 2,
            redundancy=REDUNDANCY,
            lease_seconds=LEASE_SECONDS,
        )
        began = time.monotonic()
        workers = [active_worker(Api(client_for(app, i)), admin) for i in range(workers_count)]
        setup = time.monotonic() - began
        if processes:
            options = _engine_options(connections // processes)
            settings = app_settings(SQLALCHEMY_ENGINE_OPTIONS=options)
            crowd = CrowdProcesses(processes, settings)
        run = _judge_until_done(app, frozen, job["id"], workers, budget, crowd)
        _assert_every_task_judged_three_times(job["id"], tasks, run)
        with app.app_context():
            assert_ledger_consistent(db.session)
            held = select(func.count()).select_from(Hold).where(Hold.status == HoldStatus.HELD)
            assert db.session.scalar(held) == 0
            db.session.remove()
    finally:
        if crowd is not None:
            crowd.close()
        with app.app_context():
            db.engine.dispose()
    statuses = sum((t.statuses for t in run["tallies"]), Counter())
    print(
        f"\n{workers_count} workers ({processes or 1} processes), {tasks} tasks x 3: accounts in "
        f"{setup:.1f}s, judged in "
        f"{run['seconds']:.1f}s over {run['rounds']} rounds; {dict(sorted(statuses.items()))}; "
        f"{run['expired']} leases expired; {run['monitor'].samples} monitor checks, up to "
        f"{run['monitor'].max_live} live leases at once"
    )


@pytest.mark.slow
@pytest.mark.skipif(not ON_POSTGRES, reason="the full-size crowd needs PostgreSQL")
def test_64_workers_judge_2000_tasks_three_times_each(app):
    _crowd_judges_a_job(workers_count=64, tasks=2000, connections=16, budget=1500, processes=4)


@pytest.mark.skipif(ON_POSTGRES, reason="PostgreSQL runs the full-size crowd")
def test_8_workers_judge_100_tasks_three_times_each(app):
    _crowd_judges_a_job(workers_count=8, tasks=100, connections=8, budget=300)


# --- targeted races ------------------------------------------------------------------------


TASKS_HELD = 300 if ON_POSTGRES else 40  # SQLite serialises every lease anyway


def test_concurrent_leases_by_one_worker_never_get_one_task_twice(api, app, db_session):
    # A tool leasing in parallel for one worker. The more of the job's open tasks the worker
    # already holds, the longer the lease query runs, and the wider the window in which a
    # lease of the same task commits unseen by it.
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=TASKS_HELD, redundancy=REDUNDANCY)
    worker = active_worker(api, admin)
    leased: list[int] = []
    statuses: Counter = Counter()

    def lease_until_none(client) -> None:
        while True:
            response = post(client, worker.token, "/api/v1/assignments", {"job_id": job["id"]})
            statuses[response.status_code] += 1
            if response.status_code != 201:
                return
            leased.append(response.get_json()["task"]["id"])

    all_at_once([lambda i=i: lease_until_none(client_for(app, i)) for i in range(8)])
    assert statuses[201] + statuses[204] == statuses.total(), statuses
    assert len(leased) == len(set(leased)) == TASKS_HELD  # every task once, none twice
    live = select(func.sum(Task.live_count)).where(Task.job_id == job["id"])
    assert db_session.scalar(live) == TASKS_HELD


def test_a_burst_of_submits_of_one_assignment_makes_one_judgment(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=4, redundancy=SINGLE)
    worker = active_worker(api, admin)
    for attempt in range(4):
        assignment = lease(api, worker, job["id"]).get_json()
        path = f"/api/v1/assignments/{assignment['id']}/submit"
        # Retries of one answer, some under one Idempotency-Key, and a different answer.
        calls = []
        for i in range(10):
            answer = "dog" if i >= 8 else "cat"
            headers = {"Idempotency-Key": f"submit-{attempt}"} if i % 2 and i < 8 else {}
            calls.append(
                lambda c=client_for(app, i), a=answer, h=headers, path=path: (
                    a,
                    bool(h),
                    post(c, worker.token, path, {"answer": a}, **h),
                )
            )
        results = all_at_once(calls)
        assert not [r for r in results if isinstance(r, str)], results
        stored = db_session.get(Assignment, assignment["id"])
        assert stored.status.value == "accepted"
        for answer, keyed, response in results:
            if answer == stored.answer:
                # Taken, or replayed; a keyed retry may find its twin still running (409).
                assert response.status_code in ((200, 409) if keyed else (200,)), (
                    response.status_code,
                    response.get_data(as_text=True),
                )
                if response.status_code == 200:
                    assert response.get_json()["answer"] == answer
            else:
                assert response.status_code == 409, response.get_data(as_text=True)
        task = db_session.get(Task, assignment["task"]["id"])
        assert (task.status, task.live_count, task.submitted_count) == (TaskStatus.COMPLETED, 0, 1)
        earnings = select(func.count()).where(Earning.assignment_id == assignment["id"])
        assert db_session.scalar(earnings) == 1
    assert_ledger_consistent(db_session)


def test_submit_racing_release_takes_effect_once(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=6, redundancy=SINGLE)
    worker = active_worker(api, admin)
    outcomes = Counter()
    for _ in range(6):
        assignment = lease(api, worker, job["id"]).get_json()
        path = f"/api/v1/assignments/{assignment['id']}"
        submitted, released = all_at_once(
            [
                lambda p=path: post(
                    client_for(app, 1), worker.token, f"{p}/submit", {"answer": "cat"}
                ),
                lambda p=path: post(client_for(app, 2), worker.token, f"{p}/release", {}),
            ]
        )
        codes = (submitted.status_code, released.status_code)
        assert codes in ((200, 409), (409, 200)), codes
        task = db_session.get(Task, assignment["task"]["id"])
        hold = db_session.get(Hold, assignment["id"])
        if codes == (200, 409):
            outcomes["submitted"] += 1
            assert (task.live_count, task.submitted_count) == (0, 1)
            assert hold.status == HoldStatus.SETTLED
        else:
            outcomes["released"] += 1
            assert (task.live_count, task.submitted_count) == (0, 0)
            assert hold.status == HoldStatus.RELEASED
    assert_ledger_consistent(db_session)


def test_leases_expiring_lazily_while_others_lease_give_no_errors(
    api, app, manual_clock, db_session
):
    # Each lease first expires the job's overdue leases, many in one transaction, while
    # other leases hold the task rows it must update and wait for the job's escrow.
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=80, redundancy=REDUNDANCY, lease_seconds=60)
    workers = [active_worker(api, admin) for _ in range(12)]
    for worker in workers:
        for _ in range(5):
            assert lease(api, worker, job["id"]).status_code == 201  # and walk away
    manual_clock.advance(61)
    # The quality engine raised the targets meanwhile, so the tasks whose leases expire can be
    # leased again before the expiry has given their slots back.
    db_session.execute(
        update(Task)
        .where(Task.job_id == job["id"])
        .values(redundancy_target=Task.redundancy_target + 2)
    )
    statuses: Counter = Counter()
    problems: list[str] = []

    def work(index: int, worker: Account) -> None:
        client_ = client_for(app, index)
        for _ in range(6):
            leased = post(client_, worker.token, "/api/v1/assignments", {"job_id": job["id"]})
            statuses[f"lease {leased.status_code}"] += 1
            if leased.status_code != 201:
                if leased.status_code != 204:
                    problems.append(leased.get_data(as_text=True))
                return
            path = f"/api/v1/assignments/{leased.get_json()['id']}/submit"
            submitted = post(client_, worker.token, path, {"answer": "cat"})
            statuses[f"submit {submitted.status_code}"] += 1
            if submitted.status_code != 200:
                problems.append(submitted.get_data(as_text=True))

    all_at_once([lambda i=i, w=w: work(i, w) for i, w in enumerate(workers)])
    assert problems == [], (statuses, problems[:3])
    assert (
        db_session.scalar(
            select(func.count()).where(
                Assignment.job_id == job["id"], Assignment.status == "expired"
            )
        )
        == 60
    )
    counts = db_session.execute(
        text(
            "SELECT t.id FROM tasks t WHERE t.job_id = :j AND t.live_count <> (SELECT COUNT(*)"
            " FROM assignments a WHERE a.task_id = t.id AND a.status = 'leased')"
        ),
        {"j": job["id"]},
    ).all()
    assert counts == []
    assert_ledger_consistent(db_session)
