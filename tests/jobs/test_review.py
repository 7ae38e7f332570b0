"""The review queue: what goes in, who may decide, and accept / correct / send back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from jobs.models import ReviewItem, Task
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, lease

THREE = {"min": 3, "max": 3, "target_confidence": 0.9}


def _get(session, model, key):
    return session.get(model, key, populate_existing=True)


def _judge(api, worker, job_id, answer):
    leased = lease(api, worker, job_id)
    assert leased.status_code == 201, leased.get_json()
    body = leased.get_json()
    submitted = api.post(
        f"/api/v1/assignments/{body['id']}/submit", worker.token, json={"answer": answer}
    )
    assert submitted.status_code == 200, submitted.get_json()
    return body


def _reviews(api, account, job_id, status="pending"):
    response = api.get(f"/api/v1/jobs/{job_id}/reviews?status={status}", account.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def _decide(api, account, review_id, **body):
    return api.post(f"/api/v1/reviews/{review_id}/decision", account.token, json=body)


def _quality(api, client, job_id):
    items = api.get(f"/api/v1/jobs/{job_id}/workers/quality", client.token).get_json()["items"]
    return [(i["agreed"], i["disagreed"]) for i in items]


@pytest.fixture
def split(api, app):
    """A task closed 2–1 at the maximum: low confidence, so it is in the review queue."""
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=1, redundancy=THREE)
    workers = [active_worker(api, admin) for _ in range(4)]
    for worker, answer in zip(workers, ["cat", "cat", "dog"], strict=False):
        assignment = _judge(api, worker, job["id"], answer)
    return {
        "admin": admin,
        "client": client,
        "job": job,
        "workers": workers,
        "task_id": assignment["task"]["id"],
    }


def test_low_confidence_closes_are_queued_with_what_a_reviewer_needs(api, split):
    (item,) = _reviews(api, split["client"], split["job"]["id"])
    assert item["reason"] == "low_confidence" and item["status"] == "pending"
    assert item["task"]["final_answer"] == "cat" and item["task"]["confidence"] == 0.7
    assert item["task"]["judgments"] == ["cat", "cat", "dog"]
    assert _reviews(api, split["client"], split["job"]["id"], "accepted") == []


def test_accept_is_idempotent_and_a_conflicting_decision_is_409(api, split, db_session):
    client = split["client"]
    (item,) = _reviews(api, client, split["job"]["id"])
    first = _decide(api, client, item["id"], action="accept")
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["status"] == "accepted"
    again = _decide(api, client, item["id"], action="accept")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert_problem(_decide(api, client, item["id"], action="correct", answer="dog"), 409)
    task = _get(db_session, Task, split["task_id"])
    assert (task.final_answer, task.method) == ("cat", "posterior")


def test_correct_sets_the_answer_and_counts_against_the_wrong_workers(api, split, db_session):
    client, job_id = split["client"], split["job"]["id"]
    assert _quality(api, client, job_id) == [(1, 0), (1, 0), (0, 1)]
    (item,) = _reviews(api, client, job_id)
    assert_problem(
        _decide(api, client, item["id"], action="correct", answer="cow"), 422, field="answer"
    )
    assert_problem(_decide(api, client, item["id"], action="correct"), 422, field="answer")
    assert _get(db_session, ReviewItem, item["id"]).status.value == "pending"  # nothing written
    done = _decide(api, client, item["id"], action="correct", answer="dog")
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["answer"] == "dog" and done.get_json()["status"] == "corrected"
    task = _get(db_session, Task, split["task_id"])
    assert (task.final_answer, task.method, task.confidence) == ("dog", "review", 1.0)
    assert _quality(api, client, job_id) == [(0, 1), (0, 1), (1, 0)]
    assert _decide(api, client, item["id"], action="correct", answer="dog").status_code == 200
    assert_problem(_decide(api, client, item["id"], action="correct", answer="cat"), 409)
    assert _quality(api, client, job_id) == [(0, 1), (0, 1), (1, 0)]  # counted once
    results = api.get(f"/api/v1/jobs/{job_id}/results", client.token).get_data(as_text=True)
    assert '"method": "review"' in results or '"method":"review"' in results


def test_send_back_reopens_the_task_beyond_the_maximum(api, split, db_session):
    client, job_id, workers = split["client"], split["job"]["id"], split["workers"]
    assert api.get(f"/api/v1/jobs/{job_id}", client.token).get_json()["status"] == "completed"
    (item,) = _reviews(api, client, job_id)
    sent = _decide(api, client, item["id"], action="send_back", extra=1)
    assert sent.status_code == 200, sent.get_json()
    task = _get(db_session, Task, split["task_id"])
    assert (task.status.value, task.redundancy_target, task.final_answer) == ("open", 4, None)
    assert api.get(f"/api/v1/jobs/{job_id}", client.token).get_json()["status"] == "active"
    _judge(api, workers[3], job_id, "cat")  # a fourth judgment, above the maximum of three
    task = _get(db_session, Task, split["task_id"])
    # The first close taught agreement: the cat workers weigh 4.5/6, the dog worker 3.5/6,
    # the newcomer 0.7 — 3–1 now reaches the target.
    cat = 0.75 * 0.75 * 0.7 * (1 - 3.5 / 6)
    dog = 0.25 * 0.25 * 0.3 * (3.5 / 6)
    assert (task.status.value, task.final_answer, task.confidence) == (
        "completed",
        "cat",
        round(cat / (cat + dog), 4),
    )
    assert _reviews(api, client, job_id) == []
    assert [i["status"] for i in _reviews(api, client, job_id, "sent_back")] == ["sent_back"]
    assert api.get(f"/api/v1/jobs/{job_id}", client.token).get_json()["status"] == "completed"


def test_only_the_jobs_admins_review(api, app, split):
    client, job_id = split["client"], split["job"]["id"]
    (item,) = _reviews(api, client, job_id)
    stranger = api.signup("client")
    worker = split["workers"][0]
    assert_problem(api.get(f"/api/v1/jobs/{job_id}/reviews", stranger.token), 404)
    assert_problem(_decide(api, stranger, item["id"], action="accept"), 404)
    assert_problem(_decide(api, worker, item["id"], action="accept"), 403)
    assert_problem(_decide(api, client, 10**9, action="accept"), 404)
    admin = split["admin"]
    assert _decide(api, admin, item["id"], action="accept").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "maybe"}, "action"),
        ({}, "action"),
        ({"action": "accept", "answer": "cat"}, "answer"),
        ({"action": "send_back", "extra": 3}, "extra"),
        ({"action": "accept", "extra": 1}, "extra"),
    ],
)
def test_bad_decisions_are_422_naming_the_field(api, split, db_session, body, field):
    (item,) = _reviews(api, split["client"], split["job"]["id"])
    assert_problem(_decide(api, split["client"], item["id"], **body), 422, field=field)
    assert _get(db_session, ReviewItem, item["id"]).status.value == "pending"


def test_review_rate_samples_confident_closes(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=2, redundancy=THREE, review_rate=1.0)
    other = active_job(api, app, client, tasks=1, redundancy=THREE)
    for _ in range(3):
        worker = active_worker(api, admin)
        _judge(api, worker, job["id"], "cat")
        _judge(api, worker, other["id"], "cat")
    assert [i["reason"] for i in _reviews(api, client, job["id"])] == ["sampled"]
    assert _reviews(api, client, other["id"]) == []  # unanimous and not sampled
    reasons = db_session.scalars(select(Task.review_reason).where(Task.job_id == job["id"]))
    assert sorted(r or "" for r in reasons) == ["", "sampled"]
