"""Fraud signals: each fires on a crafted pattern and stays silent on honest work."""

from __future__ import annotations

from jobs.models import Assignment, AssignmentStatus, Task, TaskStatus
from marketplace import clock
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, add_tasks, create_job, fund, lease
from tests.workforce import worker_id


def _do(api, worker, job_id, answer, clock_, seconds, active_seconds=None, headers=None):
    """Lease, spend `seconds` on the test clock, submit; returns the submitted assignment."""
    leased = api.post(
        "/api/v1/assignments", worker.token, json={"job_id": job_id}, headers=headers or {}
    )
    assert leased.status_code == 201, leased.get_json()
    clock_.advance(seconds)
    body = {"answer": answer}
    if active_seconds is not None:
        body["active_seconds"] = active_seconds
    submitted = api.post(
        f"/api/v1/assignments/{leased.get_json()['id']}/submit", worker.token, json=body
    )
    assert submitted.status_code == 200, submitted.get_json()
    return submitted.get_json()


def _risk(api, admin, worker):
    response = api.get(f"/api/v1/workers/{worker_id(api, worker)}/risk", admin.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _kinds(risk):
    return {s["kind"] for s in risk["signals"]}


def test_too_fast_answers_flag_the_worker_and_honest_pace_does_not(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api, app, client, tasks=8, redundancy={"min": 3, "max": 3, "target_confidence": 0.9}
    )
    honest = [active_worker(api, admin) for _ in range(2)]
    for n, worker in enumerate(honest):
        for i in range(6):
            _do(api, worker, job["id"], "cat", manual_clock, 25 + 7 * i + n * 3)
    fast = active_worker(api, admin)
    # Reported active time gives a worker away even when the lease was held long enough.
    _do(api, fast, job["id"], "cat", manual_clock, 30, active_seconds=1.0)
    _do(api, fast, job["id"], "cat", manual_clock, 1.5)
    _do(api, fast, job["id"], "dog", manual_clock, 1.2)
    # 5 s: above the floor, but under a quarter of the job's ~40 s median
    _do(api, fast, job["id"], "dog", manual_clock, 5)

    risk = _risk(api, admin, fast)
    (signal,) = risk["signals"]
    assert signal["kind"] == "too_fast" and signal["job_id"] == job["id"]
    assert signal["evidence"]["fast"] == 4 and signal["evidence"]["below_floor"] == 3
    assert signal["evidence"]["examples"][0]["seconds"] == 5
    assert signal["evidence"]["examples"][0]["job_median_seconds"] > 20
    assert risk["risk_score"] == signal["weight"] > 0.3
    assert risk["action"] == "flag"
    for worker in honest:
        assert _risk(api, admin, worker)["signals"] == []
    queue = api.get("/api/v1/fraud/cases?status=open", admin.token).get_json()
    assert [c["worker"]["pseudonym"] for c in queue["items"]] == [risk["worker"]["pseudonym"]]
    case = queue["items"][0]
    assert case["action"] == "flag" and case["risk_score"] == risk["risk_score"]
    # speed alone never restricts: the worker still gets ordinary leases
    assert lease(api, fast, job["id"]).status_code == 201


def _screening(api, app, manual_clock, honest_slip=None):
    """A screening job: one real item (leased first, the gold rate being 0) and five gold
    items (answer "cat"; a job of gold alone would complete at once), done by a cheat who
    always answers "dog" and an honest worker who answers "cat" (but "dog" at honest_slip).
    Returns (admin, client, screening job, cheat, honest)."""
    admin = api.admin(app)
    client = api.signup("client")
    screening = create_job(api, client)
    add_tasks(app, screening["id"], 1, gold=5)
    fund(api, client, screening["id"], 10_000)
    api.post(f"/api/v1/jobs/{screening['id']}/activate", client.token)
    cheat, honest = active_worker(api, admin), active_worker(api, admin)
    for i in range(6):
        _do(api, cheat, screening["id"], "dog", manual_clock, 20 + 9 * i)
        answer = "dog" if i == honest_slip else "cat"
        _do(api, honest, screening["id"], answer, manual_clock, 22 + 8 * i)
    return admin, client, screening, cheat, honest


def test_failing_gold_restricts_and_restricted_workers_get_gold_heavy_leases(
    api, app, manual_clock, db_session
):
    admin, client, _, cheat, honest = _screening(api, app, manual_clock, honest_slip=3)

    risk = _risk(api, admin, cheat)
    assert _kinds(risk) == {"gold_failed"}
    evidence = risk["signals"][0]["evidence"]
    assert (evidence["gold_judged"], evidence["gold_failed"]) == (5, 5)
    assert risk["risk_score"] >= 0.6 and risk["action"] == "restrict"
    # one miss in five is honest noise
    assert _risk(api, admin, honest)["signals"] == []
    standing = api.get("/api/v1/workers/me/fraud-standing", cheat.token).get_json()
    assert standing["action"] == "restrict" and standing["reasons"] == ["gold_failed"]
    assert standing["worker_status"] == "active"

    # A job with no gold rate: the restricted worker is fed gold, the honest one is not.
    job = create_job(api, client, gold_rate=0.0)
    add_tasks(app, job["id"], 30, gold=30)
    fund(api, client, job["id"], 100_000)
    api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)

    def gold_share(worker):
        gold = 0
        for _ in range(20):
            leased = lease(api, worker, job["id"]).get_json()
            gold += db_session.get(Task, leased["task"]["id"]).is_gold
            api.post(f"/api/v1/assignments/{leased['id']}/release", worker.token, json={})
        return gold / 20

    assert gold_share(cheat) >= 0.6  # 0.9 expected
    assert gold_share(honest) == 0.0


