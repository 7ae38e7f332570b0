"""Payouts when things break: the payout process killed mid-batch, the processor timing out,
failing or refusing. Whatever happens, no transfer is made twice, none is lost, and nothing
is recorded as paid that the processor has not confirmed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing import payouts
from billing.gateway import GatewayError, OfflineGateway, install
from billing.models import LedgerTransaction, Payout, PayoutAccount, PayoutStatus, Purpose
from marketplace.cli import crowdline_cli
from marketplace.models import AuditEvent
from tests.billing import journal_gateway
from tests.billing.helpers import assert_ledger_consistent
from tests.billing.payout_helpers import (
    assert_money_kept,
    balance,
    connected_worker,
    credit_available,
    kinds,
    run_payouts,
)
from tests.conftest import database_url
from tests.helpers import assert_problem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def offline(app):
    saved = app.extensions.get("crowdline.gateway")
    install(app, OfflineGateway())
    yield
    if saved is None:
        app.extensions.pop("crowdline.gateway", None)
    else:
        install(app, saved)


# --- (a) the payout process killed with SIGKILL in the middle of a batch ------------------


def _start_run(journal: Path, delay_before: float, delay_after: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "test-secret",
        "CROWDLINE_TEST_JOURNAL": str(journal),
        "CROWDLINE_TEST_DELAY_BEFORE": str(delay_before),
        "CROWDLINE_TEST_DELAY_AFTER": str(delay_after),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)  # the run itself needs no Redis
    env.pop("STRIPE_SECRET_KEY", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "tests.billing.journal_gateway:create_app",
            "crowdline",
            "payouts",
            "run",
            "--batch-size",
            "3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_transfers(process: subprocess.Popen, journal: Path, count: int) -> None:
    """SIGKILL the run as soon as the processor has made `count` transfers in all; with a
    slow answer, the last of them is made but not yet known to the run."""
    deadline = time.monotonic() + 60
    while len(journal_gateway.transfers(str(journal))) < count:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the payout run ended early ({process.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the payout run made no progress")
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _paid_keys(session) -> set[str]:
    return set(
        session.scalars(select(Payout.idempotency_key).where(Payout.status == PayoutStatus.PAID))
    )


def test_a_payout_run_killed_mid_batch_pays_everyone_exactly_once(api, app, db_session, tmp_path):
    workers = [connected_worker(api)[1] for _ in range(8)]
    earned = {wid: 500 + 37 * n for n, wid in enumerate(workers)}
    for wid, amount in earned.items():
        credit_available(app, wid, amount)
    journal = tmp_path / "processor.sqlite"
    in_flight_at_kills = []

    for transfers_before_kill in (2, 5):
        run = _start_run(journal, delay_before=0.02, delay_after=1.0)
        _kill_after_transfers(run, journal, transfers_before_kill)
        made = set(journal_gateway.transfers_by_key(str(journal)))
        assert len(made) == transfers_before_kill
        # The processor made the last transfer, the killed run never heard: still pending,
        # its money in payout clearing, nothing recorded as paid that was not.
        in_flight = made - _paid_keys(db_session)
        assert len(in_flight) == 1
        pending = db_session.scalar(select(Payout).where(Payout.idempotency_key.in_(in_flight)))
        assert pending.status == PayoutStatus.PENDING and pending.processor_transfer_id is None
        assert balance(db_session, pending.worker_id, Purpose.PAYOUT_CLEARING) == pending.amount
        assert _paid_keys(db_session) <= made
        in_flight_at_kills.append(pending.idempotency_key)
        for wid in workers:
            assert_money_kept(db_session, wid)
        assert_ledger_consistent(db_session)

    # Left behind: payouts in flight or created but not sent, and workers not reached yet.
    pending = db_session.scalar(
        select(func.count()).select_from(Payout).where(Payout.status == PayoutStatus.PENDING)
    )
    unreached = len(workers) - db_session.scalar(select(func.count()).select_from(Payout))
    assert pending >= 1 and unreached >= 1
    # Run again to completion (in this process, to spare a third start-up; same command).
    install(app, journal_gateway.JournalGateway(str(journal)))
    final = app.test_cli_runner().invoke(crowdline_cli, ["payouts", "run", "--batch-size", "3"])
    assert final.exit_code == 0, final.output
    assert final.output.splitlines()[0] == (
        f"{pending} pending payout(s) to retry, {unreached} balance(s) due a payout"
    )

    # At the processor: one transfer per worker, of exactly what they earned.
    with_key = journal_gateway.transfers_by_key(str(journal))
    assert set(with_key.values()) == {1}
    rows = db_session.execute(
        select(Payout, PayoutAccount.processor_account_id).join(
            PayoutAccount, PayoutAccount.worker_id == Payout.worker_id
        )
    ).all()
    assert len(rows) == len(workers)
    assert {p.idempotency_key for p, _ in rows} == set(with_key)
    processor = {
        t_id: (amount, cur) for t_id, amount, cur in journal_gateway.transfers(str(journal))
    }
    for payout, _destination in rows:
        assert payout.status == PayoutStatus.PAID
        assert processor[payout.processor_transfer_id] == (earned[payout.worker_id], "USD")
    # The payouts caught in flight were asked for again, with the same key, and the processor
    # answered with the transfer it had already made.
    calls = journal_gateway.calls_by_key(str(journal))
    assert all(calls[key] == 2 for key in in_flight_at_kills)
    assert sum(calls.values()) == len(workers) + len(in_flight_at_kills)
    # In our books: everything paid, nothing left in clearing, no money made or lost.
    for wid in workers:
        assert balance(db_session, wid, Purpose.AVAILABLE) == 0
        assert balance(db_session, wid, Purpose.PAYOUT_CLEARING) == 0
        assert_money_kept(db_session, wid)
        assert kinds(db_session, wid) == ["test_credit", "payout", "payout_paid"]
    assert_ledger_consistent(db_session)


# --- (b) the processor failing or timing out ----------------------------------------------


class ScriptedGateway(OfflineGateway):
    """Transfers that go the way the test scripts them, one step per call:
    `down` (not reached, nothing done), `timeout` (done, but the answer was lost),
    `refuse` (refused, nothing done), `crash` (an unexpected exception), `ok`."""

    def __init__(self, *steps: str):
        super().__init__()
        self.steps = list(steps)
        self.calls: list[str] = []

    def create_transfer(self, amount, currency, destination, idempotency_key):
        self.calls.append(idempotency_key)
        step = self.steps.pop(0) if self.steps else "ok"
        if step == "down":
            raise GatewayError("connection refused", retryable=True)
        if step == "timeout":
            super().create_transfer(amount, currency, destination, idempotency_key)
            raise GatewayError("read timed out", retryable=True)
        if step == "refuse":
            raise GatewayError("the account cannot receive transfers", retryable=False)
        if step == "crash":
            raise RuntimeError("surprise")
        return super().create_transfer(amount, currency, destination, idempotency_key)


def _nothing_paid(session, wid: int, amount: int) -> None:
    assert balance(session, wid, Purpose.PAYOUT_CLEARING) == amount
    assert balance(session, wid, Purpose.AVAILABLE) == 0
    assert "payout_paid" not in kinds(session, wid)
    payout = session.scalar(select(Payout).where(Payout.worker_id == wid))
    assert payout.status == PayoutStatus.PENDING and payout.processor_transfer_id is None


def test_errors_and_timeouts_are_retried_with_backoff_and_paid_once(
    api, app, manual_clock, db_session
):
    gateway = install_scripted(app, "down", "timeout", "ok")
    worker, wid = connected_worker(api)
    credit_available(app, wid, 1200)
    start = manual_clock.now()

    first = run_payouts(app)
    assert (first.attempted, first.retrying, first.paid) == (1, 1, 0)
    _nothing_paid(db_session, wid, 1200)
    payout = db_session.scalar(select(Payout))
    assert (payout.attempts, payout.last_error) == (1, "connection refused")
    assert payout.next_attempt_at == start + timedelta(seconds=60)
    balances = api.get("/api/v1/workers/me/balance", worker.token).get_json()
    assert (balances["in_payout"]["amount"], balances["paid"]["amount"]) == (1200, 0)
    shown = api.get("/api/v1/workers/me/payouts", worker.token).get_json()["items"][0]
    assert (shown["status"], shown["attempts"]) == ("pending", 1)

    manual_clock.advance(30)  # not due yet: no call at all
    assert run_payouts(app).attempted == 0 and len(gateway.calls) == 1
    manual_clock.advance(31)
    second = run_payouts(app)  # the processor acts, but the answer is lost
    assert (second.attempted, second.retrying) == (1, 1)
    assert len(gateway.records().transfers) == 1
    _nothing_paid(db_session, wid, 1200)
    payout = db_session.scalar(select(Payout))
    assert payout.attempts == 2
    assert payout.next_attempt_at == manual_clock.now() + timedelta(seconds=120)

    manual_clock.advance(119)
    assert run_payouts(app).attempted == 0
    manual_clock.advance(1)
    third = run_payouts(app)
    assert (third.attempted, third.paid) == (1, 1)
    payout = db_session.scalar(select(Payout))
    assert (payout.status, payout.attempts, payout.last_error) == (PayoutStatus.PAID, 3, None)
    # Asked three times with one key; the processor made one transfer, the one we recorded.
    assert gateway.calls == [payout.idempotency_key] * 3
    assert list(gateway.records().transfers) == [payout.processor_transfer_id]
    assert kinds(db_session, wid) == ["test_credit", "payout", "payout_paid"]
    assert balance(db_session, wid, Purpose.PAYOUT_CLEARING) == 0
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def install_scripted(app, *steps: str) -> ScriptedGateway:
    gateway = ScriptedGateway(*steps)
    install(app, gateway)
    return gateway


def test_pending_payouts_are_retried_before_new_ones(api, app, manual_clock, db_session):
    gateway = install_scripted(app, "down")
    _, first = connected_worker(api)
    credit_available(app, first, 700)
    run_payouts(app)
    credit_available(app, first, 900)
    assert run_payouts(app).created == 0  # the first worker's payout is still in flight
    _, second = connected_worker(api)
    credit_available(app, second, 800)
    manual_clock.advance(60)
    seen = []
    summary = run_payouts(app, progress=seen.append)
    # The pending payout first; then new ones, the first worker's 900 included now that
    # nothing of theirs is in flight.
    assert [(e.outcome, e.worker_id, e.amount) for e in seen] == [
        ("paid", first, 700),
        ("created", first, 900),
        ("created", second, 800),
        ("paid", first, 900),
        ("paid", second, 800),
    ]
    assert summary.paid_amounts == {"USD": 2400}
    assert len(gateway.calls) == 4
    assert run_payouts(app).attempted == 0
    assert_money_kept(db_session, first)
    assert_ledger_consistent(db_session)


def test_retries_give_up_after_the_last_attempt(api, app, manual_clock, db_session, monkeypatch):
    monkeypatch.setattr(payouts, "MAX_ATTEMPTS", 3)
    install_scripted(app, "down", "down", "down")
    _, wid = connected_worker(api)
    credit_available(app, wid, 650)
    for wait in (0, 60, 120):
        manual_clock.advance(wait)
        run_payouts(app)
    payout = db_session.scalar(select(Payout))
    assert (payout.status, payout.attempts) == (PayoutStatus.FAILED, 3)
    assert payout.next_attempt_at is None and payout.processor_transfer_id is None
    assert balance(db_session, wid, Purpose.AVAILABLE) == 650
    assert balance(db_session, wid, Purpose.PAYOUT_CLEARING) == 0
    failure = db_session.scalar(
        select(LedgerTransaction).where(LedgerTransaction.kind == "payout_failed")
    )
    assert failure.memo.startswith("gave up after 3 attempts")
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


class LookupFailing(ScriptedGateway):
    """Scripted transfers, and a processor that cannot be asked what it did until told."""

    def __init__(self, *steps: str):
        super().__init__(*steps)
        self.lookups: list[str] = []
        self.lookup_fails = True

    def find_transfer(self, idempotency_key):
        self.lookups.append(idempotency_key)
        if self.lookup_fails:
            raise GatewayError("read timed out", retryable=True)
        return super().find_transfer(idempotency_key)


def test_giving_up_after_timeouts_finds_a_transfer_that_went_through(
    api, app, manual_clock, db_session, monkeypatch
):
    """The processor acted on the first request but every answer was lost: the payout is
    recorded as paid from the lookup, once; it is not given back to be paid again."""
    monkeypatch.setattr(payouts, "MAX_ATTEMPTS", 3)
    gateway = install_scripted(app, "timeout", "down", "down")
    worker, wid = connected_worker(api)
    credit_available(app, wid, 640)
    for wait in (0, 60, 120):
        manual_clock.advance(wait)
        run_payouts(app)
    payout = db_session.scalar(select(Payout))
    assert (payout.status, payout.attempts) == (PayoutStatus.PAID, 3)
    assert list(gateway.records().transfers) == [payout.processor_transfer_id]
    assert kinds(db_session, wid) == ["test_credit", "payout", "payout_paid"]
    assert balance(db_session, wid, Purpose.AVAILABLE) == 0
    balances = api.get("/api/v1/workers/me/balance", worker.token).get_json()
    assert (balances["paid"]["amount"], balances["available"]["amount"]) == (640, 0)
    # The next runs find nothing to pay: the money is not back in the available balance.
    manual_clock.advance(2 * 86400)
    assert run_payouts(app).created == 0
    assert len(gateway.records().transfers) == 1
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_a_payout_whose_outcome_cannot_be_learned_waits_and_is_never_requested_again(
    api, app, manual_clock, db_session, monkeypatch
):
    monkeypatch.setattr(payouts, "MAX_ATTEMPTS", 2)
    gateway = LookupFailing("down", "down")
    install(app, gateway)
    _, wid = connected_worker(api)
    credit_available(app, wid, 800)
    run_payouts(app)
    manual_clock.advance(60)
    summary = run_payouts(app)  # the last attempt fails, and so does the lookup
    assert summary.retrying == 1
    _nothing_paid(db_session, wid, 800)
    payout = db_session.scalar(select(Payout))
    assert payout.last_error.startswith("outcome unknown")
    assert payout.next_attempt_at == manual_clock.now() + timedelta(
        seconds=payouts.BACKOFF_CAP_SECONDS
    )
    assert (
        db_session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "billing.payout_unresolved")
        )
        == 1
    )
    manual_clock.advance(payouts.BACKOFF_CAP_SECONDS)
    run_payouts(app)  # due again: only looked up, and the lookup fails again
    assert len(gateway.calls) == 2 and len(gateway.lookups) == 2
    _nothing_paid(db_session, wid, 800)
    gateway.lookup_fails = False
    manual_clock.advance(payouts.BACKOFF_CAP_SECONDS)
    assert run_payouts(app).failed == 1  # no transfer was made: the money goes back
    assert len(gateway.calls) == 2
    assert balance(db_session, wid, Purpose.AVAILABLE) == 800
    assert balance(db_session, wid, Purpose.PAYOUT_CLEARING) == 0
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_an_unexpected_gateway_exception_is_retried_not_fatal(api, app, manual_clock, db_session):
    install_scripted(app, "crash")
    _, wid = connected_worker(api)
    credit_available(app, wid, 555)
    assert run_payouts(app).retrying == 1
    _nothing_paid(db_session, wid, 555)
    assert db_session.scalar(select(Payout.last_error)) == "RuntimeError: surprise"
    manual_clock.advance(60)
    assert run_payouts(app).paid == 1
    assert_money_kept(db_session, wid)


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after it runs."""


