"""Payout accounts, payout runs, payout history, statements and the admins' payout desk."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from sqlalchemy import func, select

from billing import payout_accounts, payouts
from billing.gateway import ConnectedAccount, OfflineGateway, install
from billing.models import (
    LedgerTransaction,
    Payout,
    PayoutAccount,
    PayoutAccountStatus,
    PayoutStatus,
    Purpose,
)
from marketplace.cli import crowdline_cli
from marketplace.models import AuditEvent
from tests.billing.helpers import assert_ledger_consistent
from tests.billing.payout_helpers import (
    assert_money_kept,
    balance,
    connected_worker,
    credit_available,
    kinds,
    run_payouts,
)
from tests.helpers import assert_problem
from tests.jobs.helpers import active_job, active_worker, lease
from tests.workforce import worker_id

ACCOUNT = "/api/v1/workers/me/payout-account"


@pytest.fixture(autouse=True)
def gateway(app):
    """A fresh offline gateway for each test (its records start empty)."""
    saved = app.extensions.get("crowdline.gateway")
    fresh = OfflineGateway()
    install(app, fresh)
    yield fresh
    if saved is None:
        app.extensions.pop("crowdline.gateway", None)
    else:
        install(app, saved)


class OnboardingGateway(OfflineGateway):
    """Connected accounts start without payouts; `enable()` finishes their onboarding."""

    def __init__(self):
        super().__init__()
        self.enabled: set[str] = set()

    def create_connected_account(self, email, country, idempotency_key):
        found = super().create_connected_account(email, country, idempotency_key)
        return ConnectedAccount(found.id, payouts_enabled=found.id in self.enabled)

    def retrieve_account(self, account_id):
        return ConnectedAccount(account_id, payouts_enabled=account_id in self.enabled)


# --- payout accounts ----------------------------------------------------------------------


def test_a_worker_connects_a_payout_account_once(api, app, db_session):
    worker = api.signup("worker")
    first = api.post(ACCOUNT, worker.token, json={"country": "DE"})
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["status"] == "ready" and body["country"] == "DE"
    assert body["processor_account_id"] in body["onboarding_url"]
    assert body["onboarding_url"].startswith("http://localhost/api/v1/workers/me/payout-account")
    again = api.post(
        ACCOUNT,
        worker.token,
        json={"country": "DE", "return_url": "https://app.example.org/payouts/done"},
    )
    assert again.status_code == 200
    assert again.get_json()["id"] == body["id"]
    assert again.get_json()["onboarding_url"].startswith("https://app.example.org/payouts/done")
    shown = api.get(ACCOUNT, worker.token).get_json()
    assert (shown["id"], shown["status"], shown["onboarding_url"]) == (body["id"], "ready", None)
    assert db_session.scalar(select(func.count()).select_from(PayoutAccount)) == 1
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "billing.payout_account_opened")
        )
        == 1
    )


def test_bad_payout_account_input_is_refused(api, app, db_session):
    worker = api.signup("worker")
    for country in ("XX", "us", "USA", "", 12, None):
        assert_problem(
            api.post(ACCOUNT, worker.token, json={"country": country}), 422, field="country"
        )
    assert_problem(api.post(ACCOUNT, worker.token, json={}), 422, field="country")
    assert_problem(
        api.post(ACCOUNT, worker.token, json={"country": "US", "return_url": "javascript:x"}),
        422,
        field="return_url",
    )
    assert db_session.scalar(select(func.count()).select_from(PayoutAccount)) == 0
    assert api.post(ACCOUNT, worker.token, json={"country": "US"}).status_code == 201
    # A connected account's country cannot change.
    assert_problem(api.post(ACCOUNT, worker.token, json={"country": "FR"}), 422, field="country")


def test_only_workers_have_payout_accounts(api, app):
    client = api.signup("client")
    assert_problem(api.post(ACCOUNT, client.token, json={"country": "US"}), 403)
    assert_problem(api.get(ACCOUNT, client.token), 403)
    worker = api.signup("worker")
    assert_problem(api.get(ACCOUNT, worker.token), 404)
    read_only = api.login(worker.email, scope="billing:read")["access_token"]
    assert_problem(api.post(ACCOUNT, read_only, json={"country": "US"}), 403)
    assert_problem(api.get(ACCOUNT), 401)


def test_onboarding_accounts_become_ready_and_can_be_restricted(api, app, gateway):
    onboarding = OnboardingGateway()
    install(app, onboarding)
    worker = api.signup("worker")
    created = api.post(ACCOUNT, worker.token, json={"country": "US"}).get_json()
    assert created["status"] == "onboarding"
    assert api.get(ACCOUNT, worker.token).get_json()["status"] == "onboarding"
    onboarding.enabled.add(created["processor_account_id"])
    assert api.get(ACCOUNT, worker.token).get_json()["status"] == "ready"
    # What the account.updated webhook calls.
    with app.app_context():
        changed = payout_accounts.mark_payout_account(created["processor_account_id"], False)
        assert changed.status == PayoutAccountStatus.RESTRICTED
        assert payout_accounts.mark_payout_account("acct_not_ours", True) is None
    assert api.get(ACCOUNT, worker.token).get_json()["status"] == "restricted"
    with app.app_context():
        payout_accounts.mark_payout_account(created["processor_account_id"], True)
    assert api.get(ACCOUNT, worker.token).get_json()["status"] == "ready"


# --- the payout run -----------------------------------------------------------------------


def test_a_run_pays_ready_workers_at_or_above_the_minimum(api, app, db_session, gateway):
    minimum = app.config["CROWDLINE"].payout_minimum
    _, paid = connected_worker(api)
    _, exact = connected_worker(api)
    _, below = connected_worker(api)
    unconnected = worker_id(api, api.signup("worker"))
    install(app, OnboardingGateway())
    _, onboarding = connected_worker_onboarding(api)
    install(app, gateway)
    credit_available(app, paid, 1234)
    credit_available(app, exact, minimum)
    credit_available(app, below, minimum - 1)
    credit_available(app, unconnected, 5000)
    credit_available(app, onboarding, 5000)

    summary = run_payouts(app)
    assert (summary.created, summary.paid, summary.failed, summary.retrying) == (2, 2, 0, 0)
    assert summary.paid_amounts == {"USD": 1234 + minimum}
    assert sorted(gateway.records().transfers.values()) == sorted([1234, minimum])
    rows = db_session.scalars(select(Payout).order_by(Payout.id)).all()
    assert [(p.worker_id, p.amount, p.status, p.attempts) for p in rows] == [
        (paid, 1234, PayoutStatus.PAID, 1),
        (exact, minimum, PayoutStatus.PAID, 1),
    ]
    assert all(re.fullmatch(rf"payout-{p.id}-[0-9a-f]{{8}}", p.idempotency_key) for p in rows)
    assert all(p.processor_transfer_id in gateway.records().transfers for p in rows)
    for worker, available in ((below, minimum - 1), (unconnected, 5000), (onboarding, 5000)):
        assert balance(db_session, worker, Purpose.AVAILABLE) == available
    assert kinds(db_session, paid) == ["test_credit", "payout", "payout_paid"]
    for worker in (paid, exact, below, unconnected, onboarding):
        assert_money_kept(db_session, worker)
        assert balance(db_session, worker, Purpose.PAYOUT_CLEARING) == 0
    # A second run finds nothing to do.
    assert run_payouts(app).as_dict()["created"] == 0
    assert_ledger_consistent(db_session)


def connected_worker_onboarding(api):
    worker = api.signup("worker")
    response = api.post(ACCOUNT, worker.token, json={"country": "US"})
    assert response.get_json()["status"] == "onboarding"
    return worker, worker_id(api, worker)


def test_balances_show_money_in_payout_and_paid(api, app, db_session):
    worker, wid = connected_worker(api)
    credit_available(app, wid, 900)
    run_payouts(app)
    credit_available(app, wid, 300)
    balances = api.get("/api/v1/workers/me/balance", worker.token).get_json()
    assert balances["paid"] == {"amount": 900, "currency": "USD"}
    assert balances["available"]["amount"] == 300
    assert balances["in_payout"]["amount"] == 0
    assert_ledger_consistent(db_session)


def test_batches_cover_every_worker(api, app, db_session, gateway):
    workers = [connected_worker(api)[1] for _ in range(7)]
    for n, wid in enumerate(workers):
        credit_available(app, wid, 500 + n)
    seen = []
    summary = run_payouts(app, batch_size=3, progress=seen.append)
    assert summary.paid == 7
    assert [e.outcome for e in seen] == ["created"] * 3 + ["paid"] * 3 + ["created"] * 3 + [
        "paid"
    ] * 3 + ["created", "paid"]
    assert sorted(e.worker_id for e in seen if e.outcome == "paid") == sorted(workers)
    assert len(gateway.records().transfers) == 7
    for wid in workers:
        assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_concurrent_runs_pay_each_worker_once(api, app, db_session, gateway):
    workers = [connected_worker(api)[1] for _ in range(6)]
    for wid in workers:
        credit_available(app, wid, 700)
    errors = []

    def run():
        try:
            run_payouts(app, batch_size=2)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    per_worker = dict(
        db_session.execute(select(Payout.worker_id, func.count()).group_by(Payout.worker_id)).all()
    )
    assert per_worker == {wid: 1 for wid in workers}
    assert sorted(gateway.records().transfers.values()) == [700] * 6
    assert (
        db_session.scalar(
            select(func.count()).select_from(Payout).where(Payout.status == PayoutStatus.PAID)
        )
        == 6
    )
    for wid in workers:
        assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_payouts_in_each_currency(api, app, db_session, gateway):
    _, wid = connected_worker(api)
    credit_available(app, wid, 800, "USD")
    credit_available(app, wid, 600, "EUR")
    credit_available(app, wid, 100, "GBP")
    summary = run_payouts(app)
    assert summary.paid_amounts == {"USD": 800, "EUR": 600}
    assert balance(db_session, wid, Purpose.AVAILABLE, "GBP") == 100
    assert_ledger_consistent(db_session)


def test_the_cli_runs_payouts_and_reports(api, app, db_session):
    _, wid = connected_worker(api)
    credit_available(app, wid, 2500)
    result = app.test_cli_runner().invoke(crowdline_cli, ["payouts", "run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "0 pending payout(s) to retry, 1 balance(s) due a payout"
    assert f"worker {wid} 2500 USD: created" in result.output
    assert f"worker {wid} 2500 USD: paid (tr_offline_" in result.output
    assert lines[-1] == "done: 1 created, 1 attempted, 1 paid (2500 USD), 0 to retry, 0 failed"
    assert balance(db_session, wid, Purpose.AVAILABLE) == 0


def test_the_periodic_job_is_registered(app):
    from billing import tasks
    from marketplace.background import PERIODIC_JOBS

    assert "billing.tasks.run_payouts" in [job.path for job in PERIODIC_JOBS]
    with app.app_context():
        assert tasks.run_payouts()["paid"] == 0


# --- earning, maturing, paying, and the statement that tells the story ------------------


def test_earned_money_is_paid_out_and_the_statement_adds_up(api, app, manual_clock, db_session):
    from billing import services as billing
    from billing.tasks import mature_earnings
    from marketplace.database import db

    settings = app.config["CROWDLINE"]
    admin = api.admin(app)
    client = api.signup("client")
    job = active_job(
        api, app, client, tasks=4, redundancy={"min": 1, "max": 1, "target_confidence": 0.9}
    )
    worker = active_worker(api, admin)
    wid = worker_id(api, worker)
    assert api.post(ACCOUNT, worker.token, json={"country": "US"}).status_code == 201
    start = manual_clock.now()
    for _ in range(3):
        assignment = lease(api, worker, job["id"]).get_json()
        submitted = api.post(
            f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": "cat"}
        )
        assert submitted.status_code == 200, submitted.get_json()
    pseudonym = api.get("/api/v1/workers/me", worker.token).get_json()["pseudonym"]
    bonus = api.post(
        f"/api/v1/jobs/{job['id']}/bonuses",
        client.token,
        json={"worker": pseudonym, "amount": 600, "reason": "great work"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert bonus.status_code == 201, bonus.get_json()
    with app.app_context():  # the quality loop voids the third judgment
        voided = db.session.scalar(
            select(LedgerTransaction.idempotency_key)
            .where(LedgerTransaction.kind == "settlement")
            .order_by(LedgerTransaction.id.desc())
        )
        assert billing.reverse_judgment_pay_in_txn(int(voided.split(":")[1]), "voided")
        db.session.commit()
    manual_clock.advance(3600)
    middle = manual_clock.now()
    # Inside the QA window nothing is available, so nothing is paid.
    assert run_payouts(app).created == 0
    manual_clock.advance(settings.qa_window_seconds)
    with app.app_context():
        assert mature_earnings() == 3  # two judgments and the bonus
    summary = run_payouts(app)
    assert summary.paid_amounts == {"USD": 610}
    manual_clock.advance(60)
    end = manual_clock.now()
    token = api.login(worker.email)["access_token"]  # the first one expired meanwhile

    def statement(**query):
        response = api.get("/api/v1/workers/me/statement", token, query_string=query)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def money(amount, **extra):
        return {"amount": amount, "currency": "USD", **extra}

    whole = statement(**{"from": start.isoformat(), "to": end.isoformat()})
    assert whole["opening"]["total"] == money(0)
    assert whole["earnings"] == money(15, count=3)
    assert whole["bonuses"] == money(600, count=1)
    assert whole["reversals"] == money(5, count=1)
    assert whole["payouts"] == money(610, count=1)
    assert whole["payouts_returned"] == money(0, count=0)
    assert whole["other"] == money(0)
    assert whole["closing"] == {
        "pending": money(0),
        "available": money(0),
        "in_payout": money(0),
        "total": money(0),
    }
    first = statement(**{"from": start.isoformat(), "to": middle.isoformat()})
    assert first["closing"]["pending"] == money(610)
    assert first["payouts"] == money(0, count=0)
    second = statement(**{"from": middle.isoformat(), "to": end.isoformat()})
    assert second["opening"] == first["closing"]
    assert second["earnings"]["count"] == 0 and second["payouts"]["amount"] == 610
    # The default period is the last 30 days.
    assert statement()["payouts"] == money(610, count=1)
    balances = api.get("/api/v1/workers/me/balance", token).get_json()
    assert balances["paid"] == money(610)
    history = api.get("/api/v1/workers/me/payouts", token).get_json()
    assert [(p["amount"], p["status"]) for p in history["items"]] == [(money(610), "paid")]
    assert "last_error" not in history["items"][0]
    assert balance(db_session, wid, Purpose.AVAILABLE) == 0
    assert_ledger_consistent(db_session)


def test_bad_statement_periods_are_refused(api, app):
    worker = api.signup("worker")
    url = "/api/v1/workers/me/statement"
    for query, field in (
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"currency": "JPY"}, "currency"),
    ):
        assert_problem(api.get(url, worker.token, query_string=query), 422, field=field)
    assert_problem(api.get(url, api.signup("client").token), 403)
    # A naive time is read as UTC.
    ok = api.get(
        url, worker.token, query_string={"from": "2026-01-01T00:00:00", "to": "2026-01-02"}
    )
    assert ok.status_code == 200
    assert ok.get_json()["from"].startswith("2026-01-01T00:00:00")


def test_payout_history_pages(api, app, db_session):
    worker, wid = connected_worker(api)
    for amount in (500, 600, 700):
        credit_available(app, wid, amount)
        run_payouts(app)
    other, other_id = connected_worker(api)
    credit_available(app, other_id, 999)
    run_payouts(app)
    seen, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/workers/me/payouts", worker.token, query_string=query).get_json()
        seen += [p["amount"]["amount"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [500, 600, 700]
    failed = api.get("/api/v1/workers/me/payouts", worker.token, query_string={"status": "failed"})
    assert failed.get_json()["items"] == []
    assert_problem(
        api.get("/api/v1/workers/me/payouts", worker.token, query_string={"status": "lost"}),
        422,
        field="status",
    )
    assert_problem(
        api.get("/api/v1/workers/me/payouts", worker.token, query_string={"cursor": "nope"}),
        422,
        field="cursor",
    )


# --- a paid transfer reversed later -------------------------------------------------------


def test_a_reversed_transfer_returns_the_money_once(api, app, db_session):
    worker, wid = connected_worker(api)
    credit_available(app, wid, 1500)
    run_payouts(app)
    transfer = db_session.scalar(select(Payout.processor_transfer_id))
    with app.app_context():
        reversed_ = payouts.on_transfer_failed(transfer, "the bank returned it")
        assert reversed_.status == PayoutStatus.FAILED
        assert payouts.on_transfer_failed(transfer).status == PayoutStatus.FAILED  # replayed
        assert payouts.on_transfer_failed("tr_not_ours") is None
    payout = db_session.scalar(select(Payout))
    assert (payout.status, payout.last_error) == (PayoutStatus.FAILED, "the bank returned it")
    assert balance(db_session, wid, Purpose.AVAILABLE) == 1500
    assert kinds(db_session, wid).count("payout_reversed") == 1
    reversal = db_session.scalar(
        select(LedgerTransaction).where(LedgerTransaction.kind == "payout_reversed")
    )
    assert reversal.reference == f"reversal:{transfer}"
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "billing.payout_failed")
        )
        == 1
    )
    balances = api.get("/api/v1/workers/me/balance", worker.token).get_json()
    assert (balances["paid"]["amount"], balances["available"]["amount"]) == (0, 1500)
    statement = api.get("/api/v1/workers/me/statement", worker.token).get_json()
    assert statement["payouts"]["amount"] == 1500
    assert statement["payouts_returned"]["amount"] == 1500
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


# --- the admins' payout desk --------------------------------------------------------------


def test_admin_payout_routes_are_for_platform_admins_only(api, app, db_session):
    admin = api.admin(app)
    worker, wid = connected_worker(api)
    credit_available(app, wid, 800)
    client = api.signup("client")
    vendor = api.signup("vendor")
    for caller in (worker, client, vendor):
        assert_problem(api.get("/api/v1/admin/payouts", caller.token), 404)
        assert_problem(api.post("/api/v1/admin/payouts/run", caller.token), 404)
    assert_problem(api.get("/api/v1/admin/payouts"), 401)
    assert db_session.scalar(select(func.count()).select_from(Payout)) == 0

    queued = api.post("/api/v1/admin/payouts/run", admin.token)
    assert queued.status_code == 202 and queued.get_json() == {"queued": True}
    # Jobs run inline in tests, so the run is over.
    listed = api.get("/api/v1/admin/payouts", admin.token).get_json()["items"]
    assert [(p["worker_id"], p["amount"]["amount"], p["status"]) for p in listed] == [
        (wid, 800, "paid")
    ]
    assert listed[0]["processor_transfer_id"].startswith("tr_offline_")
    assert listed[0]["idempotency_key"].startswith(f"payout-{listed[0]['id']}-")
    by_worker = api.get("/api/v1/admin/payouts", admin.token, query_string={"worker_id": wid + 1})
    assert by_worker.get_json()["items"] == []
    for query, field in (({"status": "nope"}, "status"), ({"worker_id": "x"}, "worker_id")):
        assert_problem(
            api.get("/api/v1/admin/payouts", admin.token, query_string=query), 422, field=field
        )
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "billing.payout_run_requested")
        )
        == 1
    )