def test_machine_regular_timing(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=12)
    bot, person = active_worker(api, admin), active_worker(api, admin)
    person_times = [12, 31, 18, 44, 25, 15, 37, 21, 29, 52, 17, 33]
    for i in range(12):
        _do(api, bot, job["id"], "cat", manual_clock, 20.0 + 0.1 * (i % 3))
        _do(api, person, job["id"], "cat", manual_clock, person_times[i])
    risk = _risk(api, admin, bot)
    assert _kinds(risk) == {"regular_timing"}
    evidence = risk["signals"][0]["evidence"]
    assert evidence["samples"] >= 10 and evidence["cv"] < 0.05
    assert risk["action"] == "flag"
    assert _risk(api, admin, person)["signals"] == []


# --- periodic scans ------------------------------------------------------------------------


def _judgments(app, job_id, task_ids, worker_ids, answer_of, *, gold_ids=(), gold_answer="cat"):
    """Record judgments straight in the database: answer_of(worker_index, task_index)."""
    from marketplace.database import db

    with app.app_context():
        now = clock.now()
        for t, task_id in enumerate(task_ids):
            for w, wid in enumerate(worker_ids):
                answer = answer_of(w, t)
                gold = task_id in gold_ids
                db.session.add(
                    Assignment(
                        task_id=task_id,
                        job_id=job_id,
                        worker_id=wid,
                        status=(
                            AssignmentStatus.ACCEPTED
                            if not gold or answer == gold_answer
                            else AssignmentStatus.REJECTED
                        ),
                        leased_at=now,
                        lease_expires_at=now,
                        ended_at=now,
                        submitted_at=now,
                        answer=answer,
                        server_seconds=30.0,
                        is_gold=gold,
                        gold_correct=(answer == gold_answer) if gold else None,
                    )
                )
        db.session.commit()


def test_scan_finds_degenerate_random_and_colluding_workers(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, redundancy={"min": 7, "max": 7, "target_confidence": 0.9})
    task_ids = add_tasks(app, job["id"], 20, gold=2)
    gold_ids = set(task_ids[20:])
    workers = [active_worker(api, admin) for _ in range(7)]
    ids = [worker_id(api, w) for w in workers]
    truth = ["cat" if t % 2 == 0 else "dog" for t in range(20)] + ["cat", "cat"]
    flip = {"cat": "dog", "dog": "cat"}

    def answer_of(w, t):
        if w < 3:  # honest
            return truth[t]
        if w == 3:  # always the same label
            return "cat"
        if w == 4:  # random: uncorrelated with the truth
            return "cat" if t % 4 < 2 else "dog"
        # w 5 and 6 copy each other, 30 % wrong, and wrong together on both gold items
        return flip[truth[t]] if t % 10 in (0, 3, 7) or t >= 20 else truth[t]

    _judgments(app, job["id"], task_ids, ids, answer_of, gold_ids=gold_ids)
    for t, task_id in enumerate(task_ids[:20]):
        task = db_session.get(Task, task_id)
        task.status, task.final_answer, task.submitted_count = TaskStatus.COMPLETED, truth[t], 7
    db_session.commit()

    scan = api.post("/api/v1/fraud/scans", admin.token, json={"job_id": job["id"]})
    assert scan.status_code == 200, scan.get_json()
    assert scan.get_json()["jobs_scanned"] == 1
    risks = [_risk(api, admin, w) for w in workers]
    for honest in risks[:3]:
        assert honest["signals"] == [], honest
    assert _kinds(risks[3]) == {"degenerate", "random_answers"}
    degenerate = next(s for s in risks[3]["signals"] if s["kind"] == "degenerate")
    assert degenerate["evidence"]["share"] == 1.0
    assert risks[3]["action"] == "restrict"
    assert _kinds(risks[4]) == {"random_answers"}
    assert risks[4]["signals"][0]["evidence"]["chance_agreement"] == 0.5
    for me, partner in ((5, 6), (6, 5)):
        assert _kinds(risks[me]) == {"collusion"}
        evidence = risks[me]["signals"][0]["evidence"]
        assert evidence["partner"] == risks[partner]["worker"]["pseudonym"]
        assert evidence["agreement"] == 1.0 and evidence["expected_agreement"] < 0.7
        assert evidence["gold_wrong_together"] == 2

    # A second run refreshes the same signals: nothing is counted twice.
    again = api.post("/api/v1/fraud/scans", admin.token, json={"job_id": job["id"]}).get_json()
    assert again["signals_changed"] == {}
    assert [_risk(api, admin, w)["risk_score"] for w in workers] == [r["risk_score"] for r in risks]


