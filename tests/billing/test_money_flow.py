from __future__ import annotations

import threading

from sqlalchemy import func, select

from billing.models import Earning, Hold, LedgerTransaction, OwnerType, Purpose
from marketplace.database import db
from tests.billing.helpers import assert_ledger_consistent
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, create_job, fund, lease

PRICE = 5  # job_body's price; the platform fee is 20 % → 1; a hold is 6


def _balance(app, owner_type, owner_id, purpose):
    from billing import ledger

    with app.app_context():
        return ledger.current_balance(owner_type, owner_id, purpose, "USD")


def test_funding_is_credited_to_the_job_once(api, app, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    headers = {"Idempotency-Key": "fund-1"}
    body = {"amount": {"amount": 1000, "currency": "USD"}}
    first = api.post(f"/api/v1/jobs/{job['id']}/fund", client.token, json=body, headers=headers)
    again = api.post(f"/api/v1/jobs/{job['id']}/fund", client.token, json=body, headers=headers)
    assert first.status_code == 201 and first.get_json()["status"] == "succeeded"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 1000
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "funding")
        )
        == 1
    )
    assert_ledger_consistent(db_session)


def test_bad_amounts_are_refused_and_change_nothing(api, app, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    for amount in (0, -5, 1.5, "ten", {"amount": 100, "currency": "JPY"}, 10**13):
        response = api.post(
            f"/api/v1/jobs/{job['id']}/fund",
            client.token,
            json={"amount": amount},
            headers={"Idempotency-Key": f"bad-{amount!r}"},
        )
        assert_problem(response, 422, field="amount")
    eur = api.post(
        f"/api/v1/jobs/{job['id']}/fund",
        client.token,
        json={"amount": {"amount": 100, "currency": "EUR"}},
        headers={"Idempotency-Key": "eur"},
    )
    assert_problem(eur, 422, field="amount")
    no_key = api.post(f"/api/v1/jobs/{job['id']}/fund", client.token, json={"amount": 100})
    assert_problem(no_key, 422, field="Idempotency-Key")
    assert db_session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0


def test_lease_holds_release_frees_and_acceptance_settles(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        budget=600,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9},
    )
    worker = active_worker(api, admin)
    first = lease(api, worker, job["id"]).get_json()
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.HOLDS) == 6
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 594
    api.post(f"/api/v1/assignments/{first['id']}/release", worker.token, json={})
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.HOLDS) == 0
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 600
    other = active_worker(api, admin)
    second = lease(api, other, job["id"]).get_json()
    api.post(f"/api/v1/assignments/{second['id']}/submit", other.token, json={"answer": "cat"})
    balance = api.get("/api/v1/workers/me/balance", other.token).get_json()
    assert balance["pending"] == {"amount": PRICE, "currency": "USD"}
    assert balance["available"]["amount"] == 0
    assert _balance(app, OwnerType.PLATFORM, 0, Purpose.FEES) == 1
    spend = api.get(f"/api/v1/jobs/{job['id']}/spend", client.token).get_json()
    assert spend["funded"]["amount"] == 600
    assert spend["settled"]["amount"] == 6
    assert spend["free"]["amount"] == 594
    assert_ledger_consistent(db_session)


def test_earnings_become_available_after_the_qa_window(api, app, manual_clock, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api, app, client, tasks=1, redundancy={"min": 1, "max": 1, "target_confidence": 0.9}
    )
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    api.post(f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "dog"})
    from billing.tasks import mature_earnings

    with app.app_context():
        assert mature_earnings() == 0
    manual_clock.advance(app.config["CROWDLINE"].qa_window_seconds + 1)
    with app.app_context():
        assert mature_earnings() == 1
    token = api.login(worker.email)["access_token"]
    balance = api.get("/api/v1/workers/me/balance", token).get_json()
    assert (balance["pending"]["amount"], balance["available"]["amount"]) == (0, PRICE)
    earnings = api.get("/api/v1/workers/me/earnings", token).get_json()["items"]
    assert [(e["kind"], e["status"]) for e in earnings] == [("judgment", "available")]
    assert_ledger_consistent(db_session)


def test_leasing_stops_when_the_budget_runs_out(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    # two holds' worth of budget, five tasks
    job = active_job(
        api,
        app,
        client,
        tasks=5,
        budget=12,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9},
    )
    workers = [active_worker(api, admin) for _ in range(3)]
    assert lease(api, workers[0], job["id"]).status_code == 201
    assert lease(api, workers[1], job["id"]).status_code == 201
    assert lease(api, workers[2], job["id"]).status_code == 204
    fund(api, client, job["id"], 6)
    assert lease(api, workers[2], job["id"]).status_code == 201
    assert_ledger_consistent(db_session)


