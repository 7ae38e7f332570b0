"""A bare Flask + Flask-SQLAlchemy task server: the baseline the jobs issue measures leasing
against (bench/bench_leasing.py serves it with gunicorn next to Crowdline).

Its whole schema is two tables. A lease is one UPDATE … WHERE id = (SELECT … ORDER BY id
LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING plus one INSERT; a submit is one UPDATE. There are
no accounts, eligibility, money, answer checks or schemas: what remains is the cost of Flask,
SQLAlchemy, psycopg and PostgreSQL for the same round trip. The worker is whoever the bearer
token says (`Authorization: Bearer <worker id>`). The task's payload is returned, as a
labeling tool needs it.

    DATABASE_URL=postgresql://postgres@127.0.0.1/bare \\
        gunicorn -w 4 -k gthread --threads 8 --chdir bench 'bare_app:create_app()'
"""

from __future__ import annotations

import json
import os

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, text

db = SQLAlchemy()

SCHEMA = """
DROP TABLE IF EXISTS assignments;
DROP TABLE IF EXISTS tasks;
CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    status VARCHAR(12) NOT NULL DEFAULT 'open',
    live_count INTEGER NOT NULL DEFAULT 0,
    redundancy_target INTEGER NOT NULL,
    payload JSONB NOT NULL
);
-- Only tasks with a free slot are in the index, so a lease never walks past taken ones.
CREATE INDEX ix_tasks_free ON tasks (job_id, id) WHERE live_count < redundancy_target;
CREATE TABLE assignments (
    id BIGSERIAL PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasks (id),
    worker_id BIGINT NOT NULL,
    status VARCHAR(12) NOT NULL DEFAULT 'leased',
    answer JSONB,
    leased_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    submitted_at TIMESTAMPTZ,
    UNIQUE (task_id, worker_id)
);
"""

LEASE = text(
    """
    UPDATE tasks SET live_count = live_count + 1
    WHERE id = (
        SELECT id FROM tasks
        WHERE job_id = :job_id AND live_count < redundancy_target
        ORDER BY id LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, payload
    """
)
INSERT_ASSIGNMENT = text(
    "INSERT INTO assignments (task_id, worker_id) VALUES (:task_id, :worker_id) RETURNING id"
)
SUBMIT = text(
    """
    UPDATE assignments SET status = 'submitted', answer = CAST(:answer AS JSONB),
           submitted_at = now()
    WHERE id = :id AND worker_id = :worker_id AND status = 'leased'
    RETURNING id
    """
)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_schema(url: str) -> None:
    """(Re)create the two tables, empty."""
    engine = create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    engine.dispose()


def _worker_id() -> int | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return int(value) if scheme == "Bearer" and value.isdigit() else None


def create_app(url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(url or os.environ["DATABASE_URL"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}  # as Crowdline's
    db.init_app(app)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/assignments")
    def lease():
        worker_id = _worker_id()
        if worker_id is None:
            return {"detail": "unauthorized"}, 401
        job_id = int(request.get_json()["job_id"])
        task = db.session.execute(LEASE, {"job_id": job_id}).first()
        if task is None:
            db.session.commit()
            return "", 204
        assignment_id = db.session.execute(
            INSERT_ASSIGNMENT, {"task_id": task.id, "worker_id": worker_id}
        ).scalar_one()
        db.session.commit()
        return {
            "id": assignment_id,
            "status": "leased",
            "task": {"id": task.id, "job_id": job_id, "payload": task.payload},
        }, 201

    @app.post("/assignments/<int:assignment_id>/submit")
    def submit(assignment_id: int):
        worker_id = _worker_id()
        if worker_id is None:
            return {"detail": "unauthorized"}, 401
        answer = request.get_json()["answer"]
        done = db.session.execute(
            SUBMIT, {"id": assignment_id, "worker_id": worker_id, "answer": json.dumps(answer)}
        ).scalar()
        db.session.commit()
        if done is None:
            return {"detail": "not a live lease of yours"}, 409
        return {"id": assignment_id, "status": "submitted", "answer": answer}, 200

    return app
