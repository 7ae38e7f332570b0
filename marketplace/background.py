"""Background jobs: enqueued through one helper, dispatched only after the transaction commits.

With REDIS_URL set, jobs go to RQ queues and run in `flask rq worker` processes. Without it
they run inline right after the commit, in a fresh application context (and so a fresh
database session), which is what the embedded default and the SQLite test run use.
Job functions are plain functions that take ids; they are named by import path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session
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


@dataclass
class PeriodicJob:
    path: str
    every_seconds: int


# Jobs the scheduler enqueues on a fixed period (deterministic ids keep them single).
PERIODIC_JOBS: list[PeriodicJob] = [
    PeriodicJob("marketplace.tasks.purge_expired_idempotency_records", 3600),
]


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
    jobs = session.info.pop(_PENDING, None)
    for job in jobs or ():
        _dispatch(job)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)


def redis_connection(app: Flask | None = None):
    from redis import Redis

    app = app or current_app
    url = app.config["CROWDLINE"].redis_url
    return Redis.from_url(url) if url else None


def _dispatch(job: PendingJob) -> None:
    app = job.app
    settings = app.config["CROWDLINE"]
    if settings.redis_url and not settings.jobs_inline:
        from rq import Queue

        queue = Queue(job.queue or settings.rq_queue, connection=redis_connection(app))
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
