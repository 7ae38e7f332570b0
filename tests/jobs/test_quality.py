"""The quality engine: worker accuracy, adaptive consensus, escalation, gold mix and the
accuracy floor — through the task API wherever there is one."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from billing.models import Hold, HoldStatus
from jobs import agreement, gold, leasing
from jobs.completion import calibrated_prelabel
from jobs.consensus import estimated_accuracy
from jobs.models import Assignment, Job, JobRemoval, Task, WorkerJobQuality
from marketplace import clock
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, create_job, fund, lease
from tests.workforce import make_clearance, make_skill, worker_id

TWO_TO_FIVE = {"min": 2, "max": 5, "target_confidence": 0.9}


@pytest.fixture
def gold_first(monkeypatch):
    """Every lease tries gold first (the gold mix is random; this makes it deterministic)."""
    monkeypatch.setattr(leasing.random, "random", lambda: 0.0)


def _get(session, model, key):
    return session.get(model, key, populate_existing=True)  # what the requests committed


def _leased(api, worker, job_id):
    response = lease(api, worker, job_id)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _submit(api, worker, assignment_id, answer):
    response = api.post(
        f"/api/v1/assignments/{assignment_id}/submit", worker.token, json={"answer": answer}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _judge(api, worker, job_id, answer):
    assignment = _leased(api, worker, job_id)
    _submit(api, worker, assignment["id"], answer)
    return assignment


def _quality(api, client, job_id):
    response = api.get(f"/api/v1/jobs/{job_id}/workers/quality", client.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


# --- estimators, by hand -----------------------------------------------------------------


def test_estimators_and_agreement_hand_computed():
    # Beta(3.5, 1.5) prior: 6 right answers → 9.5 / 11
    assert estimated_accuracy(6, 0) == pytest.approx(9.5 / 11)
    assert estimated_accuracy(0, 4) == pytest.approx(3.5 / 9)
    # a 0.95 pre-label on two labels weighs as 0.5 + 0.8 * 0.45 = 0.86
    assert calibrated_prelabel(0.95, 2) == pytest.approx(0.86)
    assert calibrated_prelabel(0.95, 4) == pytest.approx(0.25 + 0.8 * 0.7)
    # boxes: 9x9 overlap of two 10x10 boxes → 81 / 119
    a, b = {"x": 0, "y": 0, "w": 10, "h": 10}, {"x": 1, "y": 1, "w": 10, "h": 10}
    assert agreement.box_iou(a, b) == pytest.approx(81 / 119)
    assert agreement.span_overlap({"start": 0, "end": 10}, {"start": 5, "end": 15}) == 5 / 15
    box = [{**a, "label": "car"}]
    assert agreement.agree("bbox", box, [{**b, "label": "car"}], None)
    assert not agreement.agree("bbox", box, [{**b, "label": "bus"}], None)
    assert agreement.agree("number", 3.0, 3.4, None) and not agreement.agree("number", 3, 4, 0.5)
    assert agreement.agree("text", "Hello,  World", "hello world", None)
    assert agreement.agree("multi_choice", ["a", "b"], ["b", "a"], None)
    # the largest cluster of mutually agreeing answers becomes one key
    keys = agreement.cluster_keys("number", [1.0, 5.0, 1.2, 0.9], 0.5)
    assert keys[0] == keys[2] == keys[3] != keys[1]


# --- adaptive consensus ------------------------------------------------------------------


def test_two_strong_workers_who_agree_close_the_task(api, app, db_session, gold_first):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=1, gold=6, gold_rate=0.2, redundancy=TWO_TO_FIVE)
    workers = [active_worker(api, admin) for _ in range(3)]
    for worker in workers[:2]:
        for _ in range(6):  # gold first: six right gold answers each
            assignment = _judge(api, worker, job["id"], "cat")
            assert _get(db_session, Assignment, assignment["id"]).is_gold
    real = [_judge(api, worker, job["id"], "cat") for worker in workers[:2]]
    task = _get(db_session, Task, real[0]["task"]["id"])
    strong = estimated_accuracy(6, 0)
    assert task.status.value == "completed" and task.submitted_count == 2
    assert task.final_answer == "cat" and task.method == "posterior"
    assert task.confidence == round(strong**2 / (strong**2 + (1 - strong) ** 2), 4)
    assert {_get(db_session, Assignment, a["id"]).status.value for a in real} == {"accepted"}
    assert lease(api, workers[2], job["id"]).status_code == 204
    rows = _quality(api, client, job["id"])
    assert [(r["gold_correct"], r["agreed"], r["disagreed"]) for r in rows] == [(6, 1, 0)] * 2
    assert rows[0]["accuracy"] == round(estimated_accuracy(7, 0), 4)


def test_disagreement_asks_one_more_worker(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=1, redundancy=TWO_TO_FIVE)
    workers = [active_worker(api, admin) for _ in range(4)]
    first = _judge(api, workers[0], job["id"], "cat")
    _judge(api, workers[1], job["id"], "dog")
    task = _get(db_session, Task, first["task"]["id"])
    assert (task.status.value, task.redundancy_target) == ("open", 3)
    third = _leased(api, workers[2], job["id"])
    assert third["task"]["id"] == task.id
    assert lease(api, workers[3], job["id"]).status_code == 204  # one more, not two
    _submit(api, workers[2], third["id"], "cat")
    # three new workers at 0.7, 2–1: posterior 0.7 < 0.9 → a fourth judgment
    task = _get(db_session, Task, task.id)
    assert (task.status.value, task.redundancy_target) == ("open", 4)
    assert _leased(api, workers[3], job["id"])["task"]["id"] == task.id


def test_a_confident_prelabel_needs_fewer_humans(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, redundancy={"min": 1, "max": 3, "target_confidence": 0.9})
    with app.app_context():
        from marketplace.database import db

        for i, prelabel in enumerate([("cat", 0.95), None]):
            db.session.add(
                Task(
                    job_id=job["id"],
                    external_id=f"p-{i}",
                    payload={"i": i},
                    prelabel=prelabel[0] if prelabel else None,
                    prelabel_confidence=prelabel[1] if prelabel else None,
                    redundancy_target=1,
                    created_at=clock.now(),
                )
            )
        db.session.commit()
    fund(api, client, job["id"], 10_000)
    api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)
    worker, other = active_worker(api, admin), active_worker(api, admin)
    with_prelabel = _judge(api, worker, job["id"], "cat")
    without = _judge(api, worker, job["id"], "cat")
    closed = _get(db_session, Task, with_prelabel["task"]["id"])
    # 0.7 · 0.86 against 0.3 · 0.14
    assert closed.status.value == "completed"
    assert closed.confidence == round(0.7 * 0.86 / (0.7 * 0.86 + 0.3 * 0.14), 4)
    assert _get(db_session, Task, without["task"]["id"]).status.value == "open"
    assert _leased(api, other, job["id"])["task"]["id"] == without["task"]["id"]


def test_boxes_cluster_by_iou(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        answer_spec={"type": "bbox", "labels": ["car"]},
        redundancy={"min": 2, "max": 3, "target_confidence": 0.9, "agreement_threshold": 0.6},
    )
    boxes = [
        [{"x": 0, "y": 0, "w": 10, "h": 10, "label": "car"}],
        [{"x": 1, "y": 1, "w": 10, "h": 10, "label": "car"}],  # IoU 0.68 with the first
        [{"x": 0.5, "y": 0, "w": 10, "h": 10, "label": "car"}],
    ]
    judged = [_judge(api, active_worker(api, admin), job["id"], box) for box in boxes]
    task = _get(db_session, Task, judged[0]["task"]["id"])
    assert task.status.value == "completed" and task.submitted_count == 3
    assert task.final_answer == boxes[0] and task.confidence == 0.927


# --- escalation --------------------------------------------------------------------------


def test_escalation_tier_then_review(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    skill = make_skill(api, admin, "image.expert")
    escalation = {"skill": "image.expert", "min_skill_level": 80, "extra": 1}
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        redundancy={"min": 2, "max": 2, "target_confidence": 0.9, "escalation": escalation},
    )
    first = _judge(api, active_worker(api, admin), job["id"], "cat")
    _judge(api, active_worker(api, admin), job["id"], "dog")
    task = _get(db_session, Task, first["task"]["id"])
    assert (task.status.value, task.escalation_level, task.redundancy_target) == ("open", 1, 3)
    novice, expert = active_worker(api, admin), active_worker(api, admin)
    assert lease(api, novice, job["id"]).status_code == 204  # escalated: experts only
    granted = api.post(
        f"/api/v1/workers/{worker_id(api, expert)}/skills",
        admin.token,
        json={"skill_id": skill["id"], "level": 85, "reason": "radiologist"},
    )
    assert granted.status_code == 200, granted.get_json()
    _judge(api, expert, job["id"], "cat")
    # 2–1 at the escalated maximum: closed at low confidence and sent to review
    task = _get(db_session, Task, task.id)
    assert (task.status.value, task.final_answer, task.review_reason) == (
        "completed",
        "cat",
        "escalated",
    )
    reviews = api.get(f"/api/v1/jobs/{job['id']}/reviews?status=pending", client.token)
    assert [r["reason"] for r in reviews.get_json()["items"]] == ["escalated"]


def test_escalation_by_credential(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    clearance = make_clearance(api, admin, "radiology-board")
    escalation = {"credential": "radiology-board"}
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9, "escalation": escalation},
    )
    first = _judge(api, active_worker(api, admin), job["id"], "cat")
    task = _get(db_session, Task, first["task"]["id"])
    assert (task.escalation_level, task.redundancy_target) == (1, 3)  # extra defaults to 2
    assert lease(api, active_worker(api, admin), job["id"]).status_code == 204
    expert = active_worker(api, admin)
    attestation = api.post(
        "/api/v1/attestations",
        expert.token,
        json={"clearance_type_id": clearance["id"], "reference": "board-cert"},
    ).get_json()
    api.post(f"/api/v1/attestations/{attestation['id']}/verify", admin.token, json={})
    _judge(api, expert, job["id"], "cat")
    # two agreeing newcomers: 0.845 < 0.9, one more expert slot is left
    task = _get(db_session, Task, task.id)
    assert (task.status.value, task.live_count + task.submitted_count) == ("open", 2)


@pytest.mark.parametrize(
    ("redundancy", "field"),
    [
        ({**TWO_TO_FIVE, "escalation": {"skill": "x"}}, "redundancy"),
        ({**TWO_TO_FIVE, "escalation": {"credential": "hipaa", "skill": "x"}}, "redundancy"),
        ({**TWO_TO_FIVE, "escalation": {"credential": "hipaa", "extra": 0}}, "redundancy"),
        ({**TWO_TO_FIVE, "agreement_threshold": -1}, "redundancy"),
    ],
)
def test_bad_quality_settings_are_422(api, db_session, redundancy, field):
    client = api.signup("client")
    response = api.post(
        "/api/v1/jobs",
        client.token,
        json={
            "title": "t",
            "answer_spec": {"type": "single_choice", "labels": ["a", "b"]},
            "price_per_judgment": {"amount": 5},
            "redundancy": redundancy,
        },
    )
    assert_problem(response, 422, field=field)
    assert db_session.scalars(select(Job)).all() == []


def test_min_accuracy_is_validated(api, db_session):
    client = api.signup("client")
    for bad in (1.5, -0.1, "high"):
        response = api.post(
            "/api/v1/jobs",
            client.token,
            json={
                "title": "t",
                "answer_spec": {"type": "single_choice", "labels": ["a", "b"]},
                "price_per_judgment": {"amount": 5},
                "redundancy": TWO_TO_FIVE,
                "requirements": {"min_accuracy": bad},
            },
        )
        assert_problem(response, 422, field="requirements")
    assert db_session.scalars(select(Job)).all() == []


# --- gold --------------------------------------------------------------------------------


def test_gold_updates_accuracy_at_once_and_stays_invisible(
    api, app, db_session, manual_clock, gold_first
):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=2, gold=2, gold_rate=0.2)
    worker = active_worker(api, admin)
    right = _judge(api, worker, job["id"], "cat")
    assert [(r["gold_correct"], r["gold_wrong"]) for r in _quality(api, client, job["id"])] == [
        (1, 0)
    ]
    assert _quality(api, client, job["id"])[0]["accuracy"] == round(4.5 / 6, 4)
    wrong = _leased(api, worker, job["id"])
    shown = _submit(api, worker, wrong["id"], "dog")
    assert shown["status"] == "submitted"  # stored as rejected; the worker cannot tell
    assert _get(db_session, Assignment, wrong["id"]).status.value == "rejected"
    row = _quality(api, client, job["id"])[0]
    assert (row["gold_wrong"], row["confusion"]) == (1, {"cat": {"cat": 1, "dog": 1}})
    for assignment in (right, wrong):
        body = api.get(f"/api/v1/assignments/{assignment['id']}", worker.token).get_json()
        assert body["status"] == "submitted"
    listed = api.get("/api/v1/assignments?status=submitted", worker.token).get_json()["items"]
    assert {a["id"] for a in listed} == {right["id"], wrong["id"]}
    for status in ("accepted", "rejected"):
        page = api.get(f"/api/v1/assignments?status={status}", worker.token).get_json()
        assert page["items"] == []
    # the worker's own figures do not move the moment a gold answer is judged either
    mine = api.get("/api/v1/workers/me/quality", worker.token).get_json()
    assert (mine["jobs"][0]["gold_answers"], mine["jobs"][0]["accuracy"]) == (0, 0.7)
    text = json.dumps(mine)
    assert "task" not in text and "gold_correct" not in text
    # a day later the real outcome shows
    manual_clock.advance(gold.GOLD_REVEAL_SECONDS + 1)
    worker.token = api.login(worker.email)["access_token"]
    body = api.get(f"/api/v1/assignments/{wrong['id']}", worker.token).get_json()
    assert body["status"] == "rejected"
    mine = api.get("/api/v1/workers/me/quality", worker.token).get_json()
    assert mine["jobs"][0]["gold_answers"] == 2
    assert mine["jobs"][0]["accuracy"] == round(estimated_accuracy(1, 1), 4)


def test_first_tasks_get_a_heavier_gold_mix(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    single = {"min": 1, "max": 1, "target_confidence": 0.5}
    job = active_job(api, app, client, tasks=40, gold=40, gold_rate=0.1, redundancy=single)
    worker = active_worker(api, admin)
    with app.app_context():
        from marketplace.database import db

        stored = db.session.get(Job, job["id"])
        me = SimpleNamespace(id=worker_id(api, worker))
        assert gold.gold_probability(stored, me) == gold.FIRST_TASKS_GOLD_RATE
    random.seed(20261202)
    kinds = []
    for _ in range(40):
        assignment = _judge(api, worker, job["id"], "cat")
        kinds.append(_get(db_session, Assignment, assignment["id"]).is_gold)
    with app.app_context():
        stored = db.session.get(Job, job["id"])
        assert gold.gold_probability(stored, me) == 0.1
    first, rest = sum(kinds[: gold.FIRST_TASKS]), sum(kinds[gold.FIRST_TASKS :])
    # expected 5 of the first 10 and 3 of the next 30
    assert first >= 3 and rest <= 8 and first / 10 > rest / 30


# --- the accuracy floor ------------------------------------------------------------------


def test_a_worker_below_min_accuracy_is_removed(api, app, db_session, monkeypatch):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api,
        app,
        client,
        tasks=2,
        gold=5,
        gold_rate=0.2,
        redundancy=TWO_TO_FIVE,
        requirements={"min_accuracy": 0.6},
    )
    careless, careful = active_worker(api, admin), active_worker(api, admin)
    monkeypatch.setattr(leasing.random, "random", lambda: 0.99)  # a real task first
    pending = _judge(api, careless, job["id"], "dog")
    live = _leased(api, careless, job["id"])  # and one held while the gold goes wrong
    monkeypatch.setattr(leasing.random, "random", lambda: 0.0)  # then gold
    for n in range(4):
        gold_lease = _leased(api, careless, job["id"])
        assert _get(db_session, Assignment, gold_lease["id"]).is_gold
        _submit(api, careless, gold_lease["id"], "dog")
        removed = db_session.scalar(select(JobRemoval).where(JobRemoval.job_id == job["id"]))
        assert (removed is not None) == (n == 3)  # only from the fourth gold answer on
    # 3.5 / 9 = 0.39 < 0.6: removed, with the reason
    assert removed.accuracy == round(3.5 / 9, 4)
    body = assert_problem(lease(api, careless, job["id"]), 403)
    assert body["reasons"][0]["code"] == "accuracy_below_minimum"
    assert lease(api, careless).status_code == 204
    late = api.post(
        f"/api/v1/assignments/{live['id']}/submit", careless.token, json={"answer": "dog"}
    )
    assert assert_problem(late, 403)["reasons"][0]["code"] == "accuracy_below_minimum"
    assert _get(db_session, Assignment, live["id"]).status.value == "released"
    # the pending judgment is rejected, its hold given back, its slot free again
    stored = _get(db_session, Assignment, pending["id"])
    assert stored.status.value == "rejected"
    assert _get(db_session, Hold, pending["id"]).status == HoldStatus.RELEASED
    task = _get(db_session, Task, pending["task"]["id"])
    assert (task.status.value, task.submitted_count) == ("open", 0)
    monkeypatch.setattr(leasing.random, "random", lambda: 0.99)
    assert _leased(api, careful, job["id"])["task"]["id"] == task.id
    rows = _quality(api, client, job["id"])
    assert [r["removed"] for r in rows] == [True]
    mine = api.get("/api/v1/workers/me/quality", careless.token).get_json()
    assert mine["jobs"][0]["removed"] is True and mine["jobs"][0]["min_accuracy"] == 0.6


def test_measured_accuracy_sets_the_skill_level(api, app, db_session, gold_first, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    skill = make_skill(api, admin, "image.pets")
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        gold=10,
        gold_rate=0.2,
        requirements={"skills": [{"skill": "image.pets", "min_level": 40}]},
    )
    worker = active_worker(api, admin)
    api.post(
        f"/api/v1/workers/{worker_id(api, worker)}/skills",
        admin.token,
        json={"skill_id": skill["id"], "level": 50, "reason": "assessment"},
    )
    for _ in range(10):
        _judge(api, worker, job["id"], "cat")
    # not at once: a level that moved when a task was submitted would tell it was gold
    levels = api.get("/api/v1/workers/me/skills", worker.token).get_json()["items"]
    assert [(s["level"], s["source"]) for s in levels] == [(50, "admin")]
    manual_clock.advance(gold.GOLD_REVEAL_SECONDS + 1)
    worker.token = api.login(worker.email)["access_token"]
    _judge(api, worker, job["id"], "cat")  # the real task: any judgment measures again
    levels = api.get("/api/v1/workers/me/skills", worker.token).get_json()["items"]
    assert [(s["level"], s["source"]) for s in levels] == [(90, "performance")]  # 13.5 / 15
    mine = api.get("/api/v1/workers/me/quality", worker.token).get_json()
    assert mine["skills"] == [
        {
            "skill": "image.pets",
            "jobs": 1,
            "accuracy": 0.9,
            "interval": mine["skills"][0]["interval"],
            "judgments_measured": 10,
        }
    ]
    assert db_session.scalar(select(WorkerJobQuality.gold_correct)) == 10


def test_quality_views_are_for_the_jobs_client_and_workers_only(api, app):
    admin = api.admin(app)
    client, stranger = api.signup("client"), api.signup("client")
    job = active_job(api, app, client, tasks=1)
    worker = active_worker(api, admin)
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/workers/quality", stranger.token), 404)
    assert_problem(api.get(f"/api/v1/jobs/{job['id']}/workers/quality", worker.token), 403)
    assert_problem(api.get("/api/v1/workers/me/quality", client.token), 403)
    assert api.get("/api/v1/workers/me/quality", worker.token).get_json() == {
        "jobs": [],
        "skills": [],
    }
    bad = api.get(f"/api/v1/jobs/{job['id']}/workers/quality?cursor=zzz", client.token)
    assert_problem(bad, 422, field="cursor")


def test_weak_votes_never_close_on_an_answer_nobody_gave(app):
    """A single weak worker (accuracy < 0.5) on three labels: the posterior prefers the
    labels they did not pick; on open answer spaces it would prefer "none of these"."""
    from jobs import completion
    from jobs.consensus import Decision, Vote

    current = completion.Ballot([], [], {'"a"': "a"}, [Vote('"a"', 0.2)])
    labels = ['"a"', '"b"', '"c"']
    decision, key, confidence = completion._unvoted_best(
        current, labels, Decision.CLOSE, '"b"', 0.4, 1, 3
    )
    assert (decision, key, confidence, current.values['"b"']) == (Decision.CLOSE, '"b"', 0.4, "b")
    current = completion.Ballot([], [], {"1": 1}, [Vote("1", 0.2)])
    decision, key, confidence = completion._unvoted_best(
        current, [completion.OTHER], Decision.CLOSE, completion.OTHER, 0.8, 1, 3
    )
    assert (decision, key, confidence) == (Decision.EXTEND, "1", pytest.approx(0.2))


# --- adaptive redundancy under concurrency ---------------------------------------------------


@pytest.mark.slow
def test_a_crowd_under_adaptive_redundancy_never_overfills_a_task():
    """A mixed crowd answering at random on a job with gold, min 2 and max 4: targets move
    while others lease and submit, yet invariant 1 holds at every instant (the monitor), no
    request fails, every real task closes with 2 to 4 paid judgments, and the ledger holds."""
    from sqlalchemy import func

    from billing.models import Hold as HoldRow
    from marketplace.database import db
    from tests.billing.helpers import assert_ledger_consistent
    from tests.jobs import test_concurrency as crowd

    on_postgres = crowd.ON_POSTGRES
    # Enough workers that a task can always get its fourth judgment: of any eight, at most
    # three skip or abandon it (tests.jobs.crowd.habits_of), and nobody has a task twice.
    workers_count, tasks = (16, 200) if on_postgres else (8, 40)
    app, frozen = crowd._crowd_app(8)
    try:
        api = crowd.Api(crowd.client_for(app, 10_000))
        admin = api.admin(app)
        client = api.signup("client")
        job = active_job(
            api,
            app,
            client,
            tasks=tasks,
            gold=5,
            gold_rate=0.2,
            budget=(tasks * 4 + workers_count * 5) * 6 * 2,
            redundancy={"min": 2, "max": 4, "target_confidence": 0.9},
            lease_seconds=crowd.LEASE_SECONDS,
        )
        workers = [
            active_worker(crowd.Api(crowd.client_for(app, i)), admin) for i in range(workers_count)
        ]
        run = crowd._judge_until_done(app, frozen, job["id"], workers, 600, None)
        tallies = run["tallies"]
        assert not [t.crashed for t in tallies if t.crashed]
        assert not any(t.timed_out for t in tallies)
        assert [u for t in tallies for u in t.unexpected] == []
        # (gold tasks count wrong, rejected answers in submitted_count; they never fill up)
        assert [v for v in run["monitor"].violations if v[1] != leasing.GOLD_REDUNDANCY] == []
        with app.app_context():
            real = db.session.scalars(
                select(Task).where(Task.job_id == job["id"], Task.is_gold.is_(False))
            ).all()
            assert {t.status.value for t in real} == {"completed"}
            assert {t.live_count for t in real} == {0}
            assert set(t.submitted_count for t in real) <= {2, 3, 4}
            assert len({t.submitted_count for t in real}) > 1  # disagreement asked for more
            accepted = dict(
                db.session.execute(
                    select(Assignment.task_id, func.count())
                    .where(Assignment.job_id == job["id"], Assignment.status == "accepted")
                    .where(Assignment.is_gold.is_(False))
                    .group_by(Assignment.task_id)
                ).all()
            )
            assert accepted == {t.id: t.submitted_count for t in real}
            assert_ledger_consistent(db.session)
            held = (
                select(func.count()).select_from(HoldRow).where(HoldRow.status == HoldStatus.HELD)
            )
            assert db.session.scalar(held) == 0
            db.session.remove()
    finally:
        with app.app_context():
            from marketplace.database import db

            db.engine.dispose()
