"""Background jobs: dispatched only after commit, inline or through real Redis and RQ workers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from marketplace import background, clock
from marketplace.database import db
from marketplace.models import AuditEvent, IdempotencyRecord
from tests.conftest import build_app, database_url

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL,
    reason="REDIS_URL is not set: real RQ queues and worker processes need a Redis server "
    "(CI sets it; locally: REDIS_URL=redis://127.0.0.1:6379/0 make test)",
)

# What inline jobs in this module saw: (tag, audit actions visible to the job's own session).
CALLS: list[tuple[str, list[str]]] = []


def record_call(tag: str) -> None:
    """A job that notes it ran and what committed data its own session could see."""
    actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    CALLS.append((tag, actions))


@pytest.fixture(autouse=True)
def _forget_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def _audit_event(action: str) -> AuditEvent:
    event = AuditEvent(
        occurred_at=clock.now(), action=action, object_type="test", object_id="1", detail={}
    )
    db.session.add(event)
    return event


def _idempotency_record(key: str, created_at: datetime) -> IdempotencyRecord:
    record = IdempotencyRecord(
        owner="user:1",
        key=key,
        method="POST",
        path="/api/v1/organizations",
        request_hash="0" * 64,
        state="done",
        status_code=201,
        created_at=created_at,
    )
    db.session.add(record)
    return record


# --- inline mode (no Redis: the embedded default and the SQLite test run) -------------------


def test_inline_job_runs_only_after_commit_and_sees_the_committed_data(app):
    with app.app_context():
        _audit_event("test.before_job")
        background.enqueue(record_call, "after-commit")
        db.session.flush()
        assert CALLS == []  # flushed is not committed: nothing runs yet
        db.session.commit()
        # The job ran in its own session and saw what this transaction committed.
        assert CALLS == [("after-commit", ["test.before_job"])]
        db.session.commit()  # a later, empty commit does not run it again
    assert len(CALLS) == 1


def test_inline_job_never_runs_after_a_rollback(app, db_session):
    with app.app_context():
        _audit_event("test.rolled_back")
        background.enqueue(record_call, "rolled-back")
        db.session.rollback()
        db.session.commit()  # the next transaction's commit must not resurrect it
    assert CALLS == []
    assert db_session.scalar(select(AuditEvent)) is None


def test_a_failed_commit_discards_the_job(app, db_session):
    now = clock.SystemClock().now()
    with app.app_context():
        _idempotency_record("taken", now)
        db.session.commit()
    with app.app_context():
        _idempotency_record("taken", now)  # violates the unique (owner, key)
        background.enqueue(record_call, "doomed")
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.commit()
    assert CALLS == []


def test_a_savepoint_rollback_drops_only_the_jobs_enqueued_inside_it(app):
    with app.app_context():
        background.enqueue(record_call, "outer-before")
        savepoint = db.session.begin_nested()
        background.enqueue(record_call, "inside-savepoint")
        savepoint.rollback()
        with db.session.begin_nested():
            background.enqueue(record_call, "inside-released-savepoint")
        background.enqueue(record_call, "outer-after")
        assert CALLS == []
        db.session.commit()
    assert [tag for tag, _ in CALLS] == [
        "outer-before",
        "inside-released-savepoint",
        "outer-after",
    ]


def test_rolling_back_an_outer_savepoint_drops_jobs_of_savepoints_inside_it(app):
    with app.app_context():
        outer = db.session.begin_nested()
        with db.session.begin_nested():
            background.enqueue(record_call, "nested-twice")
        outer.rollback()
        db.session.commit()
    assert CALLS == []


# --- real Redis, real RQ worker process ------------------------------------------------------


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of this test's own, so parallel runs on one Redis never take each other's jobs."""
    name = f"crowdline-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    from redis import Redis

    redis = Redis.from_url(REDIS_URL)
    for pattern in (f"rq:*{name}*", f"crowdline:periodic:*{name}*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


@pytest.fixture
def rq_app(app, queue_name):
    """An app that really enqueues to Redis (the session app runs jobs inline)."""
    rq_app = build_app(jobs_inline=False, rq_queue=queue_name)
    yield rq_app
    with rq_app.app_context():
        db.session.remove()
        db.engine.dispose()


def _worker_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CROWDLINE_JOBS_INLINE", "CROWDLINE_SANDBOX", "TEST_DATABASE_URL"}
    }
    env.update(
        FLASK_APP="wsgi.py",
        DATABASE_URL=database_url(),
        REDIS_URL=REDIS_URL or "",
        SECRET_KEY="test-secret",
    )
    return env


