"""Throughput through the HTTP API with the test clock: hand-computed medians, IQRs, active
time and rates; trends; a slow task flagged as possibly ambiguous."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, lease

ONE = {"redundancy": {"min": 1, "max": 1, "target_confidence": 0.5}}


def _judge(api, clock, worker, job_id, seconds, active=None, answer="cat"):
    leased = lease(api, worker, job_id)
    assert leased.status_code == 201, leased.get_json()
    body = leased.get_json()
    clock.advance(seconds)
    submitted = api.post(
        f"/api/v1/assignments/{body['id']}/submit",
        worker.token,
        json={"answer": answer} | ({"active_seconds": active} if active is not None else {}),
    )
    assert submitted.status_code == 200, submitted.get_json()
    return body["task"]


def test_rates_medians_and_iqr_by_hand(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=4, **ONE)
    a, b = active_worker(api, admin), active_worker(api, admin)
    # A: 10 s and 20 s back to back, then after a long break (> 5 min) one of 40 s
    _judge(api, manual_clock, a, job["id"], 10, active=8)  # 09:00:00 → 09:00:10
    _judge(api, manual_clock, a, job["id"], 20)  # → 09:00:30
    manual_clock.advance(970)
    _judge(api, manual_clock, a, job["id"], 40)  # 09:16:40 → 09:17:20
    # B: one judgment of 6 s in the next hour
    manual_clock.advance(2700)  # 10:02:20 (tokens last an hour: sign in again)
    b.token = api.login(b.email)["access_token"]
    client.token = api.login(client.email)["access_token"]
    _judge(api, manual_clock, b, job["id"], 6, active=5)

    response = api.get(f"/api/v1/jobs/{job['id']}/throughput", client.token)
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    totals = report["totals"]
    assert (totals["judgments"], totals["workers"]) == (4, 2)
    # server seconds 6, 10, 20, 40: median 15, Q1 = 6 + 0.75·4 = 9, Q3 = 20 + 0.25·20 = 25
    assert totals["server_seconds"] == {"n": 4, "median": 15.0, "q1": 9.0, "q3": 25.0, "iqr": 16.0}
    assert totals["active_seconds_reported"]["median"] == pytest.approx(6.5)
    # active time: A's spans [0, 30] and [1000, 1040] = 70 s, B's 6 s
    assert totals["active_seconds"] == pytest.approx(76)
    assert totals["judgments_per_hour"] == pytest.approx(round(4 / 76 * 3600, 3))
    rows = {row["judgments"]: row for row in report["workers"]["items"]}
    assert set(rows) == {3, 1}
    row_a = rows[3]
    assert row_a["server_seconds"] == {"n": 3, "median": 20.0, "q1": 15.0, "q3": 30.0, "iqr": 15.0}
    assert row_a["active_seconds"] == pytest.approx(70)
    assert row_a["judgments_per_hour"] == pytest.approx(round(3 / 70 * 3600, 3))
    assert row_a["active_seconds_reported"] == {
        "n": 1, "median": 8.0, "q1": 8.0, "q3": 8.0, "iqr": 0.0,
    }  # fmt: skip
    assert row_a["worker"] and "id" not in row_a  # pseudonymous
    assert rows[1]["judgments_per_hour"] == pytest.approx(600.0)
    # hourly trend: three judgments in the 09:00 hour, one in the 10:00 hour
    assert report["trend"] == [
        {
            "start": "2026-01-05T09:00:00+00:00",
            "judgments": 3,
            "workers": 1,
            "median_server_seconds": 20.0,
        },
        {
            "start": "2026-01-05T10:00:00+00:00",
            "judgments": 1,
            "workers": 1,
            "median_server_seconds": 6.0,
        },
    ]
    daily = api.get(f"/api/v1/jobs/{job['id']}/throughput?bucket=day", client.token).get_json()
    assert [(b["start"], b["judgments"]) for b in daily["trend"]] == [
        ("2026-01-05T00:00:00+00:00", 4)
    ]
    # paged by worker
    first = api.get(f"/api/v1/jobs/{job['id']}/throughput?limit=1", client.token)
    assert len(first.get_json()["workers"]["items"]) == 1
    cursor = first.get_json()["workers"]["next_cursor"]
    assert 'rel="next"' in first.headers["Link"]
    second = api.get(f"/api/v1/jobs/{job['id']}/throughput?limit=1&cursor={cursor}", client.token)
    assert second.get_json()["workers"]["next_cursor"] is None
    names = {first.get_json()["workers"]["items"][0]["worker"]}
    names.add(second.get_json()["workers"]["items"][0]["worker"])
    assert names == {row["worker"] for row in report["workers"]["items"]}

    # the worker's own view
    mine = api.get("/api/v1/workers/me/throughput", api.login(a.email)["access_token"])
    assert mine.status_code == 200, mine.get_json()
    mine = mine.get_json()
    assert mine["totals"]["judgments"] == 3
    assert mine["totals"]["server_seconds"]["median"] == 20.0
    assert [j["job_id"] for j in mine["jobs"]] == [job["id"]]


def test_bad_requests(api, app):
    client = api.signup("client")
    other = api.signup("client")
    job = active_job(api, app, client, tasks=1)
    assert_problem(
        api.get(f"/api/v1/jobs/{job['id']}/throughput?bucket=week", client.token),
        422,
        field="bucket",
    )
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/throughput", other.token), 404)
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/flags", other.token), 404)
    assert_problem(api.get("/api/v1/workers/me/throughput", client.token), 403)
    empty = api.get(f"/api/v1/jobs/{job['id']}/throughput", client.token).get_json()
    assert empty["totals"]["judgments"] == 0
    assert empty["totals"]["judgments_per_hour"] is None
    assert empty["trend"] == [] and empty["flags"] == []


def test_a_task_good_workers_take_far_longer_on_is_flagged(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api, app, client, tasks=10, redundancy={"min": 3, "max": 3, "target_confidence": 0.9}
    )
    workers = [active_worker(api, admin) for _ in range(3)]
    slow_task = None
    for _ in range(10):
        for worker in workers:
            leased = lease(api, worker, job["id"]).get_json()
            index = int(leased["task"]["payload"]["image_url"].rsplit("/", 1)[1].split(".")[0])
            seconds = 60 if index == 5 else 10 + index * 0.5
            if index == 5:
                slow_task = leased["task"]["id"]
            manual_clock.advance(seconds)
            submitted = api.post(
                f"/api/v1/assignments/{leased['id']}/submit", worker.token, json={"answer": "cat"}
            )
            assert submitted.status_code == 200
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    # flagged when the job completed
    flags = api.get(f"/api/v1/jobs/{job['id']}/flags", client.token).get_json()["items"]
    assert [(f["task_id"], f["kind"]) for f in flags] == [(slow_task, "slow_task")]
    evidence = flags[0]["evidence"]
    assert evidence["median_seconds"] == 60.0 and evidence["judgments"] == 3
    assert evidence["basis"] == "all_workers"
    # medians of the other nine: 10, 10.5, 11, 11.5, 12, 13, 13.5, 14, 14.5 → Q1 11, Q3 13.5
    # with 60 among them (ten medians): Q1 = 11.125, Q3 = 13.875 → 13.875 + 3·2.75 = 22.125
    assert evidence["threshold_seconds"] == pytest.approx(22.125)
    report = api.get(f"/api/v1/jobs/{job['id']}/throughput", client.token).get_json()
    assert [f["task_id"] for f in report["flags"]] == [slow_task]

    # the periodic refresh keeps it (and is idempotent)
    from jobs.tasks import refresh_task_flags

    with app.app_context():
        assert refresh_task_flags() == 1
    again = api.get(f"/api/v1/jobs/{job['id']}/flags?kind=slow_task", client.token).get_json()
    assert again["items"] == flags
    none = api.get(f"/api/v1/jobs/{job['id']}/flags?kind=other", client.token).get_json()
    assert none["items"] == []


def test_slowness_of_workers_who_fail_gold_does_not_flag_a_task(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api,
        app,
        client,
        tasks=10,
        gold=4,  # gold answer "cat"
        gold_rate=0.5,
        redundancy={"min": 4, "max": 4, "target_confidence": 0.9},
    )
    good = [active_worker(api, admin) for _ in range(2)]
    bad = [active_worker(api, admin) for _ in range(2)]
    for worker in good + bad:
        for _ in range(14):  # 4 gold + 10 real, in whatever order leasing gives them
            response = lease(api, worker, job["id"])
            if response.status_code == 204:
                # The last worker's last real task completed the job before its last gold
                # (it depends on the order the gold was mixed in): nothing more to lease.
                assert worker is bad[-1]
                break
            leased = response.get_json()
            index = int(leased["task"]["payload"]["image_url"].rsplit("/", 1)[1].split(".")[0])
            # the two bad workers fail gold and dawdle on task 5; everyone else takes ~10 s
            seconds = 100 if worker in bad and index == 5 else 10 + (index % 10) * 0.5
            answer = "dog" if worker in bad else "cat"
            manual_clock.advance(seconds)
            submitted = api.post(
                f"/api/v1/assignments/{leased['id']}/submit", worker.token, json={"answer": answer}
            )
            assert submitted.status_code == 200
        client.token = api.login(client.email)["access_token"]
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    # among all four, task 5's median is (12.5 + 100) / 2 = 56.25 s, an outlier; among the
    # two workers who pass gold it is 12.5 s, in line with the rest: nothing is flagged
    assert api.get(f"/api/v1/jobs/{job['id']}/flags", client.token).get_json()["items"] == []
    from jobs.models import Assignment
    from jobs.throughput import _load, slow_tasks
    from marketplace.database import db

    with app.app_context():
        rows = _load(Assignment.job_id == job["id"])
        assert slow_tasks(rows) == ({}, "good_workers")
        slow, basis = slow_tasks(rows.subset(~rows.gold))  # without gold: all workers count
        assert basis == "all_workers" and [e["median_seconds"] for e in slow.values()] == [56.25]
        db.session.rollback()
