"""Job progress and the streamed results export."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from jobs import results
from jobs.models import Task
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, lease

SINGLE = {"min": 1, "max": 1, "target_confidence": 0.9}


def _setup(api, app, **job):
    admin = api.admin(app)
    client = api.signup("client")
    return admin, client, active_job(api, app, client, **job)


def _judge(api, worker, job_id, answer="cat", active_seconds=None):
    leased = lease(api, worker, job_id)
    assert leased.status_code == 201, leased.get_json()
    assignment = leased.get_json()
    body = {"answer": answer}
    if active_seconds is not None:
        body["active_seconds"] = active_seconds
    submitted = api.post(f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json=body)
    assert submitted.status_code == 200, submitted.get_json()
    return assignment


def _sign_in_again(api, account):
    """Tokens last an hour; tests that move the clock by hours sign in again."""
    account.token = api.login(account.email)["access_token"]


def _progress(api, client, job_id):
    response = api.get(f"/api/v1/jobs/{job_id}/progress", client.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _export(api, client, job_id, query="", accept=None):
    headers = {"Accept": accept} if accept else {}
    response = api.get(f"/api/v1/jobs/{job_id}/results{query}", client.token, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def _lines(response):
    assert response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


# --- progress ----------------------------------------------------------------------------


def test_progress_counts_eta_and_throughput(api, app, manual_clock):
    admin, client, job = _setup(api, app, tasks=4, gold=1)
    workers = [active_worker(api, admin) for _ in range(3)]

    empty = _progress(api, client, job["id"])
    assert empty["tasks"] == {
        "real": {"open": 4, "completed": 0, "cancelled": 0, "total": 4},
        "gold": {"open": 1, "completed": 0, "cancelled": 0, "total": 1},
    }
    assert empty["remaining_judgments"] == 12  # 4 tasks × redundancy 3
    assert empty["eta"] is None  # nobody has judged anything yet
    assert empty["throughput"] == {"last_hour": 0, "last_24h": 0}
    assert empty["spend"] == {"amount": 0, "currency": "USD"}

    # Tasks go out in id order: the first two workers both start on the first task.
    _judge(api, workers[0], job["id"])  # task 1
    manual_clock.advance(60)
    _judge(api, workers[0], job["id"])  # task 2
    _judge(api, workers[1], job["id"])  # task 1
    live = lease(api, workers[2], job["id"]).get_json()  # task 1, still leased
    progress = _progress(api, client, job["id"])
    assert progress["judgments"]["submitted"] == 3
    assert progress["judgments"]["leased"] == 1
    assert progress["live_leases"] == 1
    assert progress["throughput"] == {"last_hour": 3, "last_24h": 3}
    assert progress["remaining_judgments"] == 9
    # 9 judgments at 3 an hour: three hours.
    assert progress["eta"]["seconds"] == 3 * 3600
    assert progress["as_of"] == manual_clock.now().isoformat()

    # The third (agreeing) judgment completes task 1: three accepted judgments at 5 cents each.
    api.post(f"/api/v1/assignments/{live['id']}/submit", workers[2].token, json={"answer": "cat"})
    progress = _progress(api, client, job["id"])
    assert progress["tasks"]["real"] == {"open": 3, "completed": 1, "cancelled": 0, "total": 4}
    assert progress["judgments"]["accepted"] == 3
    assert progress["judgments"]["submitted"] == 1
    assert progress["live_leases"] == 0
    assert progress["spend"] == {"amount": 15, "currency": "USD"}
    assert progress["remaining_judgments"] == 8

    # Two hours later nothing happened in the last hour: the ETA uses the day's pace.
    manual_clock.advance(2 * 3600)
    _sign_in_again(api, client)
    progress = _progress(api, client, job["id"])
    assert progress["throughput"] == {"last_hour": 0, "last_24h": 4}
    assert progress["eta"]["seconds"] == round(8 / (4 / 86400))
    eta_at = datetime.fromisoformat(progress["eta"]["at"])
    assert eta_at == manual_clock.now() + timedelta(seconds=progress["eta"]["seconds"])

    # A day on, no recent throughput: no ETA.
    manual_clock.advance(24 * 3600)
    _sign_in_again(api, client)
    progress = _progress(api, client, job["id"])
    assert progress["throughput"] == {"last_hour": 0, "last_24h": 0}
    assert progress["eta"] is None
    assert progress["remaining_judgments"] == 8


def test_live_leases_leave_out_expired_ones(api, app, manual_clock):
    admin, client, job = _setup(api, app, tasks=2, lease_seconds=60)
    worker = active_worker(api, admin)
    lease(api, worker, job["id"])
    assert _progress(api, client, job["id"])["live_leases"] == 1
    manual_clock.advance(61)
    progress = _progress(api, client, job["id"])
    assert progress["live_leases"] == 0
    assert progress["judgments"]["leased"] == 1  # not yet swept, but no longer live


def test_progress_of_a_finished_job(api, app):
    admin, client, job = _setup(api, app, tasks=2, redundancy=SINGLE)
    worker = active_worker(api, admin)
    _judge(api, worker, job["id"])
    _judge(api, worker, job["id"])
    progress = _progress(api, client, job["id"])
    assert progress["status"] == "completed"
    assert progress["remaining_judgments"] == 0
    assert progress["eta"]["seconds"] == 0
    assert progress["spend"]["amount"] == 10


# --- tenancy and scopes ------------------------------------------------------------------


def test_other_tenants_and_workers_cannot_read_progress_or_results(api, app):
    admin, client, job = _setup(api, app, tasks=1)
    intruder = api.signup("client")
    worker = active_worker(api, admin)
    for path in ("progress", "results", "results?detail=true"):
        assert_problem(api.get(f"/api/v1/jobs/{job['id']}/{path}", intruder.token), 404)
        assert_problem(api.get(f"/api/v1/jobs/{job['id']}/{path}", worker.token), 403)
    assert_problem(api.get("/api/v1/jobs/999999/progress", client.token), 404)
    assert_problem(api.get("/api/v1/jobs/999999/results", client.token), 404)


# --- the export --------------------------------------------------------------------------


@pytest.fixture
def judged(api, app, manual_clock):
    """A job of three real tasks and a gold one: one task completed by three workers, one
    with a single judgment, one untouched."""
    # At most three judgments: the split task closes at the maximum (posterior 0.7).
    admin, client, job = _setup(
        api, app, tasks=3, gold=1, redundancy={"min": 3, "max": 3, "target_confidence": 0.9}
    )
    workers = [active_worker(api, admin) for _ in range(3)]
    for worker, answer in zip(workers, ("cat", "cat", "dog"), strict=True):
        _judge(api, worker, job["id"], answer, active_seconds=3.5)
        manual_clock.advance(10)
    _judge(api, workers[0], job["id"], "dog")
    return {"client": client, "job": job, "workers": workers, "admin": admin}


def test_ndjson_export_has_one_line_per_real_task(api, judged, db_session):
    client, job = judged["client"], judged["job"]
    lines = _lines(_export(api, client, job["id"]))
    assert [line["external_id"] for line in lines] == ["item-0", "item-1", "item-2"]
    first, second, third = lines
    assert set(first) == {
        "task_id",
        "external_id",
        "is_gold",
        "status",
        "answer",
        "confidence",
        "judgments",
        "method",
        "completed_at",
    }
    task = db_session.get(Task, first["task_id"])
    assert first == {
        "task_id": task.id,
        "external_id": "item-0",
        "is_gold": False,
        "status": "completed",
        "answer": "cat",
        "confidence": 0.7,
        "judgments": 3,
        "method": "posterior",
        "completed_at": task.completed_at.isoformat(),
    }
    assert (second["status"], second["answer"], second["judgments"]) == ("open", None, 1)
    assert (third["status"], third["judgments"], third["completed_at"]) == ("open", 0, None)


def test_detail_names_workers_only_by_pseudonym(api, judged):
    client, job, workers = judged["client"], judged["job"], judged["workers"]
    response = _export(api, client, job["id"], "?detail=true")
    text = response.get_data(as_text=True)
    lines = [json.loads(line) for line in text.splitlines()]
    detail = lines[0]["detail"]
    assert [d["answer"] for d in detail] == ["cat", "cat", "dog"]
    assert {d["status"] for d in detail} == {"accepted"}
    assert set(detail[0]) == {
        "worker",
        "answer",
        "submitted_at",
        "server_seconds",
        "active_seconds",
        "status",
    }
    assert detail[0]["active_seconds"] == 3.5
    assert detail[0]["server_seconds"] == 0.0
    on_job = api.get(f"/api/v1/jobs/{job['id']}/workers", client.token).get_json()["items"]
    pseudonyms = {w["worker"] for w in on_job}
    assert {d["worker"] for d in detail} == pseudonyms
    assert lines[1]["detail"][0]["worker"] in pseudonyms
    assert lines[2]["detail"] == []
    for worker in workers:
        assert worker.email not in text
        assert worker.user["name"] not in text
    assert "user" not in text and "email" not in text
    user_ids = {w.user["id"] for w in workers}
    assert not user_ids & {d["worker"] for d in detail}


def test_csv_export_with_and_without_detail(api, judged):
    client, job, workers = judged["client"], judged["job"], judged["workers"]
    response = _export(api, client, job["id"], accept="text/csv")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == list(results.CSV_COLUMNS)
    assert len(rows) == 3
    assert json.loads(rows[0]["answer"]) == "cat"
    assert (rows[0]["status"], rows[0]["judgments"], rows[0]["is_gold"]) == (
        "completed",
        "3",
        "false",
    )
    assert rows[1]["answer"] == "" and rows[1]["completed_at"] == ""

    detailed = _export(api, client, job["id"], "?detail=true", accept="text/csv")
    text = detailed.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[-1] == "detail"
    detail = json.loads(rows[0]["detail"])
    assert [d["answer"] for d in detail] == ["cat", "cat", "dog"]
    assert all(d["worker"] and d["worker"] not in {w.email for w in workers} for d in detail)
    for worker in workers:
        assert worker.email not in text


def test_export_filters(api, judged, manual_clock):
    client, job = judged["client"], judged["job"]
    completed = _lines(_export(api, client, job["id"], "?status=completed"))
    assert [line["external_id"] for line in completed] == ["item-0"]
    assert len(_lines(_export(api, client, job["id"], "?status=open"))) == 2
    assert _lines(_export(api, client, job["id"], "?status=cancelled")) == []

    with_gold = _lines(_export(api, client, job["id"], "?include_gold=true"))
    assert [line["is_gold"] for line in with_gold] == [False, False, False, True]
    assert "gold_answer" not in json.dumps(with_gold)

    done_at = completed[0]["completed_at"]
    since = _lines(_export(api, client, job["id"], "?since=" + done_at.replace("+", "%2B")))
    assert [line["external_id"] for line in since] == ["item-0"]
    until = _lines(_export(api, client, job["id"], "?until=" + done_at.replace("+", "%2B")))
    assert until == []  # until is exclusive; open tasks have no completed_at
    later = manual_clock.now().isoformat().replace("+", "%2B")
    assert _lines(_export(api, client, job["id"], f"?since={later}")) == []


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/x-ndjson"),
        ("*/*", "application/x-ndjson"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("application/json;q=0.9, text/csv;q=0.5", "text/csv"),
        ("text/csv;q=0.4, application/x-ndjson;q=0.8", "application/x-ndjson"),
    ],
)
def test_content_negotiation(api, app, accept, expected):
    _, client, job = _setup(api, app, tasks=1)
    assert _export(api, client, job["id"], accept=accept).mimetype == expected


@pytest.mark.parametrize("accept", ["application/json", "text/html", "application/xml"])
def test_other_media_types_are_406(api, app, accept):
    _, client, job = _setup(api, app, tasks=1)
    response = api.get(
        f"/api/v1/jobs/{job['id']}/results", client.token, headers={"Accept": accept}
    )
    body = assert_problem(response, 406)
    assert "text/csv" in body["detail"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=finished", "status"),
        ("?since=yesterday", "since"),
        ("?until=2026-01-05T09:00:00", "until"),  # naive: which time zone?
        ("?detail=maybe", "detail"),
    ],
)
def test_bad_filters_are_422_naming_the_field(api, app, query, field):
    _, client, job = _setup(api, app, tasks=1)
    response = api.get(f"/api/v1/jobs/{job['id']}/results{query}", client.token)
    assert_problem(response, 422, field=field)


def test_thousands_of_tasks_stream_in_batches(api, app, db_session):
    count = 2 * results.EXPORT_BATCH + 500
    _, client, job = _setup(api, app, tasks=count)
    response = api.get(f"/api/v1/jobs/{job['id']}/results", client.token, buffered=False)
    assert response.status_code == 200
    assert response.is_streamed
    chunks = [chunk.decode() for chunk in response.response]
    response.close()
    assert len(chunks) == 3  # one chunk a batch: nothing was fetched all at once
    ids = [json.loads(line)["task_id"] for chunk in chunks for line in chunk.splitlines()]
    expected = list(db_session.scalars(select(Task.id).where(Task.job_id == job["id"])))
    assert ids == sorted(expected) and len(ids) == count

    as_csv = _export(api, client, job["id"], accept="text/csv")
    assert len(as_csv.get_data(as_text=True).splitlines()) == count + 1
