from __future__ import annotations

import json

from sqlalchemy import func, select

from jobs.models import Assignment, Task
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, add_tasks, create_job, fund, lease
from tests.workforce import invite_and_join, make_clearance, make_crowd, make_skill, worker_id


def _setup(api, app, **job):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, **job)
    return admin, client, job


def test_lease_submit_complete(api, app, db_session):
    # At most three judgments: a 2-1 split closes at the maximum with posterior 0.7.
    admin, client, job = _setup(
        api, app, tasks=1, redundancy={"min": 3, "max": 3, "target_confidence": 0.9}
    )
    workers = [active_worker(api, admin) for _ in range(4)]
    answers = ["cat", "cat", "dog"]
    for worker, answer in zip(workers, answers, strict=False):
        leased = lease(api, worker, job["id"])
        assert leased.status_code == 201, leased.get_json()
        body = leased.get_json()
        assert body["status"] == "leased"
        assert set(body["task"]) == {"id", "job_id", "payload", "prelabel"}
        assert body["job"]["answer_spec"] == {"type": "single_choice", "labels": ["cat", "dog"]}
        submitted = api.post(
            f"/api/v1/assignments/{body['id']}/submit",
            worker.token,
            json={"answer": answer, "active_seconds": 4.5},
        )
        assert submitted.status_code == 200, submitted.get_json()
    # the task has its three judgments; the fourth worker gets nothing
    assert lease(api, workers[3], job["id"]).status_code == 204
    task = db_session.scalar(select(Task))
    assert (task.status.value, task.final_answer, task.confidence) == ("completed", "cat", 0.7)
    statuses = db_session.scalars(select(Assignment.status)).all()
    assert {s.value for s in statuses} == {"accepted"}
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"


def test_submit_is_idempotent_and_validated(api, app, db_session):
    admin, _, job = _setup(api, app)
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    path = f"/api/v1/assignments/{assignment['id']}/submit"
    bad = api.post(path, worker.token, json={"answer": "horse"})
    assert_problem(bad, 422, field="answer")
    assert (
        api.get(f"/api/v1/assignments/{assignment['id']}", worker.token).get_json()["status"]
        == "leased"
    )
    first = api.post(path, worker.token, json={"answer": "dog"})
    again = api.post(path, worker.token, json={"answer": "dog"})
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert_problem(api.post(path, worker.token, json={"answer": "cat"}), 409)
    task = db_session.get(Task, assignment["task"]["id"])
    assert (task.submitted_count, task.live_count) == (1, 0)


def test_expired_and_released_leases_take_no_answer(api, app, manual_clock, db_session):
    admin, _, job = _setup(api, app, lease_seconds=60)
    worker = active_worker(api, admin)
    first = lease(api, worker, job["id"]).get_json()
    manual_clock.advance(61)
    assert_problem(api.post(f"/api/v1/assignments/{first['id']}/heartbeat", worker.token), 409)
    assert_problem(
        api.post(f"/api/v1/assignments/{first['id']}/submit", worker.token, json={"answer": "cat"}),
        409,
    )
    second = lease(api, worker, job["id"]).get_json()
    assert second["task"]["id"] != first["task"]["id"]
    released = api.post(
        f"/api/v1/assignments/{second['id']}/release", worker.token, json={"reason": "blurry"}
    )
    assert released.get_json()["status"] == "released"
    assert_problem(
        api.post(
            f"/api/v1/assignments/{second['id']}/submit", worker.token, json={"answer": "cat"}
        ),
        409,
    )
    # slots came back: nothing is held, nothing submitted
    assert db_session.scalar(select(func.sum(Task.live_count))) == 0
    assert db_session.scalar(select(func.sum(Task.submitted_count))) == 0


def test_heartbeat_extends_the_lease(api, app, manual_clock):
    admin, _, job = _setup(api, app, lease_seconds=60)
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    manual_clock.advance(50)
    beat = api.post(f"/api/v1/assignments/{assignment['id']}/heartbeat", worker.token)
    assert beat.status_code == 200
    manual_clock.advance(50)
    submitted = api.post(
        f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "cat"}
    )
    assert submitted.status_code == 200, submitted.get_json()
    assert submitted.get_json()["server_seconds"] == 100.0


def test_expired_leases_return_their_slot_lazily(api, app, manual_clock):
    admin, _, job = _setup(
        api,
        app,
        tasks=1,
        lease_seconds=60,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9},
    )
    one = active_worker(api, admin)
    two = active_worker(api, admin)
    assert lease(api, one, job["id"]).status_code == 201
    assert lease(api, two, job["id"]).status_code == 204
    manual_clock.advance(61)
    two_token = api.login(two.email)["access_token"]
    assert api.post("/api/v1/assignments", two_token, json={"job_id": job["id"]}).status_code == 201


