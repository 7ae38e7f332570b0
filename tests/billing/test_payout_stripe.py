"""Payouts through the real `stripe` SDK against the loopback Connect stub: onboarding, the
payout process killed while Stripe holds a transfer it already made, answers lost to
timeouts, 5xx and refusals. The stub keeps Stripe's idempotency (the same key replays the
first answer), and it lives in the test process, so it outlives a killed payout process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing.gateway import install
from billing.models import Payout, PayoutStatus, Purpose
from marketplace.cli import crowdline_cli
from tests.billing.helpers import assert_ledger_consistent
from tests.billing.payout_helpers import (
    assert_money_kept,
    balance,
    credit_available,
    kinds,
    run_payouts,
)
from tests.conftest import database_url
from tests.workforce import worker_id

stripe_servers = pytest.importorskip("tests.billing.stripe_servers")

localstripe_server = stripe_servers.localstripe_server
stripe_stub = stripe_servers.stripe_stub
stripe_fake = stripe_servers.stripe_fake

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "/api/v1/workers/me/payout-account"


@pytest.fixture
def stripe(app, stripe_fake):
    """The app's gateway is Stripe (the stub) for this test."""
    saved = app.extensions.get("crowdline.gateway")
    install(app, stripe_fake.gateway())
    yield stripe_fake
    if saved is None:
        app.extensions.pop("crowdline.gateway", None)
    else:
        install(app, saved)