def test_spend_never_exceeds_funding_under_concurrency(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    budget = 6 * 7  # seven holds
    job = active_job(
        api,
        app,
        client,
        tasks=30,
        budget=budget,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9},
    )
    workers = [active_worker(api, admin) for _ in range(12)]
    results: list[int] = []

    def work(worker):
        client_ = app.test_client()
        response = client_.post(
            "/api/v1/assignments",
            json={"job_id": job["id"]},
            headers={"Authorization": f"Bearer {worker.token}"},
        )
        results.append(response.status_code)
        if response.status_code == 201:
            client_.post(
                f"/api/v1/assignments/{response.get_json()['id']}/submit",
                json={"answer": "cat"},
                headers={"Authorization": f"Bearer {worker.token}"},
            )

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) in ([201, 204], [201])
    assert results.count(201) == 7
    with app.app_context():
        settled = db.session.scalar(select(func.count()).select_from(Hold))
        assert settled == 7
    escrow = _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW)
    held = _balance(app, OwnerType.JOB, job["id"], Purpose.HOLDS)
    assert escrow == 0 and held == 0
    assert db_session.scalar(select(func.sum(Earning.amount))) == 7 * PRICE
    assert_ledger_consistent(db_session)


def test_bonus_only_to_workers_of_the_job_and_idempotent(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api, app, client, tasks=1, redundancy={"min": 1, "max": 1, "target_confidence": 0.9}
    )
    worker = active_worker(api, admin)
    stranger = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    api.post(f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "cat"})
    pseudonym = api.get("/api/v1/workers/me", worker.token).get_json()["pseudonym"]
    body = {"worker": pseudonym, "amount": 50, "reason": "careful work"}
    headers = {"Idempotency-Key": "bonus-1"}
    first = api.post(f"/api/v1/jobs/{job['id']}/bonuses", client.token, json=body, headers=headers)
    again = api.post(f"/api/v1/jobs/{job['id']}/bonuses", client.token, json=body, headers=headers)
    assert first.status_code == 201, first.get_json()
    assert again.get_json() == first.get_json()
    assert api.get("/api/v1/workers/me/balance", worker.token).get_json()["pending"]["amount"] == 55
    other = api.get("/api/v1/workers/me", stranger.token).get_json()["pseudonym"]
    response = api.post(
        f"/api/v1/jobs/{job['id']}/bonuses",
        client.token,
        json={**body, "worker": other},
        headers={"Idempotency-Key": "bonus-2"},
    )
    assert_problem(response, 404, field="worker")
    too_much = api.post(
        f"/api/v1/jobs/{job['id']}/bonuses",
        client.token,
        json={**body, "amount": 10**9},
        headers={"Idempotency-Key": "bonus-3"},
    )
    assert_problem(too_much, 409)
    assert db_session.scalar(select(func.count()).select_from(Earning)) == 2
    assert_ledger_consistent(db_session)


def test_refund_of_unused_budget(api, app, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    fund(api, client, job["id"], 1000)
    response = api.post(
        f"/api/v1/jobs/{job['id']}/refund",
        client.token,
        json={"amount": 400},
        headers={"Idempotency-Key": "refund-1"},
    )
    assert response.status_code == 201, response.get_json()
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 600
    too_much = api.post(
        f"/api/v1/jobs/{job['id']}/refund",
        client.token,
        json={"amount": 601},
        headers={"Idempotency-Key": "refund-2"},
    )
    assert_problem(too_much, 409)
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 600
    assert_ledger_consistent(db_session)


def test_voided_judgment_pay_is_reversed_while_pending(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api,
        app,
        client,
        tasks=1,
        budget=600,
        redundancy={"min": 1, "max": 1, "target_confidence": 0.9},
    )
    worker = active_worker(api, admin)
    assignment = lease(api, worker, job["id"]).get_json()
    api.post(f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "cat"})
    from jobs import money
    from jobs.models import Assignment

    with app.app_context():
        row = db.session.get(Assignment, assignment["id"])
        assert money.reverse_judgment(row, "fraud confirmed") is True
        assert money.reverse_judgment(row, "fraud confirmed") is False
        db.session.commit()
    assert api.get("/api/v1/workers/me/balance", worker.token).get_json()["pending"]["amount"] == 0
    assert _balance(app, OwnerType.JOB, job["id"], Purpose.ESCROW) == 600
    assert _balance(app, OwnerType.PLATFORM, 0, Purpose.FEES) == 0
    assert_ledger_consistent(db_session)
