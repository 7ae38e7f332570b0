"""Ledger checks every billing test can run at its end."""

from __future__ import annotations

from sqlalchemy import func, select

from billing.models import LedgerAccount, LedgerEntry


def assert_ledger_consistent(session) -> None:
    """Every transaction sums to zero; every cached balance equals the sum of its legs."""
    unbalanced = session.execute(
        select(LedgerEntry.transaction_id, func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.transaction_id)
        .having(func.sum(LedgerEntry.amount) != 0)
    ).all()
    assert unbalanced == []
    sums = dict(
        session.execute(
            select(LedgerEntry.account_id, func.sum(LedgerEntry.amount)).group_by(
                LedgerEntry.account_id
            )
        ).all()
    )
    for account in session.scalars(select(LedgerAccount)):
        assert account.balance == sums.get(account.id, 0), account.purpose