def _ready_worker(api, stripe_fake) -> int:
    """A worker who connected through Stripe and finished onboarding there."""
    worker = api.signup("worker")
    created = api.post(ACCOUNT, worker.token, json={"country": "US"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["status"] == "onboarding"
    assert body["onboarding_url"].startswith(stripe_fake.base + "/connect/onboarding/")
    stripe_fake.stub.complete_onboarding(body["processor_account_id"])
    assert api.get(ACCOUNT, worker.token).get_json()["status"] == "ready"
    return worker_id(api, worker)


def _transfer_calls(stripe_fake) -> int:
    return sum(1 for call in stripe_fake.stub.calls if call == ("POST", "/v1/transfers"))


def test_killed_while_stripe_holds_the_transfer_then_paid_exactly_once(
    api, app, db_session, stripe
):
    workers = [_ready_worker(api, stripe) for _ in range(4)]
    earned = {wid: 600 + 11 * n for n, wid in enumerate(workers)}
    for wid, amount in earned.items():
        credit_available(app, wid, amount)
    # The first transfer is made, then Stripe's answer never comes back.
    stripe.stub.fail_next("POST", "/v1/transfers", "hang_after")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "test-secret",
        "STRIPE_SECRET_KEY": stripe_servers.SECRET_KEY,
        "STRIPE_API_BASE": stripe.base,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    # The production app and command, nothing test-specific in the process.
    run = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "marketplace:create_app"]
        + ["crowdline", "payouts", "run", "--batch-size", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (stripe.stub.transfers and not stripe.stub.faults):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            out, err = run.communicate()
            pytest.fail(f"the payout run never reached Stripe:\n{out}\n{err}")
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.communicate()

    assert len(stripe.stub.transfers) == 1
    states = dict(
        db_session.execute(select(Payout.status, func.count()).group_by(Payout.status)).all()
    )
    assert states == {PayoutStatus.PENDING: 3}  # the whole first batch; nothing paid
    assert all(balance(db_session, wid, Purpose.AVAILABLE) == 0 for wid in workers[:3])
    assert balance(db_session, workers[3], Purpose.AVAILABLE) == earned[workers[3]]

    result = app.test_cli_runner().invoke(crowdline_cli, ["payouts", "run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("done: 1 created, 4 attempted, 4 paid")

    transfers = list(stripe.stub.transfers.values())
    assert sorted(t["amount"] for t in transfers) == sorted(earned.values())
    assert len({t["destination"] for t in transfers}) == 4  # each worker once
    payouts = db_session.scalars(select(Payout)).all()
    assert {p.processor_transfer_id for p in payouts} == set(stripe.stub.transfers)
    assert all(p.status == PayoutStatus.PAID for p in payouts)
    assert _transfer_calls(stripe) == 5  # the lost answer was asked for again, and replayed
    for wid in workers:
        assert_money_kept(db_session, wid)
        assert kinds(db_session, wid) == ["test_credit", "payout", "payout_paid"]
    assert_ledger_consistent(db_session)


@pytest.mark.parametrize("fault", ["hang_after", "hang", "500"])
def test_stripe_timeouts_and_5xx_are_retried_and_paid_once(
    api, app, manual_clock, db_session, stripe, fault
):
    wid = _ready_worker(api, stripe)
    credit_available(app, wid, 1700)
    stripe.stub.fail_next("POST", "/v1/transfers", fault)
    first = run_payouts(app)
    assert (first.attempted, first.retrying, first.paid) == (1, 1, 0)
    payout = db_session.scalar(select(Payout))
    assert payout.status == PayoutStatus.PENDING and payout.processor_transfer_id is None
    assert "payout_paid" not in kinds(db_session, wid)
    assert balance(db_session, wid, Purpose.PAYOUT_CLEARING) == 1700
    # hang_after: Stripe made it; hang and 500: it did not.
    assert len(stripe.stub.transfers) == (1 if fault == "hang_after" else 0)
    manual_clock.advance(60)
    assert run_payouts(app).paid == 1
    assert len(stripe.stub.transfers) == 1
    payout = db_session.scalar(select(Payout))
    assert payout.processor_transfer_id in stripe.stub.transfers
    assert payout.attempts == 2
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_a_stripe_refusal_fails_the_payout_and_returns_the_money(api, app, db_session, stripe):
    wid = _ready_worker(api, stripe)
    credit_available(app, wid, 900)
    stripe.stub.fail_next(
        "POST",
        "/v1/transfers",
        "error",
        status=400,
        error={"message": "Your destination account needs to have transfers enabled."},
    )
    summary = run_payouts(app)
    assert summary.failed == 1
    payout = db_session.scalar(select(Payout))
    assert payout.status == PayoutStatus.FAILED
    assert "transfers enabled" in payout.last_error
    assert stripe.stub.transfers == {}
    assert balance(db_session, wid, Purpose.AVAILABLE) == 900
    assert kinds(db_session, wid) == ["test_credit", "payout", "payout_failed"]
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)


def test_a_transfer_stripe_made_before_every_answer_was_lost_is_found_not_repaid(
    api, app, manual_clock, db_session, stripe, monkeypatch
):
    """Stripe made the transfer on the first request, then every answer was lost until the
    last attempt: the payout is found by its transfer group and recorded as paid once."""
    from billing import payouts

    monkeypatch.setattr(payouts, "MAX_ATTEMPTS", 2)
    wid = _ready_worker(api, stripe)
    credit_available(app, wid, 900)
    stripe.stub.fail_next("POST", "/v1/transfers", "hang_after")
    stripe.stub.fail_next("POST", "/v1/transfers", "500")
    run_payouts(app)
    manual_clock.advance(60)
    summary = run_payouts(app)
    assert summary.paid == 1
    payout = db_session.scalar(select(Payout))
    assert payout.status == PayoutStatus.PAID
    assert list(stripe.stub.transfers) == [payout.processor_transfer_id]
    assert stripe.stub.transfers[payout.processor_transfer_id]["transfer_group"] == (
        payout.idempotency_key
    )
    manual_clock.advance(2 * 86400)
    assert run_payouts(app).created == 0
    assert _transfer_calls(stripe) == 2 and len(stripe.stub.transfers) == 1
    assert_money_kept(db_session, wid)
    assert_ledger_consistent(db_session)
