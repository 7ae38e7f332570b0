"""Posting to the double-entry ledger. The only code that writes ledger rows.

`post()` writes one transaction: its legs must sum to zero in one currency, its idempotency
key is unique (posting the same key again returns the first transaction and changes
nothing), and every leg updates its account's cached balance in the same statement batch.
Accounts that hold real money for someone (a client's balance, a job's escrow and holds,
a worker's pending and available earnings, payout clearing) may never go below zero: the
guarded UPDATE refuses, and the whole transaction with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from billing.models import LedgerAccount, LedgerEntry, LedgerTransaction, OwnerType, Purpose
from marketplace import clock
from marketplace.database import db
from marketplace.errors import InsufficientFunds

_TRANSACTIONS = LedgerTransaction.__table__
_ENTRIES = LedgerEntry.__table__
_ACCOUNTS = LedgerAccount.__table__

NON_NEGATIVE = {
    Purpose.BALANCE,
    Purpose.ESCROW,
    Purpose.HOLDS,
    Purpose.PENDING,
    Purpose.AVAILABLE,
    Purpose.PAYOUT_CLEARING,
}


# The order in which a posting locks its accounts (by id within a purpose): a job's, then
# the processor's and the platform's, then organizations', then workers'. So no two postings
# take the same accounts in opposite orders, whenever each account happened to be created,
# and the hot platform accounts come after a job's (which callers may have locked first).
LOCK_ORDER = {
    purpose: rank
    for rank, purpose in enumerate(
        (
            Purpose.ESCROW,
            Purpose.HOLDS,
            Purpose.PROCESSOR,
            Purpose.FEES,
            Purpose.BALANCE,
            Purpose.MARGIN,
            Purpose.PENDING,
            Purpose.AVAILABLE,
            Purpose.PAYOUT_CLEARING,
        )
    )
}


class UnbalancedTransaction(ValueError):
    """Legs that do not sum to zero, or mix currencies: a programming error."""


@dataclass(frozen=True)
class AccountRef:
    """What a posting needs of an account, without loading its row (see `ref`)."""

    id: int
    purpose: Purpose
    currency: str


@dataclass(frozen=True)
class Leg:
    account: LedgerAccount | AccountRef
    amount: int


# Account ids by (owner type, owner id, purpose, currency), per database engine. An account's
# identity never changes and accounts are never deleted, so the hot paths (a hold per lease,
# a settlement per judgment) need not look their accounts up on every posting. Only ids of
# committed accounts are remembered: one created in a transaction waits in the session until
# it commits, and any rollback (a savepoint's too) forgets what waited.
_KNOWN: weakref.WeakKeyDictionary[Engine, dict[tuple, int]] = weakref.WeakKeyDictionary()
_KNOWN_LIMIT = 100_000
_STAGED = "crowdline.ledger.staged_accounts"


def ref(owner_type: OwnerType, owner_id: int, purpose: Purpose, currency: str) -> AccountRef:
    """The account for (owner, purpose, currency) as a reference, created on first use."""
    key = (owner_type, owner_id, purpose, currency)
    known = _KNOWN.setdefault(db.engine, {})
    account_id = known.get(key)
    if account_id is None:
        account_id = account(owner_type, owner_id, purpose, currency).id
        db.session.info.setdefault(_STAGED, {})[key] = account_id
    return AccountRef(account_id, purpose, currency)


def platform_ref(purpose: Purpose, currency: str) -> AccountRef:
    return ref(OwnerType.PLATFORM, 0, purpose, currency)


def forget_known_accounts() -> None:
    """Drop every remembered account id (tests empty the tables between runs)."""
    _KNOWN.clear()


@event.listens_for(Session, "after_commit")
def _remember_committed_accounts(session: Session) -> None:
    staged = session.info.pop(_STAGED, None)
    if staged:
        bind = session.get_bind()
        engine = bind.engine if hasattr(bind, "engine") else bind
        known = _KNOWN.setdefault(engine, {})
        if len(known) + len(staged) > _KNOWN_LIMIT:
            known.clear()
        known.update(staged)


@event.listens_for(Session, "after_soft_rollback")
def _forget_staged_accounts(session: Session, _previous) -> None:
    session.info.pop(_STAGED, None)


def account(owner_type: OwnerType, owner_id: int, purpose: Purpose, currency: str) -> LedgerAccount:
    """The account for (owner, purpose, currency), created on first use (race-safe)."""
    key = {
        "owner_type": owner_type,
        "owner_id": owner_id,
        "purpose": purpose,
        "currency": currency,
    }
    found = db.session.scalar(select(LedgerAccount).filter_by(**key))
    if found is not None:
        return found
    insert_ = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    db.session.execute(
        insert_(LedgerAccount)
        .values(**key, balance=0, created_at=clock.now())
        .on_conflict_do_nothing(index_elements=list(key))
    )
    return db.session.scalar(select(LedgerAccount).filter_by(**key))


def platform(purpose: Purpose, currency: str) -> LedgerAccount:
    return account(OwnerType.PLATFORM, 0, purpose, currency)


def processor(currency: str) -> LedgerAccount:
    return account(OwnerType.PROCESSOR, 0, Purpose.PROCESSOR, currency)


def find(idempotency_key: str) -> LedgerTransaction | None:
    return db.session.scalar(
        select(LedgerTransaction).where(LedgerTransaction.idempotency_key == idempotency_key)
    )


def post(
    kind: str,
    idempotency_key: str,
    legs: list[Leg],
    *,
    job_id: int | None = None,
    worker_id: int | None = None,
    organization_id: int | None = None,
    reference: str | None = None,
    memo: str = "",
    also: Callable[[LedgerTransaction], None] | None = None,
    savepoint: bool = True,
) -> LedgerTransaction | None:
    """Write one balanced transaction (in the caller's database transaction).

    Rows first, balances last: the transaction and its entries are inserted, then `also`
    (the caller's own rows that name the transaction) is written, and only then are the
    accounts' cached balances updated, in LOCK_ORDER. Busy accounts (a job's escrow and
    holds, the platform's fees) are thus locked for as short a time as the caller allows:
    a hot path that posts as its last write holds them only until its commit.

    `savepoint=False` is for callers whose own savepoint (or whose failing request) undoes
    a refused debit, and whose key cannot have been posted before (it names a row they hold
    locked or have just created): it saves two statements per posting."""
    legs = [leg for leg in legs if leg.amount != 0]
    if not legs:
        return None  # nothing moves (a free job): no transaction
    if sum(leg.amount for leg in legs) != 0:
        raise UnbalancedTransaction(f"{kind}: legs sum to {sum(leg.amount for leg in legs)}")
    currencies = {leg.account.currency for leg in legs}
    if len(currencies) != 1:
        raise UnbalancedTransaction(f"{kind}: mixed currencies {sorted(currencies)}")
    # No look-up first: the unique key refuses a replay, which then returns the first one.
    nested = db.session.begin_nested() if savepoint else None
    try:
        db.session.flush()  # the caller's pending rows go first, before any balance
        connection = db.session.connection()
        # Core statements on the session's connection: this runs on every lease and every
        # settlement, and the ORM's unit of work costs several times the SQL.
        txn = LedgerTransaction(
            kind=kind,
            idempotency_key=idempotency_key,
            created_at=clock.now(),
            job_id=job_id,
            worker_id=worker_id,
            organization_id=organization_id,
            reference=reference,
            memo=memo,
        )
        txn.id = connection.execute(
            insert(_TRANSACTIONS)
            .values(
                kind=kind,
                idempotency_key=idempotency_key,
                created_at=txn.created_at,
                job_id=job_id,
                worker_id=worker_id,
                organization_id=organization_id,
                reference=reference,
                memo=memo,
            )
            .returning(_TRANSACTIONS.c.id)
        ).scalar_one()
        connection.execute(
            insert(_ENTRIES),
            [
                {
                    "transaction_id": txn.id,
                    "account_id": leg.account.id,
                    "amount": leg.amount,
                    "currency": leg.account.currency,
                }
                for leg in legs
            ],
        )
        if also is not None:
            also(txn)
            db.session.flush()
        # In LOCK_ORDER, so postings over the same accounts cannot deadlock each other (a
        # refused debit rolls every leg back with the savepoint).
        balances: dict[int, int] = {}
        for leg in sorted(legs, key=lambda leg: (LOCK_ORDER[leg.account.purpose], leg.account.id)):
            statement = (
                update(_ACCOUNTS)
                .where(_ACCOUNTS.c.id == leg.account.id)
                .values(balance=_ACCOUNTS.c.balance + leg.amount)
                .returning(_ACCOUNTS.c.balance)
            )
            if leg.amount < 0 and leg.account.purpose in NON_NEGATIVE:
                statement = statement.where(_ACCOUNTS.c.balance + leg.amount >= 0)
            after = connection.execute(statement).scalar()
            if after is None:
                raise InsufficientFunds(
                    f"Not enough money in the {leg.account.purpose.value} account for this "
                    f"{kind} ({-leg.amount} {leg.account.currency} needed).",
                    account=leg.account.purpose.value,
                )
            balances[leg.account.id] = after
        txn.balances = balances  # each account's balance after this posting (not a column)
        if nested is not None:
            nested.commit()
    except IntegrityError:
        if nested is None:
            raise
        nested.rollback()
        if existing := find(idempotency_key):  # a concurrent post of the same key won
            return existing
        raise
    except Exception:
        if nested is not None:
            nested.rollback()
        raise
    # Loaded accounts show the new balances when next read.
    for leg in legs:
        loaded = db.session.identity_map.get(identity_key(LedgerAccount, leg.account.id))
        if loaded is not None:
            db.session.expire(loaded, ["balance"])
    return txn


def balance(account_: LedgerAccount) -> int:
    """The balance derived from the legs (the cache must always equal it)."""
    return db.session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_.id
        )
    )


def current_balance(owner_type: OwnerType, owner_id: int, purpose: Purpose, currency: str) -> int:
    found = db.session.scalar(
        select(LedgerAccount.balance).where(
            LedgerAccount.owner_type == owner_type,
            LedgerAccount.owner_id == owner_id,
            LedgerAccount.purpose == purpose,
            LedgerAccount.currency == currency,
        )
    )
    return found or 0
