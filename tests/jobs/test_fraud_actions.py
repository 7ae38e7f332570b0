"""Fraud actions: graduated, reversible, audited; confirmation voids and claws back; appeals."""

from __future__ import annotations

import json

from sqlalchemy import select

from billing.services import mature_earnings
from jobs.models import Assignment, Task
from marketplace.models import AuditEvent
from tests.billing.helpers import assert_ledger_consistent
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, lease
from tests.workforce import invite_and_join, make_crowd, worker_id

THREE = {"min": 2, "max": 2, "target_confidence": 0.9}


def _judge_all(api, worker, job_id, answer="cat", clock_=None, limit=100):
    """Judge what the worker is given (at a human pace when a test clock is passed)."""
    done = []
    while len(done) < limit and (leased := lease(api, worker, job_id)).status_code == 201:
        body = leased.get_json()
        if clock_ is not None:
            clock_.advance(20 + 7 * (len(done) % 4))
        submitted = api.post(
            f"/api/v1/assignments/{body['id']}/submit",
            worker.token,
            json={"answer": answer, "active_seconds": 30},
        )
        assert submitted.status_code == 200, submitted.get_json()
        done.append(body["id"])
    return done


def _flag(api, reviewer, worker, note="looks odd"):
    response = api.post(
        "/api/v1/fraud/cases",
        reviewer.token,
        json={"worker_id": worker_id(api, worker), "note": note},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _decide(api, reviewer, case_id, action, **extra):
    response = api.post(
        f"/api/v1/fraud/cases/{case_id}/decision",
        reviewer.token,
        json={"action": action, "note": f"{action} it", **extra},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _pending(api, worker):
    return api.get("/api/v1/workers/me/balance", worker.token).get_json()["pending"]["amount"]


def test_suspend_blocks_leasing_and_lift_restores_it(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=3)
    worker = active_worker(api, admin)
    case = _flag(api, admin, worker)
    assert (case["status"], case["action"]) == ("open", "flag")
    assert lease(api, worker, job["id"]).status_code == 201  # a flag changes nothing yet

    suspended = _decide(api, admin, case["id"], "suspend")
    assert (suspended["status"], suspended["action"]) == ("reviewed", "suspend")
    assert suspended["worker"]["status"] == "suspended"
    refused = assert_problem(lease(api, worker, job["id"]), 403)
    assert refused["reason"] == "worker_suspended"

    lifted = _decide(api, admin, case["id"], "lift")
    assert lifted["action"] == "none" and lifted["worker"]["status"] == "active"
    assert lease(api, worker, job["id"]).status_code == 201
    actions = set(db_session.scalars(select(AuditEvent.action)))
    assert {"fraud.case_opened", "fraud.case_suspend", "fraud.case_lift"} <= actions
    assert "worker.status_changed" in actions


def test_restrict_by_a_reviewer_feeds_gold_until_dismissed(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=20, gold=20, gold_rate=0.0)
    worker = active_worker(api, admin)
    case = _flag(api, admin, worker)
    _decide(api, admin, case["id"], "restrict")

    def gold_leases(count):
        gold = 0
        for _ in range(count):
            leased = lease(api, worker, job["id"]).get_json()
            gold += db_session.get(Task, leased["task"]["id"]).is_gold
            api.post(f"/api/v1/assignments/{leased['id']}/release", worker.token, json={})
        return gold

    assert gold_leases(15) >= 9  # 0.9 expected
    dismissed = _decide(api, admin, case["id"], "dismiss")
    assert dismissed["action"] == "none" and dismissed["risk_score"] == 0
    assert gold_leases(5) == 0


def test_confirm_voids_judgments_reopens_tasks_and_claws_back_pay(
    api, app, db_session, manual_clock, monkeypatch
):
    monkeypatch.setattr(app.config["CROWDLINE"], "qa_window_seconds", 600)
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=3, redundancy=THREE)
    fraud, honest = active_worker(api, admin), active_worker(api, admin)
    fraud_done = _judge_all(api, fraud, job["id"], "dog", manual_clock)
    assert len(fraud_done) == 3
    # The first task completes, and its pay leaves the QA window: that money is the worker's
    # to withdraw and cannot be taken back.
    _judge_all(api, honest, job["id"], "cat", manual_clock, limit=1)
    manual_clock.advance(700)
    with app.app_context():
        assert mature_earnings() == 2
    _judge_all(api, honest, job["id"], "cat", manual_clock)
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    assert _pending(api, fraud) == _pending(api, honest) == 10
    spend = api.get(f"/api/v1/jobs/{job['id']}/spend", client.token).get_json()
    # and a live lease elsewhere, given back with its hold
    other = active_job(api, app, client, tasks=1)
    live = lease(api, fraud, other["id"]).get_json()

    case = _flag(api, admin, fraud)
    confirmed = _decide(api, admin, case["id"], "confirm")
    assert confirmed["action"] == "suspend" and confirmed["confirmed_at"]
    assert confirmed["worker"]["status"] == "suspended"
    voiding = confirmed["voiding"]
    assert voiding["voided"] == 3 and voiding["tasks_reopened"] == 3
    assert voiding["jobs_reactivated"] == [job["id"]]
    assert (voiding["pay_reversed"], voiding["pay_reversed_amount"]) == (2, 10)
    assert voiding["pay_unrecoverable"] == 1
    assert voiding["unrecoverable_assignments"] == [fraud_done[0]]
    assert voiding["leases_ended"] == 1 and voiding["holds_released"] == 1
    assert api.get(f"/api/v1/assignments/{live['id']}", fraud.token).get_json()["status"] == (
        "released"
    )
    assert db_session.get(Task, live["task"]["id"]).live_count == 0
    other_spend = api.get(f"/api/v1/jobs/{other['id']}/spend", client.token).get_json()
    assert other_spend["held"]["amount"] == 0
    # The reversed pay (with its fee) went back to the job's free budget.
    after = api.get(f"/api/v1/jobs/{job['id']}/spend", client.token).get_json()
    assert after["free"]["amount"] > spend["free"]["amount"]
    assert after["settled"]["amount"] < spend["settled"]["amount"]
    assert_ledger_consistent(db_session)

    # The worker's judgments are voided; their pending pay is gone, the honest worker's kept.
    mine = api.get(f"/api/v1/assignments?job_id={job['id']}", fraud.token).get_json()["items"]
    assert [a["status"] for a in mine] == ["voided"] * 3
    earnings = api.get("/api/v1/workers/me/earnings", fraud.token).get_json()["items"]
    assert sorted(e["status"] for e in earnings) == ["available", "reversed", "reversed"]
    assert _pending(api, fraud) == 0 and _pending(api, honest) == 10
    balance = api.get("/api/v1/workers/me/balance", fraud.token).get_json()
    assert balance["available"]["amount"] == 5
    # Tasks are open again with the honest judgment intact; the job is active again.
    tasks = api.get(f"/api/v1/jobs/{job['id']}/tasks", client.token).get_json()["items"]
    assert {t["status"] for t in tasks} == {"open"}
    for task in tasks:
        row = db_session.get(Task, task["id"])
        assert (row.submitted_count, row.final_answer, row.redundancy_target) == (1, None, 2)
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "active"
    # A fresh worker gets the re-opened tasks; the fraudster cannot lease.
    fresh = active_worker(api, admin)
    assert len(_judge_all(api, fresh, job["id"], "cat")) == 3
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    assert_problem(lease(api, fraud, job["id"]), 403)

    # Confirming again voids nothing twice.
    again = _decide(api, admin, case["id"], "confirm")
    assert again["voiding"]["voided"] == 0 and again["voiding"]["pay_reversed"] == 0
    statuses = db_session.scalars(
        select(Assignment.status).where(
            Assignment.worker_id == worker_id(api, fraud), Assignment.job_id == job["id"]
        )
    ).all()
    assert {s.value for s in statuses} == {"voided"}


def test_ban_in_one_job_voids_only_that_job(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    first = active_job(api, app, client, tasks=2, redundancy=THREE)
    second = active_job(api, app, client, tasks=2, redundancy=THREE)
    worker = active_worker(api, admin)
    _judge_all(api, worker, first["id"])
    _judge_all(api, worker, second["id"])
    case = _flag(api, admin, worker)
    banned = _decide(api, admin, case["id"], "ban", job_id=first["id"])
    assert banned["action"] == "ban" and banned["worker"]["status"] == "banned"
    assert banned["voiding"]["voided"] == 2 and banned["voiding"]["job_id"] == first["id"]
    by_job = {
        (job_id, status.value)
        for job_id, status in db_session.execute(
            select(Assignment.job_id, Assignment.status).where(
                Assignment.worker_id == worker_id(api, worker)
            )
        )
    }
    assert by_job == {(first["id"], "voided"), (second["id"], "submitted")}
    assert_problem(lease(api, worker), 403)


def test_appeal_overturned_reinstates_the_worker(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=2, redundancy=THREE)
    worker = active_worker(api, admin)
    _judge_all(api, worker, job["id"], clock_=manual_clock)
    # Nothing to appeal yet; nor while the account is only flagged for review.
    assert_problem(api.post("/api/v1/workers/me/appeals", worker.token, json={"message": "?"}), 409)
    case = _flag(api, admin, worker)
    assert_problem(api.post("/api/v1/workers/me/appeals", worker.token, json={"message": "?"}), 409)
    _decide(api, admin, case["id"], "confirm")
    standing = api.get("/api/v1/workers/me/fraud-standing", worker.token).get_json()
    assert standing["action"] == "suspend" and standing["confirmed"]
    assert standing["worker_status"] == "suspended"

    filed = api.post(
        "/api/v1/workers/me/appeals", worker.token, json={"message": "I label fast, not badly."}
    )
    assert filed.status_code == 201, filed.get_json()
    appeal = filed.get_json()
    assert (appeal["status"], appeal["action_appealed"]) == ("open", "suspend")
    assert_problem(
        api.post("/api/v1/workers/me/appeals", worker.token, json={"message": "again"}), 409
    )
    queue = api.get("/api/v1/fraud/appeals?status=open", admin.token).get_json()["items"]
    assert [a["id"] for a in queue] == [appeal["id"]]
    assert (
        api.get(f"/api/v1/fraud/cases/{case['id']}", admin.token).get_json()["open_appeal"]["id"]
        == appeal["id"]
    )

    decided = api.post(
        f"/api/v1/fraud/appeals/{appeal['id']}/decision",
        admin.token,
        json={"outcome": "overturned", "note": "Checked by hand"},
    )
    assert decided.status_code == 200, decided.get_json()
    body = decided.get_json()
    assert body["status"] == "overturned"
    assert "stay voided" in body["note"] and "2 judgment" in body["note"]
    standing = api.get("/api/v1/workers/me/fraud-standing", worker.token).get_json()
    assert (standing["action"], standing["worker_status"]) == ("none", "active")
    assert standing["latest_appeal"]["status"] == "overturned"
    assert lease(api, worker).status_code in (201, 204)
    again = api.post(
        f"/api/v1/fraud/appeals/{appeal['id']}/decision",
        admin.token,
        json={"outcome": "upheld"},
    )
    assert_problem(again, 409)


def test_appeal_upheld_keeps_the_action(api, app):
    admin = api.admin(app)
    worker = active_worker(api, admin)
    case = _flag(api, admin, worker)
    _decide(api, admin, case["id"], "suspend")
    appeal = api.post("/api/v1/workers/me/appeals", worker.token, json={"message": "please"})
    decided = api.post(
        f"/api/v1/fraud/appeals/{appeal.get_json()['id']}/decision",
        admin.token,
        json={"outcome": "upheld", "note": "evidence is clear"},
    ).get_json()
    assert decided["status"] == "upheld"
    standing = api.get("/api/v1/workers/me/fraud-standing", worker.token).get_json()
    assert (standing["action"], standing["worker_status"]) == ("suspend", "suspended")


def test_vendors_review_only_their_own_crowds_workers(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    ours, theirs = active_worker(api, admin), active_worker(api, admin)
    invite_and_join(api, vendor, crowd, ours)
    our_case = _flag(api, admin, ours)
    their_case = _flag(api, admin, theirs)

    listed = api.get("/api/v1/fraud/cases?status=open", vendor.token).get_json()["items"]
    assert [c["id"] for c in listed] == [our_case["id"]]
    assert listed[0]["worker"]["pseudonym"] == our_case["worker"]["pseudonym"]
    assert_problem(api.get(f"/api/v1/fraud/cases/{their_case['id']}", vendor.token), 404)
    assert_problem(api.get(f"/api/v1/workers/{worker_id(api, theirs)}/risk", vendor.token), 404)
    assert_problem(
        api.post(
            f"/api/v1/fraud/cases/{their_case['id']}/decision",
            vendor.token,
            json={"action": "ban"},
        ),
        404,
    )
    assert api.get(f"/api/v1/workers/{worker_id(api, ours)}/risk", vendor.token).status_code == 200
    restricted = _decide(api, vendor, our_case["id"], "restrict")
    assert restricted["action"] == "restrict"
    # Admins see every case; workers see none (not even their own case's evidence).
    assert len(api.get("/api/v1/fraud/cases", admin.token).get_json()["items"]) == 2
    assert api.get("/api/v1/fraud/cases", ours.token).get_json()["items"] == []
    assert_problem(api.get(f"/api/v1/fraud/cases/{our_case['id']}", ours.token), 404)
    assert_problem(api.get(f"/api/v1/workers/{worker_id(api, ours)}/risk", ours.token), 404)


def test_bad_input_gets_problem_json(api, app):
    admin = api.admin(app)
    worker = active_worker(api, admin)
    case = _flag(api, admin, worker)
    path = f"/api/v1/fraud/cases/{case['id']}/decision"
    assert_problem(api.post(path, admin.token, json={"action": "nuke"}), 422, field="action")
    assert_problem(api.post(path, admin.token, json={}), 422, field="action")
    assert_problem(
        api.post(path, admin.token, json={"action": "ban", "note": "x" * 3000}), 422, field="note"
    )
    assert_problem(
        api.post(path, admin.token, json={"action": "confirm", "job_id": -3}), 422, field="job_id"
    )
    assert_problem(api.post(path, admin.token, json={"action": "confirm", "job_id": 987}), 404)
    assert_problem(
        api.post("/api/v1/fraud/cases/999/decision", admin.token, json={"action": "dismiss"}), 404
    )
    assert_problem(
        api.post("/api/v1/fraud/cases", admin.token, json={"worker_id": "x"}),
        422,
        field="worker_id",
    )
    assert_problem(api.post("/api/v1/fraud/cases", admin.token, json={"worker_id": 999}), 404)
    assert_problem(api.get("/api/v1/fraud/cases?status=maybe", admin.token), 422, field="status")
    assert_problem(api.get("/api/v1/fraud/cases?cursor=zzz", admin.token), 422, field="cursor")
    assert_problem(
        api.post("/api/v1/workers/me/appeals", worker.token, json={}), 422, field="message"
    )
    assert_problem(api.post("/api/v1/workers/me/appeals", admin.token, json={"message": "hi"}), 403)
    assert_problem(
        api.post("/api/v1/fraud/appeals/5/decision", admin.token, json={"outcome": "maybe"}),
        422,
        field="outcome",
    )
    assert_problem(
        api.post("/api/v1/fraud/appeals/5/decision", admin.token, json={"outcome": "upheld"}), 404
    )
    # The rejected decisions left the case as it was.
    current = api.get(f"/api/v1/fraud/cases/{case['id']}", admin.token).get_json()
    assert (current["status"], current["action"]) == ("open", "flag")
    _decide(api, admin, case["id"], "dismiss")
    assert_problem(api.post(path, admin.token, json={"action": "lift"}), 409)


def test_cases_are_cursor_paged(api, app):
    admin = api.admin(app)
    workers = [active_worker(api, admin) for _ in range(3)]
    ids = [_flag(api, admin, w)["id"] for w in workers]
    first = api.get("/api/v1/fraud/cases?limit=2", admin.token)
    body = first.get_json()
    assert [c["id"] for c in body["items"]] == ids[:2] and body["next_cursor"]
    assert 'rel="next"' in first.headers["Link"]
    rest = api.get(f"/api/v1/fraud/cases?limit=2&cursor={body['next_cursor']}", admin.token)
    assert [c["id"] for c in rest.get_json()["items"]] == ids[2:]


def test_confirm_racing_submits_keeps_counts_and_money_straight(api, app, db_session):
    from jobs.models import AssignmentStatus
    from tests.jobs.crowd import all_at_once, client_for, post

    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=8, redundancy=THREE)
    fraud = active_worker(api, admin)
    _judge_all(api, fraud, job["id"], "dog", limit=6)
    live = lease(api, fraud, job["id"]).get_json()
    honest = [active_worker(api, admin) for _ in range(3)]
    # each honest lease lands on a task the fraudster judged: its submit completes the task
    # and accepts the fraudster's judgment while the confirmation voids it
    leases = [lease(api, w, job["id"]).get_json() for w in honest]
    case = _flag(api, admin, fraud)

    def submit(worker, assignment, index):
        path = f"/api/v1/assignments/{assignment['id']}/submit"
        return post(client_for(app, index), worker.token, path, {"answer": "cat"})

    calls = [
        lambda: post(
            client_for(app, 9),
            admin.token,
            f"/api/v1/fraud/cases/{case['id']}/decision",
            {"action": "confirm"},
        ),
        lambda: submit(fraud, live, 8),
        *[
            lambda w=w, a=a, i=i: submit(w, a, i)
            for i, (w, a) in enumerate(zip(honest, leases, strict=True))
        ],
    ]
    results = all_at_once(calls)
    codes = [getattr(r, "status_code", r) for r in results]
    assert codes[0] == 200 and codes[2:] == [200, 200, 200], codes
    # the fraudster's submit: in before the suspension (200), refused (403), or its lease was
    # already given back by the voiding (409)
    assert codes[1] in (200, 403, 409), codes

    # Finish whatever the race left (a submit that slipped in before the suspension).
    again = _decide(api, admin, case["id"], "confirm")
    fid = worker_id(api, fraud)
    left = db_session.scalars(
        select(Assignment.status).where(
            Assignment.worker_id == fid,
            Assignment.status.in_([AssignmentStatus.SUBMITTED, AssignmentStatus.ACCEPTED]),
        )
    ).all()
    assert left == [] and again["worker"]["status"] == "suspended"
    for task in db_session.scalars(select(Task).where(Task.job_id == job["id"])):
        statuses = [
            s.value
            for s in db_session.scalars(
                select(Assignment.status).where(Assignment.task_id == task.id)
            )
        ]
        judged = sum(s in ("submitted", "accepted", "rejected") for s in statuses)
        assert task.submitted_count == judged, (task.id, statuses)
        assert task.live_count == statuses.count("leased"), (task.id, statuses)
        assert task.live_count + task.submitted_count <= task.redundancy_target
    assert_ledger_consistent(db_session)
    earnings = api.get("/api/v1/workers/me/earnings", fraud.token).get_json()["items"]
    assert {e["status"] for e in earnings} <= {"reversed"}
    assert _pending(api, fraud) == 0


def test_actions_step_up_and_down_and_keep_the_worker_status_in_step(api, app):
    admin = api.admin(app)
    worker = active_worker(api, admin)
    case = _flag(api, admin, worker)
    steps = [
        ("ban", "ban", "banned"),
        ("confirm", "ban", "banned"),  # confirming keeps a ban a ban
        ("suspend", "suspend", "suspended"),
        ("restrict", "restrict", "active"),
        ("suspend", "suspend", "suspended"),
        ("lift", "none", "active"),
    ]
    for decision, action, status in steps:
        decided = _decide(api, admin, case["id"], decision)
        assert (decided["action"], decided["worker"]["status"]) == (action, status), decision
    me = api.get("/api/v1/workers/me", worker.token).get_json()
    assert me["status"] == "active"


def test_a_confirmed_ring_s_labels_are_redone_and_the_final_labels_change(
    api, app, db_session, manual_clock
):
    """Two colluders agree on the wrong label and close every task; once confirmed, their
    judgments are voided, honest workers judge the re-opened tasks, and the export's labels
    are now the right ones, decided without the voided votes."""
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=4, redundancy=THREE)
    ring = [active_worker(api, admin) for _ in range(2)]
    for member in ring:
        assert len(_judge_all(api, member, job["id"], "dog", manual_clock)) == 4

    def export():
        response = api.get(f"/api/v1/jobs/{job['id']}/results?detail=true", client.token)
        return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]

    before = export()
    assert [(line["status"], line["answer"]) for line in before] == [("completed", "dog")] * 4
    for member in ring:
        case = _flag(api, admin, member, "agrees with one other account on everything")
        assert _decide(api, admin, case["id"], "confirm")["voiding"]["voided"] == 4
    assert {line["status"] for line in export()} == {"open"}

    honest = [active_worker(api, admin) for _ in range(2)]
    for worker in honest:
        assert len(_judge_all(api, worker, job["id"], "cat", manual_clock)) == 4
    after = export()
    assert [(line["status"], line["answer"]) for line in after] == [("completed", "cat")] * 4
    for line in after:
        assert line["judgments"] == 2  # the voided votes are not counted
        assert {d["status"] for d in line["detail"]} >= {"accepted"}
        voided = [d for d in line["detail"] if d["status"] == "voided"]
        assert all(d["answer"] == "dog" for d in voided)
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    assert_ledger_consistent(db_session)
