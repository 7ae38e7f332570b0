"""Background jobs: enqueued through one helper, dispatched only after the transaction commits.

With REDIS_URL set, jobs go to RQ queues and run in `flask rq worker` processes. Without it
they run inline right after the commit, in a fresh application context (and so a fresh
database session), which is what the embedded default and the SQLite test run use.
Job functions are plain functions that take ids; they are named by import path.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction
from werkzeug.utils import import_string

log = logging.getLogger(__name__)

_PENDING = "crowdline.pending_jobs"


@dataclass
class PendingJob:
    path: str
    args: tuple
    kwargs: dict
    job_id: str | None = None
    queue: str | None = None
    app: Flask | None = field(default=None, repr=False)
    # The innermost savepoint open at enqueue time: rolling it (or an outer one) back drops
    # the job, while the enclosing transaction's other jobs survive.
    savepoint: SessionTransaction | None = field(default=None, repr=False)


@dataclass
class PeriodicJob:
    path: str
    every_seconds: int


# Jobs the scheduler enqueues on a fixed period (deterministic ids keep them single).
PERIODIC_JOBS: list[PeriodicJob] = [
    PeriodicJob("marketplace.tasks.purge_expired_idempotency_records", 3600),
]


def periodic_job_id(queue: str, path: str, slot: int) -> str:
    """The RQ job id of one period of a periodic job on a queue.

    RQ ids are global to a Redis database and allow only [A-Za-z0-9_-]; the queue name keeps
    deployments (or test runs) that share one Redis under different queues apart.
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"periodic-{queue}-{path}-{slot}")


def register_periodic(path: str, every_seconds: int) -> None:
    if all(job.path != path for job in PERIODIC_JOBS):
        PERIODIC_JOBS.append(PeriodicJob(path, every_seconds))


def _path_of(func: Callable | str) -> str:
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def enqueue(
    func: Callable | str,
    *args: Any,
    job_id: str | None = None,
    queue: str | None = None,
    **kwargs: Any,
) -> None:
    """Run `func(*args, **kwargs)` in the background once the current transaction commits."""
    from marketplace.database import db

    session = db.session()
    session.info.setdefault(_PENDING, []).append(
        PendingJob(
            _path_of(func),
            args,
            kwargs,
            job_id=job_id,
            queue=queue,
            app=current_app._get_current_object(),
            savepoint=session.get_nested_transaction(),
        )
    )


def enqueue_now(
    func: Callable | str, *args: Any, job_id: str | None = None, queue: str | None = None, **kw: Any
) -> None:
    """Dispatch immediately, outside any transaction (CLI commands and schedulers)."""
    _dispatch(
        PendingJob(_path_of(func), args, kw, job_id, queue, current_app._get_current_object())
    )


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # releasing a savepoint also fires after_commit; wait for the real commit
    jobs = session.info.pop(_PENDING, None)
    for job in jobs or ():
        _dispatch(job)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if not previous_transaction.nested:
        session.info.pop(_PENDING, None)
        return
    # A savepoint rolled back: drop only the jobs enqueued inside it.
    jobs = session.info.get(_PENDING)
    if jobs:
        jobs[:] = [j for j in jobs if not _within(j.savepoint, previous_transaction)]


def _within(savepoint: SessionTransaction | None, rolled_back: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is rolled_back:
            return True
        savepoint = savepoint.parent
    return False


def redis_connection(app: Flask | None = None):
    """The app's Redis client (one connection pool per app), or None without REDIS_URL."""
    from redis import Redis

    app = app or current_app
    url = app.config["CROWDLINE"].redis_url
    if not url:
        return None
    cached = app.extensions.get("crowdline.redis")
    if cached is None or cached[0] != url:
        # A short connect timeout keeps /readyz and requests from hanging on a dead Redis.
        client = Redis.from_url(url, socket_connect_timeout=5)
        cached = app.extensions["crowdline.redis"] = (url, client)
    return cached[1]


def _dispatch(job: PendingJob) -> None:
    app = job.app
    settings = app.config["CROWDLINE"]
    if settings.redis_url and not settings.jobs_inline:
        from rq import Queue

        connection = redis_connection(app)
        if job.job_id and _still_pending(job.job_id, connection):
            return  # the same deterministic id is already waiting or running
        queue = Queue(job.queue or settings.rq_queue, connection=connection)
        queue.enqueue(
            "marketplace.background.perform",
            job.path,
            list(job.args),
            job.kwargs,
            job_id=job.job_id,
        )
        return
    # Inline: a new app context gets its own session, separate from the one committing.
    with app.app_context():
        try:
            perform(job.path, list(job.args), job.kwargs)
        except Exception:
            log.exception("inline background job %s failed", job.path)
            if app.config.get("JOBS_RAISE_INLINE"):
                raise


def _still_pending(job_id: str, connection) -> bool:
    # RQ itself pushes a second copy when an id is enqueued twice.
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    try:
        status = Job.fetch(job_id, connection=connection).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in (
        JobStatus.QUEUED,
        JobStatus.STARTED,
        JobStatus.DEFERRED,
        JobStatus.SCHEDULED,
    )


_worker_app: Flask | None = None
_pool_pid: int | None = None


def set_worker_app(app: Flask) -> None:
    """Record the app a worker process built once, for every job it performs."""
    global _worker_app, _pool_pid
    _worker_app = app
    _pool_pid = os.getpid()


def perform(path: str, args: list, kwargs: dict) -> Any:
    """Entry point of every background job, inline or in an RQ worker."""
    global _worker_app, _pool_pid
    func = import_string(path)
    if has_app_context():
        _reset_pool_after_fork()
        return func(*args, **kwargs)
    if _worker_app is None:
        from marketplace import create_app

        set_worker_app(create_app())
    with _worker_app.app_context():
        _reset_pool_after_fork()
        return func(*args, **kwargs)


def _reset_pool_after_fork() -> None:
    # RQ forks a work horse per job; inherited pooled connections must not be shared.
    global _pool_pid
    if _pool_pid is not None and os.getpid() != _pool_pid:
        from marketplace.database import db

        db.engine.dispose(close=False)
        _pool_pid = os.getpid()
