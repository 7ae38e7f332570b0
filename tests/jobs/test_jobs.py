from __future__ import annotations

from sqlalchemy import func, select

from jobs.models import Job
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, add_tasks, create_job, fund, job_body


def test_client_posts_a_draft_job(api):
    client = api.signup("client")
    job = create_job(api, client)
    assert job["status"] == "draft"
    assert job["price_per_judgment"] == {"amount": 5, "currency": "USD"}
    assert job["redundancy"] == {
        "min": 3,
        "max": 5,
        "target_confidence": 0.9,
        "escalation": None,
        "agreement_threshold": None,
    }
    assert job["organization_id"] == client.organization["id"]
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json() == job


def test_bad_job_input_names_the_field_and_writes_nothing(api, db_session):
    client = api.signup("client")
    cases = [
        ({"answer_spec": {"type": "single_choice"}}, "answer_spec"),
        ({"answer_spec": {"type": "telepathy"}}, "answer_spec"),
        ({"price_per_judgment": {"amount": 1.5}}, "price_per_judgment"),
        ({"price_per_judgment": {"amount": -1}}, "price_per_judgment"),
        ({"redundancy": {"min": 4, "max": 2, "target_confidence": 0.9}}, "redundancy"),
        ({"gold_rate": 2}, "gold_rate"),
        ({"requirements": {"crowds": ["nobody"]}}, "requirements"),
        ({"lease_seconds": 1}, "lease_seconds"),
        ({"deadline": "2020-01-01T00:00:00Z"}, "deadline"),
    ]
    for overrides, field in cases:
        response = api.post("/api/v1/jobs", client.token, json=job_body(**overrides))
        assert_problem(response, 422, field=field)
    assert db_session.scalar(select(func.count()).select_from(Job)) == 0


def test_workers_and_vendors_cannot_post_jobs(api):
    worker = api.signup("worker")
    vendor = api.signup("vendor")
    assert_problem(api.post("/api/v1/jobs", worker.token, json=job_body()), 403)
    assert_problem(api.post("/api/v1/jobs", vendor.token, json=job_body()), 403)


def test_other_clients_jobs_are_invisible(api):
    mine = api.signup("client")
    theirs = api.signup("client")
    job = create_job(api, mine)
    for call in (
        lambda: api.get(f"/api/v1/jobs/{job['id']}", theirs.token),
        lambda: api.patch(f"/api/v1/jobs/{job['id']}", theirs.token, json={"title": "x"}),
        lambda: api.post(f"/api/v1/jobs/{job['id']}/activate", theirs.token),
        lambda: api.post(f"/api/v1/jobs/{job['id']}/cancel", theirs.token),
        lambda: api.get(f"/api/v1/jobs/{job['id']}/tasks", theirs.token),
    ):
        assert_problem(call(), 404)
    assert api.get("/api/v1/jobs", theirs.token).get_json()["items"] == []
    assert api.get(f"/api/v1/jobs/{job['id']}", mine.token).get_json()["title"] == "Cats and dogs"


def test_lifecycle(api, app):
    client = api.signup("client")
    job = create_job(api, client)
    # nothing to do without tasks
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/activate", client.token), 409)
    add_tasks(app, job["id"], 2)
    # nor without budget
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/activate", client.token), 409)
    fund(api, client, job["id"], 1000)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).get_json()["status"] == (
        "active"
    )
    assert api.post(f"/api/v1/jobs/{job['id']}/pause", client.token).get_json()["status"] == (
        "paused"
    )
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/pause", client.token), 409)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).get_json()["status"] == (
        "active"
    )
    cancelled = api.post(f"/api/v1/jobs/{job['id']}/cancel", client.token).get_json()
    assert cancelled["status"] == "cancelled"
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/activate", client.token), 409)
    tasks = api.get(f"/api/v1/jobs/{job['id']}/tasks", client.token).get_json()["items"]
    assert {t["status"] for t in tasks} == {"cancelled"}


def test_gold_rate_needs_gold_tasks(api, app):
    client = api.signup("client")
    job = create_job(api, client, gold_rate=0.2)
    add_tasks(app, job["id"], 2)
    fund(api, client, job["id"], 1000)
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/activate", client.token), 409)
    add_tasks(app, job["id"], 0, gold=1)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).status_code == 200


def test_editing_rules_once_active(api, app):
    client = api.signup("client")
    job = active_job(api, app, client)
    changed = api.patch(
        f"/api/v1/jobs/{job['id']}",
        client.token,
        json={
            "title": "Cats, dogs",
            "priority": 5,
            "redundancy": {"min": 3, "max": 7, "target_confidence": 0.95},
        },
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["redundancy"]["max"] == 7
    for body in (
        {"answer_spec": {"type": "single_choice", "labels": ["a", "b"]}},
        {"price_per_judgment": {"amount": 1}},
        {"requirements": {"countries": ["US"]}},
        {"redundancy": {"min": 1, "max": 7, "target_confidence": 0.95}},
    ):
        field = next(iter(body))
        assert_problem(
            api.patch(f"/api/v1/jobs/{job['id']}", client.token, json=body), 409, field=field
        )
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["price_per_judgment"] == {
        "amount": 5,
        "currency": "USD",
    }


def test_drafts_change_freely(api):
    client = api.signup("client")
    job = create_job(api, client)
    response = api.patch(
        f"/api/v1/jobs/{job['id']}",
        client.token,
        json={"price_per_judgment": {"amount": 9}, "answer_spec": {"type": "text"}},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["answer_spec"] == {"type": "text"}


def test_idempotent_job_creation(api, db_session):
    client = api.signup("client")
    headers = {"Idempotency-Key": "job-1"}
    first = api.post("/api/v1/jobs", client.token, json=job_body(), headers=headers)
    second = api.post("/api/v1/jobs", client.token, json=job_body(), headers=headers)
    assert first.get_json() == second.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert db_session.scalar(select(func.count()).select_from(Job)) == 1