def test_scan_finds_accounts_sharing_a_device(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(api, app, client, tasks=4)
    twin_a, twin_b, other = (active_worker(api, admin) for _ in range(3))
    for worker, fingerprint in ((twin_a, "device-1"), (twin_b, "device-1"), (other, "device-2")):
        _do(
            api,
            worker,
            job["id"],
            "cat",
            manual_clock,
            30,
            headers={"X-Client-Fingerprint": fingerprint},
        )
    result = api.post("/api/v1/fraud/scans", admin.token, json={}).get_json()
    assert result["signals_changed"]["shared_device"] == 2
    a, b, c = (_risk(api, admin, w) for w in (twin_a, twin_b, other))
    device = next(s for s in a["signals"] if s["kind"] == "shared_device")
    assert device["evidence"] == {"accounts": 2, "other_workers": [b["worker"]["pseudonym"]]}
    assert "shared_device" in _kinds(b)
    # All three come from one test address: a shared network is weak evidence on its own.
    assert _kinds(c) == {"shared_network"} and c["risk_score"] < 0.3 and c["action"] == "none"


def test_scans_are_for_platform_admins_and_validate_input(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    assert_problem(api.post("/api/v1/fraud/scans", vendor.token, json={}), 403)
    assert_problem(
        api.post("/api/v1/fraud/scans", admin.token, json={"job_id": "x"}), 422, field="job_id"
    )
    assert_problem(api.post("/api/v1/fraud/scans", admin.token, json={"job_id": 999}), 404)


def test_periodic_scan_is_registered_and_runs(app):
    from jobs.fraud_scan import scheduled_scan
    from marketplace.background import PERIODIC_JOBS

    assert "jobs.fraud_scan.scheduled_scan" in {p.path for p in PERIODIC_JOBS}
    with app.app_context():
        assert scheduled_scan()["jobs_scanned"] == 0
    runner = app.test_cli_runner()
    result = runner.invoke(args=["crowdline", "fraud-scan"])
    assert result.exit_code == 0, result.output
    assert '"jobs_scanned": 0' in result.output


def test_very_strong_evidence_suspends_automatically_but_never_bans(api, app, manual_clock):
    admin = api.admin(app)
    client = api.signup("client")
    screening = create_job(api, client)
    add_tasks(app, screening["id"], 1, gold=5)
    fund(api, client, screening["id"], 10_000)
    api.post(f"/api/v1/jobs/{screening['id']}/activate", client.token)
    cheat, sock_puppet = active_worker(api, admin), active_worker(api, admin)
    device = {"X-Client-Fingerprint": "farm-phone-7"}
    for i in range(6):  # fast, and failing every gold item
        _do(api, cheat, screening["id"], "dog", manual_clock, 1 + 0.1 * i, headers=device)
    assert _risk(api, admin, cheat)["action"] == "restrict"
    _do(api, sock_puppet, screening["id"], "cat", manual_clock, 25, headers=device)

    api.post("/api/v1/fraud/scans", admin.token, json={})
    risk = _risk(api, admin, cheat)
    assert {"gold_failed", "too_fast", "shared_device"} <= _kinds(risk)
    assert risk["risk_score"] >= 0.9 and risk["action"] == "suspend"
    standing = api.get("/api/v1/workers/me/fraud-standing", cheat.token).get_json()
    assert (standing["worker_status"], standing["action"]) == ("suspended", "suspend")
    assert_problem(lease(api, cheat, screening["id"]), 403)
    # the other account has one strong signal only: flagged for review, still working
    puppet = _risk(api, admin, sock_puppet)
    assert puppet["action"] in ("flag", "restrict")
    assert api.get("/api/v1/workers/me", sock_puppet.token).get_json()["status"] == "active"


def test_scan_finds_fixed_boxes_and_low_agreement(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    boxes = create_job(api, client, answer_spec={"type": "bbox", "labels": ["car"]})
    box_tasks = add_tasks(app, boxes["id"], 12)
    choice = create_job(
        api, client, answer_spec={"type": "single_choice", "labels": ["a", "b", "c", "d"]}
    )
    choice_tasks = add_tasks(app, choice["id"], 12)
    workers = [active_worker(api, admin) for _ in range(4)]
    ids = [worker_id(api, w) for w in workers]

    def box(t, w):
        # people draw where the car is (a little differently); worker 3 always the same box
        if w == 3:
            return [{"x": 10, "y": 10, "w": 50, "h": 50, "label": "car"}]
        return [{"x": 5 * t + w, "y": 40 + t, "w": 30 + t, "h": 20, "label": "car"}]

    _judgments(app, boxes["id"], box_tasks, ids, lambda w, t: box(t, w))
    truth = ["abcd"[t % 4] for t in range(12)]
    # worker 3 agrees with the final label half the time: twice chance with 4 labels, but low
    _judgments(
        app,
        choice["id"],
        choice_tasks,
        ids,
        lambda w, t: truth[t] if w < 3 or t % 2 == 0 else "abcd"[(t + 1) % 4],
    )
    for t, task_id in enumerate(choice_tasks):
        task = db_session.get(Task, task_id)
        task.status, task.final_answer = TaskStatus.COMPLETED, truth[t]
    db_session.commit()

    for job in (boxes, choice):
        assert (
            api.post("/api/v1/fraud/scans", admin.token, json={"job_id": job["id"]}).status_code
            == 200
        )
    risks = [_risk(api, admin, w) for w in workers]
    for honest in risks[:3]:
        assert honest["signals"] == [], honest
    by_kind = {s["kind"]: s for s in risks[3]["signals"]}
    assert set(by_kind) == {"degenerate", "low_agreement"}
    assert by_kind["degenerate"]["job_id"] == boxes["id"]
    assert by_kind["degenerate"]["evidence"]["share"] == 1.0
    assert by_kind["low_agreement"]["job_id"] == choice["id"]
    assert by_kind["low_agreement"]["evidence"]["agreement"] == 0.5


def test_pay_of_a_worker_the_engine_restricted_waits_for_the_review(
    api, app, manual_clock, db_session, monkeypatch
):
    from billing.tasks import mature_earnings

    monkeypatch.setattr(app.config["CROWDLINE"], "qa_window_seconds", 600)
    admin, client, screening, cheat, honest = _screening(api, app, manual_clock)
    assert _risk(api, admin, cheat)["action"] == "restrict"  # the engine's, not yet reviewed
    for worker, key in ((cheat, "b-cheat"), (honest, "b-honest")):
        pseudonym = api.get("/api/v1/workers/me", worker.token).get_json()["pseudonym"]
        bonus = api.post(
            f"/api/v1/jobs/{screening['id']}/bonuses",
            client.token,
            json={"worker": pseudonym, "amount": 40, "reason": "thanks"},
            headers={"Idempotency-Key": key},
        )
        assert bonus.status_code == 201, bonus.get_json()

    def balance(worker):
        body = api.get("/api/v1/workers/me/balance", worker.token).get_json()
        return body["pending"]["amount"], body["available"]["amount"]

    def standing(worker):
        return api.get("/api/v1/workers/me/fraud-standing", worker.token).get_json()

    honest_pending = balance(honest)[0]
    assert balance(cheat) == (40, 0) and honest_pending > 40  # the honest one's gold pay too
    assert standing(cheat)["pay_on_hold"] is True and standing(honest)["pay_on_hold"] is False
    manual_clock.advance(700)
    with app.app_context():
        assert mature_earnings() > 0
    assert balance(honest) == (0, honest_pending)
    assert balance(cheat) == (40, 0)  # past its QA window, but held for the review

    cases = api.get("/api/v1/fraud/cases?limit=100", admin.token).get_json()["items"]
    (case,) = [c for c in cases if c["worker"]["id"] == worker_id(api, cheat)]
    dismissed = api.post(
        f"/api/v1/fraud/cases/{case['id']}/decision",
        admin.token,
        json={"action": "dismiss", "note": "a bad day"},
    )
    assert dismissed.status_code == 200, dismissed.get_json()
    assert standing(cheat)["pay_on_hold"] is False
    with app.app_context():
        assert mature_earnings() == 1
    assert balance(cheat) == (0, 40)
