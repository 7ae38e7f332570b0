"""Helpers for payout tests: workers with payout accounts, money in their available balance,
and the figures that must add up afterwards."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from billing import ledger, payouts
from billing.ledger import Leg
from billing.models import LedgerTransaction, OwnerType, Payout, PayoutStatus, Purpose
from marketplace.database import db
from tests.helpers import Account, Api
from tests.workforce import worker_id


def connected_worker(api: Api, country: str = "US") -> tuple[Account, int]:
    """A worker with a payout account (ready at once with the offline gateway)."""
    worker = api.signup("worker")
    response = api.post(
        "/api/v1/workers/me/payout-account", worker.token, json={"country": country}
    )
    assert response.status_code == 201, response.get_json()
    return worker, worker_id(api, worker)


def credit_available(app, worker: int, amount: int, currency: str = "USD") -> None:
    """Put money straight into a worker's available balance (where the flow that earns it
    is not what the test is about)."""
    with app.app_context():
        ledger.post(
            "test_credit",
            f"test-credit:{uuid.uuid4().hex}",
            [
                Leg(ledger.processor(currency), -amount),
                Leg(ledger.account(OwnerType.WORKER, worker, Purpose.AVAILABLE, currency), amount),
            ],
            worker_id=worker,
        )
        db.session.commit()


def run_payouts(app, **kwargs: Any) -> payouts.PayoutRunSummary:
    with app.app_context():
        return payouts.run_payouts(**kwargs)


def balance(session, worker: int, purpose: Purpose, currency: str = "USD") -> int:
    from billing.models import LedgerAccount

    found = session.scalar(
        select(LedgerAccount.balance).where(
            LedgerAccount.owner_type == OwnerType.WORKER,
            LedgerAccount.owner_id == worker,
            LedgerAccount.purpose == purpose,
            LedgerAccount.currency == currency,
        )
    )
    return found or 0


def paid_total(session, worker: int) -> int:
    return session.scalar(
        select(func.coalesce(func.sum(Payout.amount), 0)).where(
            Payout.worker_id == worker, Payout.status == PayoutStatus.PAID
        )
    )


def credited_total(session, worker: int) -> int:
    """What test_credit put into the worker's available balance."""
    from billing.models import LedgerAccount, LedgerEntry

    return session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(
            LedgerTransaction.kind == "test_credit",
            LedgerAccount.owner_type == OwnerType.WORKER,
            LedgerAccount.owner_id == worker,
        )
    )


def assert_money_kept(session, worker: int) -> None:
    """available + payout clearing + paid out = what the worker was credited."""
    kept = (
        balance(session, worker, Purpose.AVAILABLE)
        + balance(session, worker, Purpose.PAYOUT_CLEARING)
        + paid_total(session, worker)
    )
    assert kept == credited_total(session, worker), worker


def kinds(session, worker: int) -> list[str]:
    return list(
        session.scalars(
            select(LedgerTransaction.kind)
            .where(LedgerTransaction.worker_id == worker)
            .order_by(LedgerTransaction.id)
        )
    )
