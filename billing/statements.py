"""A worker's statement for a period, read from the ledger alone.

The worker's money sits in three accounts per currency: pending (inside the QA window),
available and payout clearing (sent to the processor, not yet confirmed). Their sum is what
the platform owes the worker. Over a period it grows by earnings and bonuses (and payouts
the processor gave back), and shrinks by reversals and by payouts the processor confirmed;
maturing earnings and starting or failing a payout only move money between the three.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from billing.models import LedgerAccount, LedgerEntry, LedgerTransaction, OwnerType, Purpose
from marketplace import clock
from marketplace.database import db
from marketplace.errors import ValidationFailed

DEFAULT_PERIOD = timedelta(days=30)

BUCKETS = {
    Purpose.PENDING: "pending",
    Purpose.AVAILABLE: "available",
    Purpose.PAYOUT_CLEARING: "in_payout",
}

# Transaction kind → the statement line it feeds, with the sign that makes the figure
# positive (earnings add, reversals take away).
LINES = {
    "settlement": ("earnings", 1),
    "bonus": ("bonuses", 1),
    "reversal": ("reversals", -1),
    "payout_paid": ("payouts", -1),
    "payout_reversed": ("payouts_returned", 1),
}


def worker_statement(
    worker_id: int, start: datetime | None, end: datetime | None, currency: str
) -> dict:
    """Balances at `start` and `end` (default: the 30 days up to now) and what moved in
    between; `start` is inclusive, `end` exclusive."""
    end = end or clock.now()
    start = start or end - DEFAULT_PERIOD
    if start >= end:
        raise ValidationFailed(
            "The period must start before it ends.", errors={"to": ["Must be after `from`."]}
        )
    accounts = dict(
        db.session.execute(
            select(LedgerAccount.id, LedgerAccount.purpose).where(
                LedgerAccount.owner_type == OwnerType.WORKER,
                LedgerAccount.owner_id == worker_id,
                LedgerAccount.currency == currency,
                LedgerAccount.purpose.in_(list(BUCKETS)),
            )
        ).all()
    )
    opening = _balances_before(accounts, start, currency)
    closing = _balances_before(accounts, end, currency)
    movements = db.session.execute(
        select(
            LedgerTransaction.kind,
            func.sum(LedgerEntry.amount),
            func.count(func.distinct(LedgerTransaction.id)),
        )
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(
            LedgerEntry.account_id.in_(list(accounts) or [-1]),
            LedgerTransaction.created_at >= start,
            LedgerTransaction.created_at < end,
        )
        .group_by(LedgerTransaction.kind)
    ).all()
    lines: dict[str, dict[str, Any]] = {
        name: {"amount": 0, "currency": currency, "count": 0} for name, _ in LINES.values()
    }
    other = 0
    for kind, net, count in movements:
        if kind in LINES:
            name, sign = LINES[kind]
            lines[name]["amount"] += sign * int(net)
            lines[name]["count"] += int(count)
        else:
            other += int(net)  # moves inside the worker's accounts net to zero
    return {
        "currency": currency,
        "from": start,
        "to": end,
        "opening": opening,
        "closing": closing,
        **lines,
        "other": {"amount": other, "currency": currency},
    }


def _balances_before(accounts: dict[int, Purpose], moment: datetime, currency: str) -> dict:
    sums = dict(
        db.session.execute(
            select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(
                LedgerEntry.account_id.in_(list(accounts) or [-1]),
                LedgerTransaction.created_at < moment,
            )
            .group_by(LedgerEntry.account_id)
        ).all()
    )
    figures = {name: 0 for name in BUCKETS.values()}
    for account_id, purpose in accounts.items():
        figures[BUCKETS[purpose]] += int(sums.get(account_id) or 0)
    figures["total"] = sum(figures.values())
    return {name: {"amount": value, "currency": currency} for name, value in figures.items()}
