"""Stripe's webhooks end to end: funding through a PaymentIntent confirmed at localstripe,
whose signed event reaches our server on a loopback port; duplicates, forgeries, events out
of order or ahead of their rows; Connect accounts and reversed transfers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from billing import ledger, webhooks
from billing.models import (
    LedgerTransaction,
    OwnerType,
    Payment,
    PaymentStatus,
    Payout,
    PayoutAccount,
    PayoutAccountStatus,
    PayoutStatus,
    ProcessorEvent,
    Purpose,
)
from marketplace.background import PERIODIC_JOBS
from tests.billing import stripe_servers
from tests.billing.helpers import assert_ledger_consistent
from tests.billing.stripe_servers import (
    make_event,
    paid_payout,
    post_event,
    signature_header,
    wait_for,
    worker_profile,
)
from tests.helpers import Api, assert_problem
from tests.jobs.helpers import create_job, fund

localstripe_server = stripe_servers.localstripe_server
stripe_stub = stripe_servers.stripe_stub
stripe_fake = stripe_servers.stripe_fake
stripe_app = stripe_servers.stripe_app
stripe_app_server = stripe_servers.stripe_app_server


@pytest.fixture
def stripe_api(stripe_app) -> Api:
    return Api(stripe_app.test_client())


def _count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


def _fundings(session) -> int:
    return _count(session, LedgerTransaction, LedgerTransaction.kind == "funding")


def _escrow(app, job_id: int) -> int:
    with app.app_context():
        return ledger.current_balance(OwnerType.JOB, job_id, Purpose.ESCROW, "USD")


def _event(session, event_id: str) -> ProcessorEvent:
    return session.get(ProcessorEvent, event_id, populate_existing=True)


def _payment(session, payment_intent_id: str) -> Payment:
    return session.scalar(select(Payment).where(Payment.payment_intent_id == payment_intent_id))


def _unfunded_job(api: Api, amount: int = 5000):
    client = api.signup("client")
    job = create_job(api, client)
    payment = fund(api, client, job["id"], amount)
    return client, job, payment


def _intent(payment: dict, **changes) -> dict:
    """A PaymentIntent as Stripe shows it in an event (for events we send ourselves)."""
    intent = {
        "id": payment["payment_intent_id"],
        "object": "payment_intent",
        "amount": payment["amount"]["amount"],
        "currency": payment["amount"]["currency"].lower(),
        "status": "succeeded",
        "metadata": {"organization_id": "1", "job_id": str(payment["job_id"])},
    }
    intent.update(changes)
    return intent


# --- funding end to end --------------------------------------------------------------------


def test_funding_moves_the_ledger_once_when_the_signed_webhook_arrives(
    stripe_fake, stripe_app, stripe_app_server, stripe_api, db_session
):
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url)
    _client, job, payment = _unfunded_job(stripe_api, 5000)
    assert payment["gateway"] == "stripe" and payment["status"] == "requires_payment"
    assert payment["client_secret"].startswith(payment["payment_intent_id"])
    assert _fundings(db_session) == 0 and _escrow(stripe_app, job["id"]) == 0

    confirmed = stripe_fake.localstripe.confirm(payment["payment_intent_id"])
    assert confirmed["status"] == "succeeded"

    wait_for(lambda: _fundings(db_session) == 1 and stripe_app_server.quiet())
    assert _escrow(stripe_app, job["id"]) == 5000
    assert _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.SUCCEEDED
    event = db_session.scalar(select(ProcessorEvent))
    assert event.type == "payment_intent.succeeded" and event.processed_at is not None
    assert event.outcome.startswith("applied")
    assert_ledger_consistent(db_session)


def test_an_event_delivered_twice_at_once_and_again_later_is_applied_once(
    stripe_fake, stripe_app, stripe_app_server, stripe_api, db_session
):
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url, twice=True)
    _client, job, payment = _unfunded_job(stripe_api, 3000)
    stripe_fake.localstripe.confirm(payment["payment_intent_id"])
    wait_for(lambda: stripe_app_server.quiet(served=2) and _fundings(db_session) == 1)

    stored = db_session.scalar(select(ProcessorEvent))
    again = post_event(stripe_app.test_client(), stored.payload)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert _count(db_session, ProcessorEvent) == 1
    assert _fundings(db_session) == 1 and _escrow(stripe_app, job["id"]) == 3000
    assert_ledger_consistent(db_session)


def test_a_declined_card_marks_the_payment_failed_and_moves_nothing(
    stripe_fake, stripe_app, stripe_app_server, stripe_api, db_session
):
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url)
    _client, job, payment = _unfunded_job(stripe_api, 2000)
    declined = stripe_fake.localstripe.confirm(payment["payment_intent_id"], "4000000000000341")
    assert declined["_status"] == 402
    wait_for(
        lambda: _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.FAILED
    )
    assert _fundings(db_session) == 0 and _escrow(stripe_app, job["id"]) == 0

    # The payer then succeeds with another card: success after failure counts.
    assert (
        post_event(
            stripe_app.test_client(), make_event("payment_intent.succeeded", _intent(payment))
        ).status_code
        == 200
    )
    assert _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.SUCCEEDED
    assert _escrow(stripe_app, job["id"]) == 2000


def test_a_failure_or_cancellation_after_success_changes_nothing(
    stripe_fake, stripe_app, stripe_app_server, stripe_api, db_session
):
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url)
    _client, job, payment = _unfunded_job(stripe_api, 4000)
    stripe_fake.localstripe.confirm(payment["payment_intent_id"])
    wait_for(lambda: _fundings(db_session) == 1 and stripe_app_server.quiet())

    client = stripe_app.test_client()
    for type_ in ("payment_intent.payment_failed", "payment_intent.canceled"):
        late = make_event(type_, _intent(payment, status="requires_payment_method"))
        assert post_event(client, late).status_code == 200
        event = _event(db_session, late["id"])
        assert event.processed_at is not None and "already succeeded" in event.outcome
    assert _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.SUCCEEDED
    assert _fundings(db_session) == 1 and _escrow(stripe_app, job["id"]) == 4000
    assert_ledger_consistent(db_session)


def test_a_cancellation_before_success_is_recorded(stripe_fake, stripe_app, stripe_api, db_session):
    _client, _job, payment = _unfunded_job(stripe_api, 1000)
    canceled = make_event("payment_intent.canceled", _intent(payment, status="canceled"))
    assert post_event(stripe_app.test_client(), canceled).status_code == 200
    assert _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.CANCELED


# --- signatures ----------------------------------------------------------------------------


def test_bad_or_missing_signatures_are_refused_and_nothing_is_stored(
    stripe_fake, stripe_app, stripe_api, db_session
):
    _client, job, payment = _unfunded_job(stripe_api, 1500)
    event = make_event("payment_intent.succeeded", _intent(payment))
    body = json.dumps(event).encode()
    client = stripe_app.test_client()
    tampered = json.dumps(
        make_event("payment_intent.succeeded", _intent(payment, amount=9))
    ).encode()
    attempts = [
        post_event(client, event, signed=False),
        post_event(client, event, secret="whsec_someone_else"),
        post_event(client, event, at=int(time.time()) - 3600),  # replayed: too old
        post_event(client, event, signature="t=1,v0=abc"),
        post_event(client, event, signature="nonsense"),
        client.post(
            stripe_servers.WEBHOOK_PATH,
            data=tampered,
            headers={"Stripe-Signature": signature_header(body)},  # signed another body
            content_type="application/json",
        ),
    ]
    for response in attempts:
        assert_problem(response, 400)
    assert _count(db_session, ProcessorEvent) == 0
    assert (
        _payment(db_session, payment["payment_intent_id"]).status == PaymentStatus.REQUIRES_PAYMENT
    )
    assert _fundings(db_session) == 0 and _escrow(stripe_app, job["id"]) == 0


def test_a_signed_event_without_the_fields_of_an_event_is_refused(stripe_app, db_session):
    for document in ({"id": "evt_1"}, {"id": "evt_2", "type": "x", "data": []}, ["evt"]):
        response = post_event(stripe_app.test_client(), document)
        assert_problem(response, 400)
    assert _count(db_session, ProcessorEvent) == 0


def test_without_a_webhook_secret_every_delivery_is_refused(client, db_session):
    response = post_event(client, make_event("payment_intent.succeeded", {"id": "pi_1"}))
    assert_problem(response, 503)
    assert _count(db_session, ProcessorEvent) == 0


def test_the_webhook_route_is_documented_without_bearer_auth(stripe_app):
    spec = stripe_app.test_client().get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/billing/stripe/webhook"]["post"]
    assert operation.get("security") == []


# --- events ahead of their rows ------------------------------------------------------------


def test_an_event_ahead_of_its_payment_waits_and_the_periodic_job_applies_it(
    stripe_fake, stripe_app, stripe_api, db_session
):
    client = stripe_api.signup("client")
    job = create_job(stripe_api, client)
    org_id = client.organization["id"]
    intent = stripe_fake.gateway().create_payment_intent(
        2500, "USD", {"organization_id": str(org_id), "job_id": str(job["id"])}, "ahead-1"
    )
    early = make_event(
        "payment_intent.succeeded",
        {
            "id": intent.id,
            "object": "payment_intent",
            "amount": 2500,
            "currency": "usd",
            "status": "succeeded",
            "metadata": {"organization_id": str(org_id), "job_id": str(job["id"])},
        },
    )
    assert post_event(stripe_app.test_client(), early).status_code == 200
    stored = _event(db_session, early["id"])
    assert stored.processed_at is None and stored.outcome.startswith("waiting: no payment")
    assert _fundings(db_session) == 0

    with stripe_app.app_context():
        assert webhooks.retry_waiting_events(grace=timedelta(0)) == 0  # still nothing to apply
    db_session.add(
        Payment(
            organization_id=org_id,
            job_id=job["id"],
            amount=2500,
            currency="USD",
            gateway="stripe",
            payment_intent_id=intent.id,
            status=PaymentStatus.REQUIRES_PAYMENT,
            created_at=datetime.now(UTC),
        )
    )
    db_session.flush()
    with stripe_app.app_context():
        assert webhooks.retry_waiting_events() == 0  # too fresh: the enqueued job has it
        assert webhooks.retry_waiting_events(grace=timedelta(0)) == 1
        assert webhooks.retry_waiting_events(grace=timedelta(0)) == 0
    assert _event(db_session, early["id"]).processed_at is not None
    assert _fundings(db_session) == 1 and _escrow(stripe_app, job["id"]) == 2500
    assert any(job.path == "billing.tasks.retry_processor_events" for job in PERIODIC_JOBS)
    assert_ledger_consistent(db_session)


def test_events_for_payments_that_are_not_ours_are_ignored(stripe_app, db_session):
    foreign = make_event(
        "payment_intent.succeeded",
        {"id": "pi_elsewhere", "amount": 100, "currency": "usd", "metadata": {}},
    )
    other_type = make_event("customer.created", {"id": "cus_1"})
    for event in (foreign, other_type):
        assert post_event(stripe_app.test_client(), event).status_code == 200
        stored = _event(db_session, event["id"])
        assert stored.processed_at is not None and stored.outcome.startswith("ignored")
    assert _fundings(db_session) == 0


def test_an_amount_that_differs_from_the_payment_is_rejected_not_credited(
    stripe_app, stripe_api, db_session
):
    _client, job, payment = _unfunded_job(stripe_api, 1200)
    wrong = make_event("payment_intent.succeeded", _intent(payment, amount=99_999))
    assert post_event(stripe_app.test_client(), wrong).status_code == 200
    stored = _event(db_session, wrong["id"])
    assert stored.processed_at is not None and stored.outcome.startswith("rejected")
    assert _fundings(db_session) == 0 and _escrow(stripe_app, job["id"]) == 0


def test_charge_refunded_is_checked_against_our_refunds(
    stripe_fake, stripe_app, stripe_app_server, stripe_api, db_session
):
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url)
    client, job, payment = _unfunded_job(stripe_api, 5000)
    stripe_fake.localstripe.confirm(payment["payment_intent_id"])
    wait_for(lambda: _fundings(db_session) == 1 and stripe_app_server.quiet())
    refund = stripe_api.post(
        f"/api/v1/jobs/{job['id']}/refund",
        client.token,
        json={"amount": 2000},
        headers={"Idempotency-Key": "refund-1"},
    )
    assert refund.status_code == 201, refund.get_json()

    charge = {"id": "ch_1", "object": "charge", "payment_intent": payment["payment_intent_id"]}
    matching = make_event("charge.refunded", {**charge, "amount_refunded": 2000})
    outside = make_event("charge.refunded", {**charge, "amount_refunded": 3000})
    for event in (matching, outside):
        assert post_event(stripe_app.test_client(), event).status_code == 200
    assert db_session.get(
        ProcessorEvent, matching["id"], populate_existing=True
    ).outcome.startswith("recorded")
    waiting = _event(db_session, outside["id"])
    assert waiting.processed_at is None and "refunded 3000" in waiting.outcome
    assert _escrow(stripe_app, job["id"]) == 3000


# --- Connect accounts and transfers --------------------------------------------------------


def test_account_updated_follows_the_accounts_current_state(
    stripe_fake, stripe_app, stripe_api, db_session
):
    worker = worker_profile(stripe_api)
    account = stripe_fake.gateway().create_connected_account("w@example.org", "US", "acct-1")
    db_session.add(
        PayoutAccount(
            worker_id=worker,
            processor_account_id=account.id,
            country="US",
            status=PayoutAccountStatus.ONBOARDING,
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
    )
    db_session.flush()
    client = stripe_app.test_client()

    def deliver(snapshot: dict) -> ProcessorEvent:
        event = make_event("account.updated", snapshot)
        assert post_event(client, event).status_code == 200
        return _event(db_session, event["id"])

    def status() -> PayoutAccountStatus:
        return db_session.scalar(select(PayoutAccount.status))

    old_snapshot = dict(stripe_fake.stub.accounts[account.id])
    ready = stripe_fake.stub.complete_onboarding(account.id)
    assert deliver(ready).processed_at is not None and status() == PayoutAccountStatus.READY
    # An older snapshot delivered late cannot undo it: the handler reads the current state.
    deliver(old_snapshot)
    assert status() == PayoutAccountStatus.READY
    restricted = stripe_fake.stub.complete_onboarding(account.id, payouts_enabled=False)
    deliver(restricted)
    assert status() == PayoutAccountStatus.RESTRICTED

    stranger = deliver({"id": "acct_not_ours", "object": "account", "payouts_enabled": True})
    assert stranger.processed_at is None and stranger.outcome.startswith("waiting")

    # The processor cannot be asked: the event waits rather than guessing.
    stripe_fake.stub.fail_next("GET", "/v1/accounts/", "500", times=2)  # the SDK retries once
    unsure = deliver(ready)
    assert unsure.processed_at is None and "could not be asked" in unsure.outcome
    assert status() == PayoutAccountStatus.RESTRICTED


def test_a_reversed_transfer_fails_its_paid_payout_once(
    stripe_fake, stripe_app, stripe_api, db_session
):
    payout = paid_payout(stripe_fake, stripe_app, db_session, stripe_api)
    assert payout.status == PayoutStatus.PAID and payout.processor_transfer_id in (
        stripe_fake.stub.transfers
    )
    reversed_ = stripe_fake.stub.reverse_transfer(payout.processor_transfer_id)
    client = stripe_app.test_client()
    first = make_event("transfer.reversed", reversed_)
    second = make_event("transfer.reversed", reversed_)  # Stripe may say it again
    for event in (first, second):
        assert post_event(client, event).status_code == 200
        assert _event(db_session, event["id"]).processed_at is not None
    assert db_session.get(Payout, payout.id, populate_existing=True).status == PayoutStatus.FAILED
    with stripe_app.app_context():
        assert (
            ledger.current_balance(OwnerType.WORKER, payout.worker_id, Purpose.AVAILABLE, "USD")
            == 1500
        )
    assert _count(db_session, LedgerTransaction, LedgerTransaction.kind == "payout_reversed") == 1
    assert_ledger_consistent(db_session)

    unknown = make_event("transfer.reversed", {**reversed_, "id": "tr_unknown"})
    assert post_event(client, unknown).status_code == 200
    assert _event(db_session, unknown["id"]).outcome.startswith("waiting")


def test_a_partial_reversal_is_recorded_for_a_human(
    stripe_fake, stripe_app, stripe_api, db_session
):
    payout = paid_payout(stripe_fake, stripe_app, db_session, stripe_api)
    transfer = dict(stripe_fake.stub.transfers[payout.processor_transfer_id], amount_reversed=100)
    event = make_event("transfer.reversed", transfer)
    assert post_event(stripe_app.test_client(), event).status_code == 200
    assert "(for a human)" in _event(db_session, event["id"]).outcome
    assert db_session.get(Payout, payout.id, populate_existing=True).status == PayoutStatus.PAID
