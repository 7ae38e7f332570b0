"""Batch Dawid–Skene through the HTTP API: a wrong majority recovered with gold, labels written
back (and shown in the export), review labels kept, idempotent requests, bad requests."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from jobs.leasing import GOLD_REDUNDANCY
from jobs.models import Task
from marketplace import clock
from tests.helpers import assert_problem
from tests.jobs.helpers import active_worker, add_tasks, create_job, fund, lease

LABELS = ["cat", "dog"]


def _truth(payload: dict) -> str:
    """Task i shows a cat when i is even (gold items carry their own index range)."""
    index = int(payload["image_url"].rsplit("/", 1)[1].split(".")[0])
    return LABELS[index % 2]


def _add_gold(app, job_id: int, count: int) -> None:
    from marketplace.database import db

    with app.app_context():
        db.session.add_all(
            Task(
                job_id=job_id,
                external_id=f"gold-{i}",
                payload={"image_url": f"https://example.org/{100_000 + i}.jpg"},
                is_gold=True,
                gold_answer=LABELS[i % 2],
                priority=0,
                redundancy_target=GOLD_REDUNDANCY,
                created_at=clock.now(),
            )
            for i in range(count)
        )
        db.session.commit()


def _job(api, app, client, tasks: int, gold: int, **overrides):
    body = {"redundancy": {"min": 3, "max": 3, "target_confidence": 0.9}, "gold_rate": 0.9}
    job = create_job(api, client, **(body | overrides))
    add_tasks(app, job["id"], tasks)
    _add_gold(app, job["id"], gold)
    fund(api, client, job["id"], 100_000)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).status_code == 200
    return job


def _work(api, worker, job_id: int, answer_of) -> int:
    """Lease and submit until there is nothing left; each worker does every task."""
    done = 0
    while (leased := lease(api, worker, job_id)).status_code == 201:
        body = leased.get_json()
        answer = answer_of(body["task"]["payload"])
        submitted = api.post(
            f"/api/v1/assignments/{body['id']}/submit", worker.token, json={"answer": answer}
        )
        assert submitted.status_code == 200, submitted.get_json()
        done += 1
    assert leased.status_code == 204, leased.get_json()
    return done


def _export(api, client, job_id: int) -> dict[str, dict]:
    response = api.get(f"/api/v1/jobs/{job_id}/results", client.token)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    return {line["external_id"]: line for line in lines}


def _inverted(payload):
    return LABELS[1 - LABELS.index(_truth(payload))]


def _run_job_with_a_wrong_majority(api, app, tasks=10, gold=6, relabel=True):
    admin = api.admin(app)
    client = api.signup("client")
    job = _job(api, app, client, tasks, gold)
    good, liar1, liar2 = (active_worker(api, admin) for _ in range(3))
    # the two liars always give the wrong answer: they outvote the good worker everywhere
    assert _work(api, good, job["id"], _truth) == tasks + gold
    assert _work(api, liar1, job["id"], _inverted) == tasks + gold
    assert _work(api, liar2, job["id"], _inverted) == tasks + gold
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    if not relabel:
        return client, job
    # Online, the posterior weighs the liars by their failed gold: every label is right.
    online = _export(api, client, job["id"])
    assert all(line["answer"] == LABELS[int(k.split("-")[1]) % 2] for k, line in online.items())
    assert {line["method"] for line in online.values()} == {"posterior"}
    # Give every task the label a plain majority vote would have (what the liars said), as
    # jobs closed before the quality engine have: the batch pass must recover from it.
    from marketplace.database import db

    with app.app_context():
        for task in db.session.scalars(
            select(Task).where(Task.job_id == job["id"], Task.is_gold.is_(False))
        ):
            task.final_answer = _inverted(task.payload)
            task.method = "majority"
            task.confidence = round(2 / 3, 4)
        db.session.commit()
    return client, job


def test_dawid_skene_with_gold_recovers_a_wrong_majority(api, app, db_session):
    client, job = _run_job_with_a_wrong_majority(api, app)
    before = _export(api, client, job["id"])
    assert len(before) == 10
    # the online (majority) labels are all wrong
    assert all(line["answer"] != LABELS[int(k.split("-")[1]) % 2] for k, line in before.items())
    assert {line["method"] for line in before.values()} == {"majority"}
    # a small job is not aggregated automatically
    runs = api.get(f"/api/v1/jobs/{job['id']}/aggregations", client.token).get_json()
    assert runs["items"] == []

    queued = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert queued.status_code == 202, queued.get_json()
    run_id = queued.get_json()["id"]
    run = api.get(f"/api/v1/jobs/{job['id']}/aggregations/{run_id}", client.token).get_json()
    assert run["status"] == "succeeded", run
    assert (run["tasks"], run["gold_tasks"], run["workers"], run["judgments"]) == (16, 6, 3, 48)
    assert (run["labels"], run["labels_written"], run["labels_changed"]) == (2, 10, 10)
    assert run["iterations"] >= 1 and run["log_likelihood"] < 0
    assert len(run["changes"]) == 10
    change = run["changes"][0]
    assert change["previous_method"] == "majority"
    assert change["previous_answer"] != change["answer"]

    after = _export(api, client, job["id"])
    for external_id, line in after.items():
        assert line["answer"] == LABELS[int(external_id.split("-")[1]) % 2], line
        assert line["method"] == "dawid_skene"
        assert line["confidence"] > 0.9
    # the CSV export carries the same method
    csv_text = api.get(
        f"/api/v1/jobs/{job['id']}/results", client.token, headers={"Accept": "text/csv"}
    ).get_data(as_text=True)
    assert csv_text.count(",dawid_skene,") == 10


def test_review_labels_are_never_overwritten(api, app, db_session):
    client, job = _run_job_with_a_wrong_majority(api, app)
    reviewed = db_session.scalar(
        select(Task.id).where(Task.job_id == job["id"], Task.external_id == "item-0")
    )
    db_session.execute(
        update(Task)
        .where(Task.id == reviewed)
        .values(final_answer="dog", confidence=1.0, method="review")
    )
    db_session.commit()
    response = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    run = response.get_json()
    run = api.get(f"/api/v1/jobs/{job['id']}/aggregations/{run['id']}", client.token).get_json()
    assert (run["status"], run["labels_written"], run["labels_changed"]) == ("succeeded", 9, 9)
    after = _export(api, client, job["id"])
    assert (after["item-0"]["answer"], after["item-0"]["method"]) == ("dog", "review")
    assert after["item-0"]["confidence"] == 1.0
    assert after["item-1"]["method"] == "dawid_skene"


def test_a_second_request_while_queued_returns_the_same_run(api, app, db_session):
    from jobs.batch_models import AggregationRun, AggregationStatus

    client, job = _run_job_with_a_wrong_majority(api, app)
    # a run waiting in the queue (as with Redis before a worker picks it up)
    from marketplace.database import db

    with app.app_context():
        db.session.add(
            AggregationRun(
                job_id=job["id"],
                status=AggregationStatus.QUEUED,
                method="dawid_skene",
                trigger="request",
                created_at=clock.now(),
            )
        )
        db.session.commit()
    first = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    second = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"]
    assert first.get_json()["status"] == "queued"
    listed = api.get(f"/api/v1/jobs/{job['id']}/aggregations", client.token).get_json()
    assert len(listed["items"]) == 1
    # once it has finished, a new request queues (and here runs) a new pass
    from jobs.batch import perform_run

    with app.app_context():
        assert perform_run(first.get_json()["id"]) == "succeeded"
    third = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert third.get_json()["id"] != first.get_json()["id"]
    listed = api.get(f"/api/v1/jobs/{job['id']}/aggregations", client.token).get_json()
    assert [r["status"] for r in listed["items"]] == ["succeeded", "succeeded"]


def test_completion_queues_a_pass_automatically(api, app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "BATCH_AUTO_MIN_TASKS", 5)
    client, job = _run_job_with_a_wrong_majority(api, app, tasks=6, gold=6, relabel=False)
    runs = api.get(f"/api/v1/jobs/{job['id']}/aggregations", client.token).get_json()["items"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("job_completed", "succeeded")]
    after = _export(api, client, job["id"])
    assert {line["method"] for line in after.values()} == {"dawid_skene"}
    assert all(line["answer"] == LABELS[int(k.split("-")[1]) % 2] for k, line in after.items())


def test_bad_requests_get_problems(api, app, db_session):
    client = api.signup("client")
    text_job = create_job(api, client, answer_spec={"type": "text", "max_length": 50})
    body = assert_problem(
        api.post(f"/api/v1/jobs/{text_job['id']}/aggregations", client.token), 422
    )
    assert "answer_spec" in body["errors"]
    # other tenants' jobs and runs do not exist
    other = api.signup("client")
    job = create_job(api, client)
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/aggregations", other.token), 404)
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/aggregations", other.token), 404)
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/aggregations/999", client.token), 404)
    assert_problem(api.post("/api/v1/jobs/999999/aggregations", client.token), 404)
    assert_problem(api.post(f"/api/v1/jobs/{job['id']}/aggregations"), 401)


def test_multi_choice_answers_are_classes_by_set(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    spec = {"type": "multi_choice", "labels": ["red", "green", "blue"]}
    job = _job(api, app, client, 4, 0, answer_spec=spec, gold_rate=0.0)
    workers = [active_worker(api, admin) for _ in range(3)]
    # two workers agree on {red, green} (in either order); the third says {blue}
    answers = [["red", "green"], ["green", "red"], ["blue"]]
    for worker, answer in zip(workers, answers, strict=True):
        assert _work(api, worker, job["id"], lambda payload, a=answer: a) == 4
    run = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token).get_json()
    run = api.get(f"/api/v1/jobs/{job['id']}/aggregations/{run['id']}", client.token).get_json()
    assert (run["status"], run["labels"], run["labels_written"]) == ("succeeded", 2, 4)
    for line in _export(api, client, job["id"]).values():
        assert sorted(line["answer"]) == ["green", "red"]
        assert line["method"] == "dawid_skene"


def test_a_failing_pass_is_recorded_not_raised(api, app, db_session, monkeypatch):
    client, job = _run_job_with_a_wrong_majority(api, app)
    before = _export(api, client, job["id"])

    def broken(*args, **kwargs):
        raise FloatingPointError("EM diverged")

    monkeypatch.setattr("jobs.batch.dawid_skene", broken)
    response = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert response.status_code == 202
    run = api.get(
        f"/api/v1/jobs/{job['id']}/aggregations/{response.get_json()['id']}", client.token
    ).get_json()
    assert run["status"] == "failed"
    assert run["error"] == "FloatingPointError: EM diverged"
    assert run["finished_at"] is not None
    assert _export(api, client, job["id"]) == before  # nothing half-written