def test_other_workers_assignments_are_invisible(api, app):
    admin, _, job = _setup(api, app)
    one = active_worker(api, admin)
    two = active_worker(api, admin)
    assignment = lease(api, one, job["id"]).get_json()
    for path in ("", "/heartbeat", "/release", "/submit"):
        method = api.get if path == "" else api.post
        kwargs = {"json": {"answer": "cat"}} if path == "/submit" else {}
        assert_problem(
            method(f"/api/v1/assignments/{assignment['id']}{path}", two.token, **kwargs), 404
        )
    assert api.get("/api/v1/assignments", two.token).get_json()["items"] == []
    mine = api.get("/api/v1/assignments?status=leased", one.token).get_json()["items"]
    assert [a["id"] for a in mine] == [assignment["id"]]


def test_inactive_workers_are_refused_with_the_reason(api, app):
    admin, _, job = _setup(api, app)
    newcomer = api.signup("worker")
    body = assert_problem(lease(api, newcomer, job["id"]), 403)
    assert body["reason"] == "worker_applied"
    worker = active_worker(api, admin)
    api.post(
        f"/api/v1/workers/{worker_id(api, worker)}/status",
        admin.token,
        json={"to": "suspended", "reason": "quality review"},
    )
    body = assert_problem(lease(api, worker), 403)
    assert body["reason"] == "worker_suspended"
    assert body["status_reason"] == "quality review"


def test_ineligible_workers_never_lease(api, app):
    admin = api.admin(app)
    client = api.signup("client")
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    make_skill(api, admin, "image.bbox")
    make_clearance(api, admin, "hipaa")
    requirements = {
        "skills": [{"skill": "image.bbox", "min_level": 50}],
        "clearances": ["hipaa"],
        "crowds": [crowd["id"]],
    }
    job = active_job(api, app, client, requirements=requirements)
    worker = active_worker(api, admin)
    body = assert_problem(lease(api, worker, job["id"]), 403)
    assert {r["code"] for r in body["reasons"]} == {
        "missing_skill",
        "missing_clearance",
        "not_in_crowd",
    }
    # without a job id, the ineligible job is simply not offered
    assert lease(api, worker).status_code == 204
    invite_and_join(api, vendor, crowd, worker)
    assert lease(api, worker).status_code == 204


def test_revoked_clearance_ends_a_live_lease(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    clearance = make_clearance(api, admin, "hipaa")
    job = active_job(api, app, client, requirements={"clearances": ["hipaa"]})
    worker = active_worker(api, admin)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "training-cert-1"},
    ).get_json()
    api.post(f"/api/v1/attestations/{attestation['id']}/verify", admin.token, json={})
    assignment = lease(api, worker, job["id"]).get_json()
    assert assignment["status"] == "leased"
    api.post(
        f"/api/v1/attestations/{attestation['id']}/revoke",
        admin.token,
        json={"reason": "certificate withdrawn"},
    )
    body = assert_problem(
        api.post(
            f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "cat"}
        ),
        403,
    )
    assert body["reasons"][0]["code"] == "clearance_revoked"
    row = db_session.get(Assignment, assignment["id"])
    assert row.status.value == "released" and row.answer is None
    assert db_session.get(Task, assignment["task"]["id"]).live_count == 0
    assert_problem(lease(api, worker, job["id"]), 403)


def test_gold_is_indistinguishable_and_scored(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, gold_rate=0.5)
    add_tasks(app, job["id"], 0, gold=3, gold_answer="dog")
    add_tasks(app, job["id"], 3)
    fund(api, client, job["id"], 10_000)
    api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)
    worker = active_worker(api, admin)
    seen = []
    while (response := lease(api, worker, job["id"])).status_code == 201:
        body = response.get_json()
        text = json.dumps(body)
        assert "gold" not in text and "is_gold" not in text
        seen.append(body)
        api.post(f"/api/v1/assignments/{body['id']}/submit", worker.token, json={"answer": "dog"})
    assert len(seen) == 6
    # every key a worker sees is the same for gold and real tasks
    assert len({tuple(sorted(s["task"])) for s in seen}) == 1
    gold_rows = db_session.scalars(select(Assignment).where(Assignment.is_gold.is_(True))).all()
    assert len(gold_rows) == 3
    assert all(a.gold_correct and a.status.value == "accepted" for a in gold_rows)
    for path in ("/api/v1/assignments", *(f"/api/v1/assignments/{s['id']}" for s in seen)):
        assert "gold" not in json.dumps(api.get(path, worker.token).get_json())


