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

from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from billing.models import LedgerAccount, LedgerEntry, LedgerTransaction, OwnerType, Purpose
from marketplace import clock
from marketplace.database import db, insert_or_skip
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
    if session.in_nested_transaction():
        # Releasing a savepoint fires after_commit too, but the transaction around it may
        # still roll back (a deadlock, a refused debit): remembering the account then would
        # hand a later posting the id of a row that was never committed.
        return
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
    db.session.execute(
        insert_or_skip(LedgerAccount)
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


@dataclass
class Posting:
    """One balanced transaction to write (see `post` and `post_together`)."""

    kind: str
    idempotency_key: str
    legs: list[Leg]
    job_id: int | None = None
    worker_id: int | None = None
    organization_id: int | None = None
    reference: str | None = None
    memo: str = ""
    # The caller's own rows that name the transaction, written before any balance moves.
    also: Callable[[LedgerTransaction], None] | None = None


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
    posting = Posting(
        kind, idempotency_key, legs, job_id, worker_id, organization_id, reference, memo, also
    )
    if not _moving(posting):
        return None  # nothing moves (a free job): no transaction
    nested = db.session.begin_nested() if savepoint else None
    try:
        (txn,) = _write_all([posting])
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
    return txn


def post_together(postings: list[Posting]) -> list[LedgerTransaction | None]:
    """Write several transactions at once (a task's judgments settling together): each its
    own rows, then every account's balance moved once by the sum of its legs, in LOCK_ORDER.
    The busy accounts are locked once, for one statement each, however many postings there
    are. No savepoint: the caller's failing request undoes a refused debit, and each key must
    be new (it names a row the caller holds locked). Returns one transaction per posting,
    None where nothing moves; each shows the balances after all of them."""
    moves = [_moving(p) for p in postings]
    moving = [p for p, moves_money in zip(postings, moves, strict=True) if moves_money]
    written = iter(_write_all(moving) if moving else [])
    return [next(written) if moves_money else None for moves_money in moves]


def _moving(posting: Posting) -> bool:
    """Whether the posting moves money (checking that its legs balance in one currency)."""
    legs = [leg for leg in posting.legs if leg.amount != 0]
    if not legs:
        return False
    if sum(leg.amount for leg in legs) != 0:
        total = sum(leg.amount for leg in legs)
        raise UnbalancedTransaction(f"{posting.kind}: legs sum to {total}")
    currencies = {leg.account.currency for leg in legs}
    if len(currencies) != 1:
        raise UnbalancedTransaction(f"{posting.kind}: mixed currencies {sorted(currencies)}")
    return True


def _write_all(postings: list[Posting]) -> list[LedgerTransaction]:
    db.session.flush()  # the caller's pending rows go first, before any balance
    connection = db.session.connection()
    # Core statements on the session's connection: this runs on every lease and every
    # settlement, and the ORM's unit of work costs several times the SQL.
    txns: list[LedgerTransaction] = []
    moves: dict[int, tuple[Leg, int]] = {}  # account id -> (a leg naming it, summed amount)
    for posting in postings:
        legs = [leg for leg in posting.legs if leg.amount != 0]
        fields = {
            "kind": posting.kind,
            "idempotency_key": posting.idempotency_key,
            "created_at": clock.now(),
            "job_id": posting.job_id,
            "worker_id": posting.worker_id,
            "organization_id": posting.organization_id,
            "reference": posting.reference,
            "memo": posting.memo,
        }
        txn = LedgerTransaction(**fields)
        txn.id = connection.execute(
            insert(_TRANSACTIONS).values(**fields).returning(_TRANSACTIONS.c.id)
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
        for leg in legs:
            _, summed = moves.get(leg.account.id, (leg, 0))
            moves[leg.account.id] = (leg, summed + leg.amount)
        if posting.also is not None:
            posting.also(txn)
        txns.append(txn)
    if any(p.also is not None for p in postings):
        db.session.flush()
    balances = _move_balances(connection, postings[0].kind, list(moves.values()))
    for txn in txns:
        txn.balances = balances  # each account's balance afterwards (not a column)
    # Loaded accounts show the new balances when next read.
    for account_id in moves:
        loaded = db.session.identity_map.get(identity_key(LedgerAccount, account_id))
        if loaded is not None:
            db.session.expire(loaded, ["balance"])
    return txns


def _move_balances(connection, kind: str, moves: list[tuple[Leg, int]]) -> dict[int, int]:
    """Each account's cached balance moved by its amount, in LOCK_ORDER, so postings over the
    same accounts cannot deadlock each other; a debit that would take a NON_NEGATIVE account
    below zero raises InsufficientFunds (the caller's savepoint or request undoes the rest)."""
    ordered = sorted(
        ((leg, amount) for leg, amount in moves if amount != 0),
        key=lambda move: (LOCK_ORDER[move[0].account.purpose], move[0].account.id),
    )
    if len(ordered) > 1 and connection.dialect.name == "postgresql":
        return _move_balances_at_once(connection, kind, ordered)
    balances: dict[int, int] = {}
    for leg, amount in ordered:
        statement = (
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.id == leg.account.id)
            .values(balance=_ACCOUNTS.c.balance + amount)
            .returning(_ACCOUNTS.c.balance)
        )
        if _guarded(leg, amount):
            statement = statement.where(_ACCOUNTS.c.balance + amount >= 0)
        after = connection.execute(statement).scalar()
        if after is None:
            raise _refused(kind, leg, amount)
        balances[leg.account.id] = after
    return balances


# PostgreSQL moves all of a posting's balances in one statement. Its first step (the
# one-time `locked` filter) locks the accounts in the order given, LOCK_ORDER: the sort hands
# the rows to the lock one by one. Then each is updated; a guarded debit that would go below
# zero leaves its row out of RETURNING. One statement, not one per account, so a busy
# account (a job's escrow and holds, the platform's fees) is held from this statement to the
# commit with no round trip in between in which the app has to win back its interpreter lock.
# NO KEY UPDATE, the lock an UPDATE takes, not FOR UPDATE: the foreign-key checks of other
# postings' entries hold KEY SHARE locks on these rows until they commit, which FOR UPDATE
# would wait for (and two such postings for each other).
_MOVE_AT_ONCE = text(
    """
    WITH moves AS MATERIALIZED (
        SELECT m.id, m.amount, m.guarded, m.position
        FROM unnest(CAST(:ids AS bigint[]), CAST(:amounts AS bigint[]),
                    CAST(:guarded AS boolean[]))
             WITH ORDINALITY AS m(id, amount, guarded, position)
    ), locked AS MATERIALIZED (
        SELECT a.id FROM ledger_accounts a JOIN moves m ON m.id = a.id
        WHERE a.id = ANY(CAST(:ids AS bigint[]))
        ORDER BY m.position
        FOR NO KEY UPDATE OF a
    )
    UPDATE ledger_accounts a SET balance = a.balance + m.amount
    FROM moves m
    WHERE a.id = ANY(CAST(:ids AS bigint[])) AND a.id = m.id
      AND (SELECT count(*) FROM locked) > 0
      AND (NOT m.guarded OR a.balance + m.amount >= 0)
    RETURNING a.id, a.balance
    """
)


def _move_balances_at_once(connection, kind: str, ordered: list[tuple[Leg, int]]) -> dict[int, int]:
    rows = connection.execute(
        _MOVE_AT_ONCE,
        {
            "ids": [leg.account.id for leg, _ in ordered],
            "amounts": [amount for _, amount in ordered],
            "guarded": [_guarded(leg, amount) for leg, amount in ordered],
        },
    ).all()
    balances = {account_id: balance for account_id, balance in rows}
    for leg, amount in ordered:
        if leg.account.id not in balances:
            raise _refused(kind, leg, amount)
    return balances


def _guarded(leg: Leg, amount: int) -> bool:
    return amount < 0 and leg.account.purpose in NON_NEGATIVE


def _refused(kind: str, leg: Leg, amount: int) -> InsufficientFunds:
    return InsufficientFunds(
        f"Not enough money in the {leg.account.purpose.value} account for this "
        f"{kind} ({-amount} {leg.account.currency} needed).",
        account=leg.account.purpose.value,
    )


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
