"""Reconciliation: clean after real flows through Stripe (localstripe + stub), and each kind of
discrepancy found — in the service, the CLI and the admin route; the revenue report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from billing import ledger
from billing.ledger import Leg
from billing.models import (
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    OwnerType,
    ProcessorEvent,
    Purpose,
)
from billing.reconciliation import reconcile
from marketplace.database import db
from tests.billing import stripe_servers
from tests.billing.stripe_servers import make_event, paid_payout, post_event, wait_for
from tests.helpers import Api
from tests.jobs.helpers import create_job, fund

localstripe_server = stripe_servers.localstripe_server
stripe_stub = stripe_servers.stripe_stub
stripe_fake = stripe_servers.stripe_fake
stripe_app = stripe_servers.stripe_app
stripe_app_server = stripe_servers.stripe_app_server


def _reconcile(app, **options):
    with app.app_context():
        return reconcile(**options)


def _checks(report) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in report.findings]


def _cli(app, *args: str):
    return app.test_cli_runner().invoke(args=["crowdline", "reconcile", *args])


def _funded_through_stripe(stripe_fake, api: Api, db_session, server, amount: int):
    client = api.signup("client")
    job = create_job(api, client)
    payment = fund(api, client, job["id"], amount)
    stripe_fake.localstripe.confirm(payment["payment_intent_id"])
    wait_for(
        lambda: (
            db_session.scalar(
                select(LedgerTransaction.id).where(
                    LedgerTransaction.reference == payment["payment_intent_id"]
                )
            )
            and server.quiet()
        )
    )
    return client, job, payment


def test_the_books_reconcile_after_funding_refunds_payouts_and_a_reversal(
    stripe_fake, stripe_app, stripe_app_server, db_session
):
    api = Api(stripe_app.test_client())
    stripe_fake.deliver_webhooks_to(stripe_app_server.webhook_url)
    client, job, _payment = _funded_through_stripe(
        stripe_fake, api, db_session, stripe_app_server, 5000
    )
    refund = api.post(
        f"/api/v1/jobs/{job['id']}/refund",
        client.token,
        json={"amount": 1200},
        headers={"Idempotency-Key": "refund-recon"},
    )
    assert refund.status_code == 201, refund.get_json()
    paid_payout(stripe_fake, stripe_app, db_session, api, 1500)
    reversed_payout = paid_payout(stripe_fake, stripe_app, db_session, api, 800)
    transfer = stripe_fake.stub.reverse_transfer(reversed_payout.processor_transfer_id)
    response = post_event(stripe_app.test_client(), make_event("transfer.reversed", transfer))
    assert response.status_code == 200

    report = _reconcile(stripe_app)
    assert report.ok, report.findings
    assert report.processor_compared and report.gateway == "stripe"
    assert report.counts["processor_payment_intents"] == 1
    assert report.counts["processor_refunds"] == 1
    assert report.counts["processor_transfers"] == 2
    assert report.counts["processor_transfers_reversed"] == 1

    result = _cli(stripe_app)
    assert result.exit_code == 0, result.output
    assert "OK: no discrepancies." in result.output
    assert "1 succeeded PaymentIntents, 1 refunds, 2 transfers (1 reversed)" in result.output


def test_a_tampered_cached_balance_and_an_unbalanced_transaction_are_found(app, api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    fund(api, client, job["id"], 1000)  # the offline gateway confirms at once
    assert _reconcile(app).ok

    escrow = db_session.scalar(
        select(LedgerAccount).where(
            LedgerAccount.owner_type == OwnerType.JOB, LedgerAccount.purpose == Purpose.ESCROW
        )
    )
    db_session.execute(
        update(LedgerAccount).where(LedgerAccount.id == escrow.id).values(balance=1001)
    )
    report = _reconcile(app)
    assert _checks(report) == [("account", f"account {escrow.id} (job {job['id']} escrow USD)")]
    assert "cached balance 1001, but its entries sum to 1000" in report.findings[0].detail
    assert "not compared" in report.processor_note  # the offline gateway keeps no records

    result = _cli(app)
    assert result.exit_code == 1
    assert "1 discrepancy:" in result.output and "cached balance 1001" in result.output

    funding = db_session.scalar(select(LedgerTransaction))
    db_session.add(
        LedgerEntry(transaction_id=funding.id, account_id=escrow.id, amount=1, currency="USD")
    )
    db_session.add(
        LedgerTransaction(
            kind="funding",
            idempotency_key="empty-one",
            created_at=datetime.now(UTC),
            memo="",
        )
    )
    db_session.flush()
    checks = _checks(_reconcile(app))
    assert ("transaction", f"transaction {funding.id}") in checks
    assert ("account", f"account {escrow.id} (job {job['id']} escrow USD)") not in checks
    assert any(subject.startswith("transaction") and c == "transaction" for c, subject in checks)
    assert len([c for c in checks if c[0] == "transaction"]) == 2  # unbalanced, and empty


def test_an_account_below_zero_is_found(app, db_session):
    now = datetime.now(UTC)
    available = LedgerAccount(
        owner_type=OwnerType.WORKER,
        owner_id=1,
        purpose=Purpose.AVAILABLE,
        currency="USD",
        balance=-5,
        created_at=now,
    )
    fees = LedgerAccount(
        owner_type=OwnerType.PLATFORM,
        owner_id=0,
        purpose=Purpose.FEES,
        currency="USD",
        balance=5,
        created_at=now,
    )
    txn = LedgerTransaction(kind="forced", idempotency_key="negative", created_at=now)
    db_session.add_all([available, fees, txn])
    db_session.flush()
    db_session.add_all(
        [
            LedgerEntry(transaction_id=txn.id, account_id=available.id, amount=-5, currency="USD"),
            LedgerEntry(transaction_id=txn.id, account_id=fees.id, amount=5, currency="USD"),
        ]
    )
    db_session.flush()
    report = _reconcile(app)
    assert [(f.subject, f.detail) for f in report.findings] == [
        (f"account {available.id} (worker 1 available USD)", "below zero: -5")
    ]


def test_payments_missing_from_either_side_are_found(stripe_fake, stripe_app, db_session):
    gateway = stripe_fake.gateway()
    orphan = gateway.create_payment_intent(700, "USD", {}, "orphan")
    stripe_fake.localstripe.confirm(orphan.id)  # succeeded, but no webhook reached us
    short = gateway.create_payment_intent(1000, "USD", {}, "short")
    stripe_fake.localstripe.confirm(short.id)
    with stripe_app.app_context():
        org_balance = ledger.account(OwnerType.ORGANIZATION, 1, Purpose.BALANCE, "USD")
        for reference, amount in (("pi_ghost", 300), (short.id, 900)):
            ledger.post(
                "funding",
                f"payment:{reference}",
                [Leg(ledger.processor("USD"), -amount), Leg(org_balance, amount)],
                reference=reference,
            )
        db.session.commit()

    report = _reconcile(stripe_app)
    details = {(f.check, f.subject): f.detail for f in report.findings}
    assert "no funding transaction" in details[("payment_intent", orphan.id)]
    assert "moved 900 USD" in details[("payment_intent", short.id)]
    ghost = next(f for f in report.findings if f.check == "funding")
    assert "pi_ghost, which is not a succeeded PaymentIntent" in ghost.detail
    assert len(report.findings) == 3


def test_an_extra_transfer_or_refund_at_the_processor_is_found(stripe_fake, stripe_app):
    gateway = stripe_fake.gateway()
    account = gateway.create_connected_account("w@example.org", "US", "extra")
    transfer = gateway.create_transfer(450, "USD", account.id, "made-by-hand")
    intent = gateway.create_payment_intent(900, "USD", {}, "refunded-by-hand")
    stripe_fake.localstripe.confirm(intent.id)
    refund = gateway.refund(intent.id, 200, "refund-by-hand")

    report = _reconcile(stripe_app)
    details = {(f.check, f.subject): f.detail for f in report.findings}
    assert details[("transfer", transfer.id)] == (
        "transfer of 450 USD at the processor has no payout_paid transaction"
    )
    assert details[("refund", refund)].startswith("refund of 200 USD")
    assert ("payment_intent", intent.id) in details

    result = _cli(stripe_app, "--json")
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["ok"] is False and len(document["findings"]) == 3


def test_an_unreachable_processor_is_a_failed_run(stripe_fake, stripe_app):
    stripe_fake.stub.fail_next("GET", "/v1/payment_intents", "500", times=2)
    report = _reconcile(stripe_app)
    assert not report.ok and report.findings[0].check == "processor"
    assert report.processor_note.startswith("unreachable")
    assert _reconcile(stripe_app, processor=False).ok  # the ledger alone is fine
    result = _cli(stripe_app, "--skip-processor")
    assert result.exit_code == 0 and "not compared (asked to skip)" in result.output


def test_events_waiting_too_long_are_listed(app, db_session):
    db_session.add(
        ProcessorEvent(
            id="evt_stuck",
            type="payment_intent.succeeded",
            payload={},
            received_at=datetime.now(UTC) - timedelta(hours=2),
            outcome="waiting: no payment for pi_1 yet",
        )
    )
    db_session.add(
        ProcessorEvent(
            id="evt_fresh",
            type="payment_intent.succeeded",
            payload={},
            received_at=datetime.now(UTC),
            outcome="waiting: no payment for pi_2 yet",
        )
    )
    db_session.flush()
    report = _reconcile(app)
    assert _checks(report) == [("event", "evt_stuck (payment_intent.succeeded)")]
    assert "no payment for pi_1" in report.findings[0].detail


# --- the admin routes ----------------------------------------------------------------------


def test_reconciliation_and_revenue_are_for_platform_admins_only(app, api):
    admin = api.admin(app)
    for account_type in ("client", "vendor", "worker"):
        someone = api.signup(account_type)
        for path in ("/api/v1/admin/billing/reconciliation", "/api/v1/admin/billing/revenue"):
            response = api.get(path, someone.token)
            assert response.status_code == 404, (account_type, path)
    assert api.get("/api/v1/admin/billing/revenue").status_code == 401

    response = api.get("/api/v1/admin/billing/reconciliation?processor=false", admin.token)
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True and body["findings"] == []
    assert body["processor_note"] == "not compared (asked to skip)"
    assert set(body["counts"]) >= {"transactions", "entries", "accounts", "events_waiting"}


def test_revenue_shows_platform_fees_and_vendor_margins(app, api):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    org = vendor.organization
    with app.app_context():
        for currency, fee, margin in (("USD", 80, 20), ("EUR", 40, 0)):
            legs = [
                Leg(ledger.processor(currency), -(fee + margin)),
                Leg(ledger.platform(Purpose.FEES, currency), fee),
            ]
            if margin:
                margin_account = ledger.account(
                    OwnerType.ORGANIZATION, org["id"], Purpose.MARGIN, currency
                )
                legs.append(Leg(margin_account, margin))
            ledger.post("test_revenue", f"revenue-{currency}", legs)
        db.session.commit()

    body = api.get("/api/v1/admin/billing/revenue", admin.token).get_json()
    assert body["platform_fees"] == [
        {"amount": 40, "currency": "EUR"},
        {"amount": 80, "currency": "USD"},
    ]
    assert body["vendor_margins"] == [
        {"organization_id": org["id"], "organization": org["name"], "amount": 20, "currency": "USD"}
    ]
    assert body["vendor_margin_totals"] == [{"amount": 20, "currency": "USD"}]