class DyingGateway(OfflineGateway):
    """Makes the transfer, then the process 'dies' before the answer arrives."""

    def __init__(self):
        super().__init__()
        self.dying = True

    def create_transfer(self, amount, currency, destination, idempotency_key):
        result = super().create_transfer(amount, currency, destination, idempotency_key)
        if self.dying:
            self.dying = False
            raise Killed
        return result


def test_dying_between_the_transfer_and_its_record_pays_once(api, app, db_session):
    gateway = DyingGateway()
    install(app, gateway)
    _, wid = connected_worker(api)
    credit_available(app, wid, 2000)
    with pytest.raises(Killed):
        run_payouts(app)
    assert len(gateway.records().transfers) == 1
    _nothing_paid(db_session, wid, 2000)
    assert db_session.scalar(select(Payout.attempts)) == 0  # the attempt was never recorded
    assert run_payouts(app).paid == 1
    payout = db_session.scalar(select(Payout))
    assert list(gateway.records().transfers) == [payout.processor_transfer_id]
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


# --- (c) the processor refusing -----------------------------------------------------------


def test_a_refused_transfer_fails_returns_the_money_and_shows_admins(
    api, app, manual_clock, db_session
):
    admin = api.admin(app)
    gateway = install_scripted(app, "refuse")
    refused_worker, refused = connected_worker(api)
    _, fine = connected_worker(api)
    credit_available(app, refused, 3000)
    credit_available(app, fine, 1000)

    summary = run_payouts(app)
    assert (summary.failed, summary.paid, summary.retrying) == (1, 1, 0)
    failed = db_session.scalar(select(Payout).where(Payout.worker_id == refused))
    assert (failed.status, failed.attempts) == (PayoutStatus.FAILED, 1)
    assert failed.last_error == "the account cannot receive transfers"
    assert balance(db_session, refused, Purpose.AVAILABLE) == 3000
    assert balance(db_session, refused, Purpose.PAYOUT_CLEARING) == 0
    assert kinds(db_session, refused) == ["test_credit", "payout", "payout_failed"]
    assert len(gateway.records().transfers) == 1  # only the other worker's

    desk = api.get("/api/v1/admin/payouts", admin.token, query_string={"status": "failed"})
    items = desk.get_json()["items"]
    assert [(p["worker_id"], p["amount"]["amount"], p["last_error"]) for p in items] == [
        (refused, 3000, "the account cannot receive transfers")
    ]
    audit = db_session.scalar(
        select(AuditEvent).where(AuditEvent.action == "billing.payout_failed")
    )
    assert audit.detail["reason"] == "refused" and audit.object_id == str(failed.id)
    mine = api.get("/api/v1/workers/me/payouts", refused_worker.token).get_json()["items"]
    assert [p["status"] for p in mine] == ["failed"]
    assert "last_error" not in mine[0]
    balances = api.get("/api/v1/workers/me/balance", refused_worker.token).get_json()
    assert (balances["available"]["amount"], balances["paid"]["amount"]) == (3000, 0)

    # Not tried again straight away (an admin looks first), but after the cool-off.
    assert run_payouts(app).created == 0
    manual_clock.advance(payouts.FAILED_COOLDOWN.total_seconds() + 1)
    token = api.login(refused_worker.email)["access_token"]
    assert run_payouts(app).paid_amounts == {"USD": 3000}
    assert api.get("/api/v1/workers/me/balance", token).get_json()["paid"]["amount"] == 3000
    for wid in (refused, fine):
        assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_gateway_refusals_when_connecting_an_account(api, app, db_session):
    class Refusing(OfflineGateway):
        def __init__(self, retryable):
            super().__init__()
            self.retryable = retryable

        def create_connected_account(self, email, country, idempotency_key):
            raise GatewayError("not supported in this country", retryable=self.retryable)

    worker = api.signup("worker")
    install(app, Refusing(retryable=False))
    response = api.post("/api/v1/workers/me/payout-account", worker.token, json={"country": "KP"})
    assert_problem(response, 422, field="country")
    install(app, Refusing(retryable=True))
    response = api.post("/api/v1/workers/me/payout-account", worker.token, json={"country": "US"})
    assert_problem(response, 503)
    assert db_session.scalar(select(func.count()).select_from(PayoutAccount)) == 0