@needs_redis
def test_a_job_runs_through_redis_in_a_real_worker_process(rq_app, queue_name, db_session):
    from rq import Queue
    from rq.job import Job

    now = datetime.now(UTC)
    job_id = f"purge-{queue_name}"
    with rq_app.app_context():
        _idempotency_record("expired", now - timedelta(days=2))
        _idempotency_record("fresh", now - timedelta(minutes=5))
        background.enqueue(
            "marketplace.tasks.purge_expired_idempotency_records", job_id=job_id, queue=queue_name
        )
        queue = Queue(queue_name, connection=background.redis_connection())
        assert queue.count == 0  # nothing is sent before the commit
        db.session.commit()
        assert queue.job_ids == [job_id]

    keys = sorted(db_session.scalars(select(IdempotencyRecord.key)))
    assert keys == ["expired", "fresh"]  # queued, not run inline
    db_session.commit()  # end the read transaction before another process writes

    worker = subprocess.run(
        [sys.executable, "-m", "flask", "rq", "worker", "--burst", queue_name],
        cwd=ROOT,
        env=_worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr

    db_session.expire_all()
    assert list(db_session.scalars(select(IdempotencyRecord.key))) == ["fresh"]
    with rq_app.app_context():
        job = Job.fetch(job_id, connection=background.redis_connection())
        assert job.get_status() == "finished", worker.stdout + worker.stderr
        assert job.return_value() == 1


@needs_redis
def test_a_deterministic_job_id_is_queued_once_while_it_waits(rq_app, queue_name):
    from rq import Queue

    with rq_app.app_context():
        for _ in range(3):
            background.enqueue_now(record_call, "dedup", job_id=f"once-{queue_name}")
        queue = Queue(queue_name, connection=background.redis_connection())
        assert queue.job_ids == [f"once-{queue_name}"]
    assert CALLS == []  # queued in Redis, not run here


@needs_redis
def test_the_scheduler_enqueues_each_periodic_job_once_per_period(rq_app, queue_name):
    from rq import Queue

    fake = clock.ManualClock(datetime(2026, 3, 2, 10, 15, tzinfo=UTC))
    clock.install(rq_app, fake)
    runner = rq_app.test_cli_runner()

    def ids_for(instant: datetime) -> list[str]:
        return [
            background.periodic_job_id(
                queue_name, job.path, int(instant.timestamp() // job.every_seconds)
            )
            for job in background.PERIODIC_JOBS
        ]

    first = runner.invoke(args=["rq", "scheduler", "--once"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(args=["rq", "scheduler", "--once"])  # same period: nothing new
    assert again.exit_code == 0, again.output
    assert "enqueued 0 of" in again.output

    with rq_app.app_context():
        queue = Queue(queue_name, connection=background.redis_connection())
        assert queue.job_ids == ids_for(fake.now()), (first.output, again.output)

        fake.advance(max(job.every_seconds for job in background.PERIODIC_JOBS))
        later = runner.invoke(args=["rq", "scheduler", "--once"])
        assert later.exit_code == 0, later.output
        assert queue.count == 2 * len(background.PERIODIC_JOBS)
        assert set(ids_for(fake.now())) <= set(queue.job_ids)
