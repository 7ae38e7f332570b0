"""Payouts: the run that sends workers' available earnings to their payout accounts (see
billing.payout_accounts) through the processor.

A payout is written in two steps so the processor can never pay twice, whatever dies when:
first one database transaction creates the Payout (its processor idempotency key is derived
from its id) and moves the money from the worker's available account to payout clearing;
only after that commit is the transfer requested, with that key. A run that is killed
anywhere leaves the payout pending, the next run asks again with the same key, and the
processor answers with the transfer it already made. The transfer's outcome is recorded
while the payout's row is locked (`SKIP LOCKED`), so concurrent runs never send one payout
at the same time.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, exists, func, or_, select

from billing import ledger, payout_accounts
from billing.gateway import GatewayError, gateway
from billing.ledger import Leg
from billing.models import (
    LedgerAccount,
    OwnerType,
    Payout,
    PayoutAccount,
    PayoutAccountStatus,
    PayoutStatus,
    Purpose,
)
from marketplace import audit, clock
from marketplace.database import db
from marketplace.errors import InsufficientFunds

log = logging.getLogger(__name__)

# The webhook handlers (account.updated) reach it here too.
mark_payout_account_in_txn = payout_accounts.mark_payout_account_in_txn

# Retryable failures back off 1, 2, 4 … minutes; after MAX_ATTEMPTS the payout fails. All
# attempts fit well inside the 24 hours a Stripe idempotency key is remembered, so every
# retry is still deduplicated by the processor.
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
# A worker whose payout failed is not paid again for a day, counted from when that payout
# started (an admin looks first), so an account the processor refuses does not collect one
# failed payout per run.
FAILED_COOLDOWN = timedelta(days=1)
DEFAULT_BATCH = 100


def settings():
    return current_app.config["CROWDLINE"]


# --- the payout run -----------------------------------------------------------------------


@dataclass
class PayoutRunSummary:
    created: int = 0
    attempted: int = 0
    paid: int = 0
    retrying: int = 0
    failed: int = 0
    paid_amounts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "attempted": self.attempted,
            "paid": self.paid,
            "retrying": self.retrying,
            "failed": self.failed,
            "paid_amounts": dict(self.paid_amounts),
        }


@dataclass(frozen=True)
class PayoutEvent:
    """What happened to one payout during a run (for progress output)."""

    outcome: str  # created | paid | retrying | failed
    payout_id: int
    worker_id: int
    amount: int
    currency: str
    attempts: int
    transfer_id: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, outcome: str, payout: Payout) -> PayoutEvent:
        return cls(
            outcome,
            payout.id,
            payout.worker_id,
            payout.amount,
            payout.currency,
            payout.attempts,
            payout.processor_transfer_id,
            payout.last_error,
        )


Progress = Callable[[PayoutEvent], None]


def run_payouts(
    batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
) -> PayoutRunSummary:
    """Retry the pending payouts that are due, then pay every worker with a ready payout
    account whose available balance reached the minimum, in batches. Commits as it goes."""
    summary = PayoutRunSummary()
    report = progress or (lambda _event: None)
    after = 0
    while ids := _due_pending_ids(after, batch_size):
        for payout_id in ids:
            _send(payout_id, summary, report)
        after = ids[-1]
    after = 0
    while True:
        created, after = _create_batch(after, batch_size, summary, report)
        if after is None:
            break
        for payout_id in created:
            _send(payout_id, summary, report)
    db.session.rollback()  # leave no transaction open behind the run
    return summary


def due_counts() -> dict[str, int]:
    """How much work a run has ahead of it (for the CLI's opening line)."""
    pending = db.session.scalar(select(func.count()).select_from(Payout).where(_is_due()))
    workers = db.session.scalar(select(func.count()).select_from(_candidates().subquery()))
    db.session.rollback()
    return {"pending_due": pending, "workers_due": workers}


def _is_due():
    return and_(
        Payout.status == PayoutStatus.PENDING,
        or_(Payout.next_attempt_at.is_(None), Payout.next_attempt_at <= clock.now()),
    )


def _due_pending_ids(after: int, limit: int) -> list[int]:
    ids = list(
        db.session.scalars(
            select(Payout.id).where(_is_due(), Payout.id > after).order_by(Payout.id).limit(limit)
        )
    )
    db.session.rollback()  # end the read; each payout is then sent in its own transaction
    return ids


def _candidates():
    """Available accounts due a payout: a ready payout account, at least the minimum, no
    payout in flight in that currency, none failed recently."""
    in_flight = exists().where(
        Payout.worker_id == LedgerAccount.owner_id,
        Payout.currency == LedgerAccount.currency,
        Payout.status == PayoutStatus.PENDING,
    )
    failed_lately = exists().where(
        Payout.worker_id == LedgerAccount.owner_id,
        Payout.currency == LedgerAccount.currency,
        Payout.status == PayoutStatus.FAILED,
        Payout.created_at > clock.now() - FAILED_COOLDOWN,
    )
    return (
        select(LedgerAccount)
        .join(PayoutAccount, PayoutAccount.worker_id == LedgerAccount.owner_id)
        .where(
            LedgerAccount.owner_type == OwnerType.WORKER,
            LedgerAccount.purpose == Purpose.AVAILABLE,
            LedgerAccount.balance >= _minimum(),
            PayoutAccount.status == PayoutAccountStatus.READY,
            ~in_flight,
            ~failed_lately,
        )
    )


def _minimum() -> int:
    return max(1, settings().payout_minimum)


def _create_batch(
    after: int, limit: int, summary: PayoutRunSummary, report: Progress
) -> tuple[list[int], int | None]:
    """One transaction: a pending payout (and its ledger move to clearing) for each of the
    next `limit` due accounts. Returns the new payout ids and where the next batch starts."""
    accounts = list(
        db.session.scalars(
            _candidates()
            .where(LedgerAccount.id > after)
            .order_by(LedgerAccount.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=LedgerAccount)
            .execution_options(populate_existing=True)
        )
    )
    if not accounts:
        db.session.rollback()
        return [], None
    events = []
    for available in accounts:
        if available.balance < _minimum():
            continue
        try:
            with db.session.begin_nested():
                events.append(PayoutEvent.of("created", _start_payout(available)))
        except InsufficientFunds:  # the balance moved under us; the next run sees it
            log.warning("payout for ledger account %s skipped: balance moved", available.id)
    next_after = accounts[-1].id
    db.session.commit()
    for event in events:
        summary.created += 1
        report(event)
    return [event.payout_id for event in events], next_after


def _start_payout(available: LedgerAccount) -> Payout:
    worker_id, currency, amount = available.owner_id, available.currency, available.balance
    payout = Payout(
        worker_id=worker_id,
        amount=amount,
        currency=currency,
        status=PayoutStatus.PENDING,
        idempotency_key=f"payout-new-{secrets.token_hex(12)}",  # replaced once the id exists
        attempts=0,
        created_at=clock.now(),
    )
    db.session.add(payout)
    db.session.flush()
    # The id, and a random part: a database rebuilt from scratch reuses ids, and a key the
    # processor still remembers (Stripe: 24 hours) would replay an old transfer.
    payout.idempotency_key = f"payout-{payout.id}-{secrets.token_hex(4)}"
    ledger.post(
        "payout",
        f"payout:{payout.id}",
        [Leg(available, -amount), Leg(_clearing(worker_id, currency), amount)],
        worker_id=worker_id,
        reference=payout.idempotency_key,
        memo="payout started",
    )
    return payout


def _send(payout_id: int, summary: PayoutRunSummary, report: Progress) -> None:
    """Ask the processor for one pending payout's transfer and record the answer, holding
    the payout's row lock throughout (another run skips it)."""
    payout = db.session.scalar(
        select(Payout)
        .where(Payout.id == payout_id, _is_due())
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if payout is None:
        db.session.rollback()  # paid, failed, not due, or being sent by another run
        return
    summary.attempted += 1
    destination = db.session.scalar(
        select(PayoutAccount.processor_account_id).where(
            PayoutAccount.worker_id == payout.worker_id
        )
    )
    if payout.attempts >= MAX_ATTEMPTS:
        _resolve_unknown_outcome(payout)  # never ask for the transfer again: only look
    else:
        _try_transfer(payout, destination)
    outcome = {PayoutStatus.PAID: "paid", PayoutStatus.FAILED: "failed"}.get(
        payout.status, "retrying"
    )
    event = PayoutEvent.of(outcome, payout)
    db.session.commit()
    setattr(summary, outcome, getattr(summary, outcome) + 1)
    if outcome == "paid":
        summary.paid_amounts[event.currency] += event.amount
    report(event)


def _try_transfer(payout: Payout, destination: str | None) -> None:
    try:
        transfer = gateway().create_transfer(
            payout.amount, payout.currency, destination, idempotency_key=payout.idempotency_key
        )
    except GatewayError as error:
        _record_failure(payout, error)
    except Exception as error:  # an unexpected answer: the outcome is unknown, so retry
        log.exception("payout %s: unexpected error from the gateway", payout.id)
        _record_failure(payout, GatewayError(f"{type(error).__name__}: {error}"))
    else:
        payout.attempts += 1
        _record_paid(payout, transfer.id)


def _record_paid(payout: Payout, transfer_id: str) -> None:
    ledger.post(
        "payout_paid",
        f"payout-paid:{payout.id}",
        [
            Leg(_clearing(payout.worker_id, payout.currency), -payout.amount),
            Leg(ledger.processor(payout.currency), payout.amount),
        ],
        worker_id=payout.worker_id,
        reference=transfer_id,
        memo=f"transfer for {payout.idempotency_key}",
    )
    payout.status = PayoutStatus.PAID
    payout.processor_transfer_id = transfer_id
    payout.paid_at = clock.now()
    payout.next_attempt_at = None
    payout.last_error = None


def _record_failure(payout: Payout, error: GatewayError) -> None:
    payout.attempts += 1
    payout.last_error = str(error)[:1000]
    if not error.retryable:
        _give_back(payout, "payout_failed", f"payout-failed:{payout.id}", "refused")
    elif payout.attempts < MAX_ATTEMPTS:
        payout.next_attempt_at = clock.now() + timedelta(seconds=backoff_seconds(payout.attempts))
    else:
        _resolve_unknown_outcome(payout)


def _resolve_unknown_outcome(payout: Payout) -> None:
    """Every request for this payout failed without a refusal: any of them (a timeout, a
    5xx after the processor acted) may have made the transfer. Ask the processor before
    giving the money back; while it cannot say, the payout stays pending — looked up again
    later, never requested again — and admins see it in the audit log."""
    try:
        found = gateway().find_transfer(payout.idempotency_key)
    except Exception as error:  # a GatewayError, or an answer we could not read
        if not isinstance(error, GatewayError):
            log.exception("payout %s: unexpected error looking the transfer up", payout.id)
        payout.last_error = f"outcome unknown, lookup failed: {error}"[:1000]
        payout.next_attempt_at = clock.now() + timedelta(seconds=BACKOFF_CAP_SECONDS)
        audit.record(
            "billing.payout_unresolved",
            "payout",
            payout.id,
            detail={"worker_id": payout.worker_id, "amount": payout.amount, "error": str(error)},
        )
        return
    if found is not None:
        _record_paid(payout, found.id)
        return
    _give_back(
        payout,
        "payout_failed",
        f"payout-failed:{payout.id}",
        f"gave up after {payout.attempts} attempts (no transfer at the processor)",
    )


def backoff_seconds(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failed attempt."""
    return min(BACKOFF_BASE_SECONDS * 2 ** (attempts - 1), BACKOFF_CAP_SECONDS)


def _give_back(payout: Payout, kind: str, key: str, reason: str) -> None:
    """The payout failed: its money returns to the worker's available balance, and admins
    find it among failed payouts and in the audit log."""
    source = (
        ledger.processor(payout.currency)
        if payout.status == PayoutStatus.PAID
        else _clearing(payout.worker_id, payout.currency)
    )
    ledger.post(
        kind,
        key,
        [
            Leg(source, -payout.amount),
            Leg(_available(payout.worker_id, payout.currency), payout.amount),
        ],
        worker_id=payout.worker_id,
        reference=(
            f"reversal:{payout.processor_transfer_id}"
            if payout.status == PayoutStatus.PAID
            else payout.idempotency_key
        ),
        memo=f"{reason}: {payout.last_error or ''}"[:500],
    )
    audit.record(
        "billing.payout_failed",
        "payout",
        payout.id,
        detail={
            "worker_id": payout.worker_id,
            "amount": payout.amount,
            "currency": payout.currency,
            "reason": reason,
            "error": payout.last_error,
            "transfer": payout.processor_transfer_id,
        },
    )
    payout.status = PayoutStatus.FAILED
    payout.next_attempt_at = None


def on_transfer_failed_in_txn(transfer_id: str, reason: str = "transfer reversed") -> Payout | None:
    """A transfer the processor had made was reversed or failed afterwards: the payout
    fails and its money returns to the worker's available balance (once). None when the
    transfer is not one of ours. Does not commit."""
    payout = db.session.scalar(
        select(Payout).where(Payout.processor_transfer_id == transfer_id).with_for_update()
    )
    if payout is None:
        return None
    if payout.status == PayoutStatus.PAID:
        payout.last_error = reason[:1000]
        _give_back(payout, "payout_reversed", f"payout-reversed:{payout.id}", reason)
    return payout


def on_transfer_failed(transfer_id: str, reason: str = "transfer reversed") -> Payout | None:
    """`on_transfer_failed_in_txn`, committed."""
    payout = on_transfer_failed_in_txn(transfer_id, reason)
    db.session.commit()
    return payout


def _clearing(worker_id: int, currency: str) -> LedgerAccount:
    return ledger.account(OwnerType.WORKER, worker_id, Purpose.PAYOUT_CLEARING, currency)


def _available(worker_id: int, currency: str) -> LedgerAccount:
    return ledger.account(OwnerType.WORKER, worker_id, Purpose.AVAILABLE, currency)


# --- requests and listings ----------------------------------------------------------------


def request_payout_run() -> None:
    """Queue a payout run now (platform admins; audited). Commits."""
    from marketplace.background import enqueue

    audit.record("billing.payout_run_requested", "payout_run", "on-demand")
    enqueue("billing.tasks.run_payouts", job_id="payout-run-on-demand")
    db.session.commit()


def list_payouts(args: dict[str, Any], worker_id: int | None = None) -> dict[str, Any]:
    """Payouts, oldest first, cursor-paged; one worker's, or any (filtered) for admins."""
    from marketplace.pagination import paginate

    query = select(Payout)
    if worker_id is not None:
        query = query.where(Payout.worker_id == worker_id)
    elif args.get("worker_id"):
        query = query.where(Payout.worker_id == args["worker_id"])
    if args.get("status"):
        query = query.where(Payout.status == args["status"])
    return paginate(query, Payout.id, args)