def test_lease_requires_the_tasks_scope(api, app):
    admin, client, job = _setup(api, app)
    worker = api.signup("worker", scope="account")
    assert_problem(lease(api, worker, job["id"]), 403)
    assert_problem(lease(api, client, job["id"]), 403)


def test_job_id_must_exist_and_be_well_formed(api, app):
    admin, _, _ = _setup(api, app)
    worker = active_worker(api, admin)
    assert_problem(lease(api, worker, 999999), 404)
    response = api.post("/api/v1/assignments", worker.token, json={"job_id": "seven"})
    assert_problem(response, 422, field="job_id")


def test_paused_jobs_hand_out_nothing(api, app):
    admin, client, job = _setup(api, app)
    worker = active_worker(api, admin)
    api.post(f"/api/v1/jobs/{job['id']}/pause", client.token)
    assert lease(api, worker, job["id"]).status_code == 204


def test_clients_see_workers_only_as_pseudonyms_with_job_stats(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, gold_rate=0.5)
    add_tasks(app, job["id"], 2, gold=2, gold_answer="dog")
    fund(api, client, job["id"], 10_000)
    api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)
    worker = active_worker(api, admin)
    while (response := lease(api, worker, job["id"])).status_code == 201:
        api.post(
            f"/api/v1/assignments/{response.get_json()['id']}/submit",
            worker.token,
            json={"answer": "cat"},
        )
    stats = api.get(f"/api/v1/jobs/{job['id']}/workers", client.token).get_json()
    profile = api.get("/api/v1/workers/me", worker.token).get_json()
    assert stats["items"] == [
        {
            "worker": profile["pseudonym"],
            "leases": 4,
            "judgments": 4,
            "accepted": 0,
            "released": 0,
            "gold_judged": 2,
            "gold_accuracy": 0.0,
            "mean_seconds_on_task": 0.0,
        }
    ]
    text = json.dumps(stats)
    assert worker.email not in text and str(profile["id"]) not in text.replace(
        profile["pseudonym"], ""
    )
    other = api.signup("client")
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/workers", other.token), 404)


class _DatabaseSaid(Exception):
    """What psycopg raises when PostgreSQL aborts a transaction (sqlstate only)."""

    def __init__(self, sqlstate: str):
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _aborted(sqlstate: str = "40P01"):
    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE tasks …", {}, _DatabaseSaid(sqlstate))


def test_a_submit_aborted_by_a_deadlock_runs_again_once_whole(api, app, db_session, monkeypatch):
    from jobs import completion

    admin, _, job = _setup(api, app, tasks=1)
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    judge, calls = completion.judge_task, []

    def deadlocked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # after the assignment and task were written and flushed
            raise _aborted()
        return judge(*args, **kwargs)

    monkeypatch.setattr(completion, "judge_task", deadlocked_once)
    path = f"/api/v1/assignments/{assignment['id']}/submit"
    submitted = api.post(path, worker.token, json={"answer": "dog"})
    assert submitted.status_code == 200, submitted.get_json()
    assert len(calls) == 2 and submitted.get_json()["status"] in ("submitted", "accepted")
    task = db_session.get(Task, assignment["task"]["id"])
    assert (task.submitted_count, task.live_count) == (1, 0)  # the first attempt left nothing
    rows = db_session.scalars(select(Assignment).where(Assignment.task_id == task.id)).all()
    assert [(a.id, a.answer) for a in rows] == [(assignment["id"], "dog")]


def test_a_request_aborted_every_time_is_a_503_to_retry(api, app, db_session, monkeypatch):
    from jobs import completion

    admin, _, job = _setup(api, app, tasks=1)
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()

    def always(*args, **kwargs):
        raise _aborted("40001")

    monkeypatch.setattr(completion, "judge_task", always)
    path = f"/api/v1/assignments/{assignment['id']}/submit"
    refused = assert_problem(api.post(path, worker.token, json={"answer": "dog"}), 503)
    assert "send it again" in refused["detail"]
    task = db_session.get(Task, assignment["task"]["id"])
    assert (task.submitted_count, task.live_count) == (0, 1)
    mine = api.get(f"/api/v1/assignments/{assignment['id']}", worker.token).get_json()
    assert mine["status"] == "leased"
    # other database errors are not retried: they stay a 500 for the log
    monkeypatch.setattr(completion, "judge_task", lambda *a, **k: (_ for _ in ()).throw(
        _aborted("23505")))  # fmt: skip
    assert api.post(path, worker.token, json={"answer": "dog"}).status_code == 500
    monkeypatch.undo()
    assert api.post(path, worker.token, json={"answer": "dog"}).status_code == 200
