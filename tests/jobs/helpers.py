"""Helpers for job tests: a funded-ready client job with tasks, and active eligible workers."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from jobs.leasing import GOLD_REDUNDANCY
from jobs.models import Job, Task
from marketplace import clock
from tests.helpers import Account, Api
from tests.workforce import activate

SPEC = {"type": "single_choice", "labels": ["cat", "dog"]}


def job_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "title": "Cats and dogs",
        "instructions": "Pick the animal in the picture.",
        "answer_spec": SPEC,
        "price_per_judgment": {"amount": 5, "currency": "USD"},
        "redundancy": {"min": 3, "max": 5, "target_confidence": 0.9},
        "gold_rate": 0.0,
        "requirements": {},
        "lease_seconds": 300,
    }
    body.update(overrides)
    return body


def create_job(api: Api, client: Account, **overrides: Any) -> dict[str, Any]:
    response = api.post("/api/v1/jobs", client.token, json=job_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def add_tasks(
    app,
    job_id: int,
    count: int,
    *,
    gold: int = 0,
    gold_answer: Any = "cat",
) -> list[int]:
    """Insert tasks straight into the database (the import route has its own tests)."""
    from marketplace.database import db

    with app.app_context():
        job = db.session.get(Job, job_id)
        now = clock.now()
        rows = [
            Task(
                job_id=job_id,
                external_id=f"item-{i}",
                payload={"image_url": f"https://example.org/{i}.jpg"},
                is_gold=False,
                priority=0,
                redundancy_target=job.redundancy_min,
                created_at=now,
            )
            for i in range(count)
        ] + [
            Task(
                job_id=job_id,
                external_id=f"gold-{i}",
                payload={"image_url": f"https://example.org/{100_000 + i}.jpg"},
                is_gold=True,
                gold_answer=gold_answer,
                priority=0,
                redundancy_target=GOLD_REDUNDANCY,
                created_at=now,
            )
            for i in range(gold)
        ]
        db.session.add_all(rows)
        db.session.commit()
        return list(db.session.scalars(select(Task.id).where(Task.job_id == job_id)))


def fund(api: Api, client: Account, job_id: int, amount: int) -> dict[str, Any]:
    """Fund a job through the API (the offline gateway confirms at once)."""
    response = api.post(
        f"/api/v1/jobs/{job_id}/fund",
        client.token,
        json={"amount": {"amount": amount, "currency": "USD"}},
        headers={"Idempotency-Key": f"fund-{job_id}-{amount}-{uuid.uuid4().hex}"},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def active_job(
    api: Api,
    app,
    client: Account,
    tasks: int = 3,
    gold: int = 0,
    budget: int = 100_000,
    **overrides,
):
    job = create_job(api, client, **overrides)
    add_tasks(app, job["id"], tasks, gold=gold)
    if budget:
        fund(api, client, job["id"], budget)
    response = api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def active_worker(api: Api, admin: Account) -> Account:
    worker = api.signup("worker")
    activate(api, admin, worker)
    return worker


def lease(api: Api, worker: Account, job_id: int | None = None):
    body = {"job_id": job_id} if job_id else {}
    return api.post("/api/v1/assignments", worker.token, json=body)
