"""Money rules: funding, holds, settlement, earnings, bonuses, reversals, refunds, balances.

Callers from the job loop pass plain ids and amounts (billing imports nothing to its right).
Functions named `*_in_txn` write inside the caller's database transaction and never commit;
the others are public service calls that commit once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from blinker import Namespace
from flask import current_app
from sqlalchemy import func, select, update

from billing import ledger
from billing.gateway import GatewayError, gateway
from billing.ledger import Leg
from billing.models import (
    Earning,
    EarningKind,
    EarningStatus,
    Hold,
    HoldStatus,
    LedgerAccount,
    LedgerTransaction,
    OwnerType,
    Payment,
    PaymentStatus,
    Purpose,
    Refund,
)
from marketplace import audit, clock
from marketplace.database import db
from marketplace.errors import Conflict, InsufficientFunds, NotFound, ServiceUnavailable
from marketplace.locking import get_for_update

# Sent inside the transaction that credits new money (kwargs: job_id, possibly None).
funds_added = Namespace().signal("funds-added")

# Who may not have pending pay mature for now, though its QA window has closed: each hold
# takes worker ids and returns those to hold. The fraud engine registers one (a worker it
# restricted or suspended, awaiting review); billing knows nothing of fraud itself.
_PAY_HOLDS: list[Callable[[list[int]], set[int]]] = []


def hold_maturing_pay(hold: Callable[[list[int]], set[int]]) -> Callable[[list[int]], set[int]]:
    """Register a hold on maturing pay (a decorator)."""
    if hold not in _PAY_HOLDS:
        _PAY_HOLDS.append(hold)
    return hold


def pay_held(worker_ids: list[int]) -> set[int]:
    """The workers among `worker_ids` whose pending pay a registered hold keeps pending."""
    held: set[int] = set()
    for hold in _PAY_HOLDS:
        held |= hold(worker_ids)
    return held


def settings():
    return current_app.config["CROWDLINE"]


def platform_fee(price: int) -> int:
    """The platform's fee on a price, rounded half up to a whole minor unit."""
    return (price * settings().platform_fee_bps + 5000) // 10_000


def _job(purpose: Purpose, job_id: int, currency: str):
    return ledger.account(OwnerType.JOB, job_id, purpose, currency)


def _worker(purpose: Purpose, worker_id: int, currency: str):
    return ledger.account(OwnerType.WORKER, worker_id, purpose, currency)


def _job_ref(purpose: Purpose, job_id: int, currency: str) -> ledger.AccountRef:
    return ledger.ref(OwnerType.JOB, job_id, purpose, currency)


def _worker_ref(purpose: Purpose, worker_id: int, currency: str) -> ledger.AccountRef:
    return ledger.ref(OwnerType.WORKER, worker_id, purpose, currency)


# --- funding ------------------------------------------------------------------------------


def start_job_funding(
    organization_id: int,
    job_id: int | None,
    amount: int,
    currency: str,
    user_id: int | None,
    idempotency_key: str,
) -> Payment:
    """Open a PaymentIntent for `amount`; the ledger moves when the processor confirms it."""
    try:
        intent = gateway().create_payment_intent(
            amount,
            currency,
            {"organization_id": str(organization_id), "job_id": str(job_id or "")},
            idempotency_key=f"fund:{idempotency_key}",
        )
    except GatewayError as error:
        raise ServiceUnavailable(f"The payment processor is unavailable: {error}") from None
    payment = db.session.scalar(select(Payment).where(Payment.payment_intent_id == intent.id))
    if payment is None:
        payment = Payment(
            organization_id=organization_id,
            job_id=job_id,
            amount=amount,
            currency=currency,
            gateway=gateway().name,
            payment_intent_id=intent.id,
            status=PaymentStatus.REQUIRES_PAYMENT,
            created_by_user_id=user_id,
            created_at=clock.now(),
        )
        db.session.add(payment)
        db.session.flush()
        audit.record(
            "billing.funding_started",
            "payment",
            payment.id,
            organization_id=organization_id,
            detail={
                "amount": amount,
                "currency": currency,
                "job_id": job_id,
                "payment_intent": intent.id,
            },
        )
    payment.client_secret = intent.client_secret  # shown to the caller, never stored
    if intent.status == "succeeded":
        apply_payment_succeeded_in_txn(intent.id, intent.amount)
    db.session.commit()
    return payment


def apply_payment_succeeded_in_txn(payment_intent_id: str, amount: int) -> LedgerTransaction | None:
    """Credit a confirmed payment to its job's escrow (or the client's balance). Idempotent:
    the ledger key is the PaymentIntent id, so a replayed confirmation changes nothing."""
    payment = db.session.scalar(
        select(Payment).where(Payment.payment_intent_id == payment_intent_id).with_for_update()
    )
    if payment is None:
        return None  # not ours (or not yet recorded): the event handler retries later
    if amount != payment.amount:
        raise Conflict(f"Processor amount {amount} differs from the payment's {payment.amount}.")
    credit = (
        _job(Purpose.ESCROW, payment.job_id, payment.currency)
        if payment.job_id
        else ledger.account(
            OwnerType.ORGANIZATION, payment.organization_id, Purpose.BALANCE, payment.currency
        )
    )
    if payment.status != PaymentStatus.SUCCEEDED:
        payment.status = PaymentStatus.SUCCEEDED
        payment.succeeded_at = clock.now()
        # Before the ledger moves: listeners write the job's row, and every transaction takes
        # a job's row before its ledger accounts, so none can wait on another in a cycle.
        funds_added.send(payment, job_id=payment.job_id)
    return ledger.post(
        "funding",
        f"payment:{payment_intent_id}",
        [Leg(ledger.processor(payment.currency), -payment.amount), Leg(credit, payment.amount)],
        job_id=payment.job_id,
        organization_id=payment.organization_id,
        reference=payment_intent_id,
        memo="funding confirmed by the processor",
    )


def move_balance_to_job(
    organization_id: int, job_id: int, amount: int, currency: str, key: str
) -> LedgerTransaction:
    """Allocate some of the client's balance to a job's budget (commits)."""
    txn = ledger.post(
        "allocation",
        f"allocate:{key}",
        [
            Leg(
                ledger.account(OwnerType.ORGANIZATION, organization_id, Purpose.BALANCE, currency),
                -amount,
            ),
            Leg(_job(Purpose.ESCROW, job_id, currency), amount),
        ],
        job_id=job_id,
        organization_id=organization_id,
    )
    db.session.commit()
    return txn


def refund_unused_budget(
    organization_id: int, job_id: int, amount: int, currency: str, key: str
) -> Refund:
    """Give unspent budget back to the card it came from (most recent payments first)."""
    # Locked before it is read: nothing may spend it between this check and the processor's
    # refund, or the processor would return money the ledger then refuses to take out.
    escrow = get_for_update(LedgerAccount, _job(Purpose.ESCROW, job_id, currency).id)
    if escrow.balance < amount:
        raise InsufficientFunds(
            f"Only {escrow.balance} {currency} of the budget is free to refund.",
            errors={"amount": [f"At most {escrow.balance}."]},
        )
    payments = list(
        db.session.scalars(
            select(Payment)
            .where(Payment.job_id == job_id, Payment.status == PaymentStatus.SUCCEEDED)
            .order_by(Payment.id.desc())
            .with_for_update()
        )
    )
    payment = next((p for p in payments if p.amount - p.refunded_amount >= amount), None)
    if payment is None:
        raise Conflict(
            "No single payment has that much left to refund; refund in smaller amounts.",
            errors={"amount": ["Larger than any one payment's refundable remainder."]},
        )
    try:
        refund_id = gateway().refund(payment.payment_intent_id, amount, f"refund:{key}")
    except GatewayError as error:
        raise ServiceUnavailable(f"The payment processor is unavailable: {error}") from None
    if done := db.session.scalar(select(Refund).where(Refund.processor_refund_id == refund_id)):
        # The same request again (its Idempotency-Key record expired): the processor answered
        # with the refund it already made, which is already recorded.
        db.session.commit()
        return done
    ledger.post(
        "refund",
        f"refund:{refund_id}",
        [Leg(escrow, -amount), Leg(ledger.processor(currency), amount)],
        job_id=job_id,
        organization_id=organization_id,
        reference=refund_id,
    )
    payment.refunded_amount += amount
    refund = Refund(
        payment_id=payment.id,
        amount=amount,
        currency=currency,
        processor_refund_id=refund_id,
        status="succeeded",
        created_at=clock.now(),
    )
    db.session.add(refund)
    db.session.flush()
    audit.record(
        "billing.refunded",
        "refund",
        refund.id,
        organization_id=organization_id,
        detail={"job_id": job_id, "amount": amount},
    )
    db.session.commit()
    return refund


# --- holds and settlement (called by the job loop, inside its transaction) ---------------


def place_hold_in_txn(
    *,
    job_id: int,
    worker_id: int,
    assignment_id: int,
    price: int,
    currency: str,
    margin: int = 0,
    vendor_organization_id: int | None = None,
) -> int:
    """Hold one judgment's price, fee and margin on the job's escrow, or raise
    InsufficientFunds (the lease is then not made). Returns the free budget left."""
    fee = platform_fee(price)
    hold = Hold(
        assignment_id=assignment_id,
        job_id=job_id,
        worker_id=worker_id,
        currency=currency,
        price=price,
        fee=fee,
        margin=margin,
        vendor_organization_id=vendor_organization_id,
        status=HoldStatus.HELD,
        created_at=clock.now(),
    )
    db.session.add(hold)  # written with the posting's rows, before its balances
    escrow = _job_ref(Purpose.ESCROW, job_id, currency)
    txn = ledger.post(
        "hold",
        f"hold:{assignment_id}",
        [Leg(escrow, -hold.total), Leg(_job_ref(Purpose.HOLDS, job_id, currency), hold.total)],
        job_id=job_id,
        worker_id=worker_id,
        savepoint=False,  # the lease's own savepoint undoes a refused hold; the key is new
    )
    return txn.balances[escrow.id] if txn else free_budget(job_id, currency)


def release_hold_in_txn(assignment_id: int) -> None:
    """Give a lease's hold back to the escrow (released, expired, lost eligibility)."""
    hold = get_for_update(Hold, assignment_id)
    if hold is None or hold.status != HoldStatus.HELD:
        return
    ledger.post(
        "hold_release",
        f"release:{assignment_id}",
        [
            Leg(_job_ref(Purpose.HOLDS, hold.job_id, hold.currency), -hold.total),
            Leg(_job_ref(Purpose.ESCROW, hold.job_id, hold.currency), hold.total),
        ],
        job_id=hold.job_id,
        worker_id=hold.worker_id,
    )
    hold.status = HoldStatus.RELEASED
    hold.ended_at = clock.now()


def open_worker_pay(worker_id: int, currency: str) -> None:
    """Make sure the worker's pending-pay account exists, early in a submit, before the
    transaction locks anything: settlements lock the job's holds account before the workers'
    accounts, and creating an account there could wait on another settlement creating it."""
    _worker_ref(Purpose.PENDING, worker_id, currency)


def settle_judgment_in_txn(assignment_id: int, organization_id: int | None) -> Earning | None:
    """An accepted judgment: the hold becomes the worker's pending pay, the fee, the margin."""
    return settle_judgments_in_txn([assignment_id], organization_id).get(assignment_id)


def settle_judgments_in_txn(
    assignment_ids: list[int], organization_id: int | None
) -> dict[int, Earning]:
    """Accepted judgments (a task's, closing): each hold becomes its worker's pending pay,
    the fee and the margin, as one settlement transaction per judgment; the job's holds
    account and the platform's fees account move once for all of them, as the last writes.
    Returns the earnings by assignment id (judgments whose hold is not held are skipped)."""
    # The holds still held turn settled, locked by the one statement that says so.
    holds = db.session.scalars(
        update(Hold)
        .where(Hold.assignment_id.in_(sorted(assignment_ids)), Hold.status == HoldStatus.HELD)
        .values(status=HoldStatus.SETTLED, ended_at=clock.now())
        .returning(Hold)
        .execution_options(populate_existing=True)
    )
    postings: list[ledger.Posting] = []
    earnings: dict[int, Earning] = {}
    for hold in sorted(holds, key=lambda h: h.assignment_id):
        legs = [
            Leg(_job_ref(Purpose.HOLDS, hold.job_id, hold.currency), -hold.total),
            Leg(_worker_ref(Purpose.PENDING, hold.worker_id, hold.currency), hold.price),
            Leg(ledger.platform_ref(Purpose.FEES, hold.currency), hold.fee),
        ]
        if hold.margin:
            legs.append(
                Leg(
                    ledger.ref(
                        OwnerType.ORGANIZATION,
                        hold.vendor_organization_id,
                        Purpose.MARGIN,
                        hold.currency,
                    ),
                    hold.margin,
                )
            )
        earning = Earning(
            worker_id=hold.worker_id,
            job_id=hold.job_id,
            organization_id=organization_id,
            assignment_id=hold.assignment_id,
            kind=EarningKind.JUDGMENT,
            amount=hold.price,
            currency=hold.currency,
            status=EarningStatus.PENDING,
            created_at=clock.now(),
            available_at=clock.now() + timedelta(seconds=settings().qa_window_seconds),
        )
        earnings[hold.assignment_id] = earning

        def write_earning(txn: LedgerTransaction, earning: Earning = earning) -> None:
            earning.settled_transaction_id = txn.id
            db.session.add(earning)

        postings.append(
            ledger.Posting(
                "settlement",
                f"settle:{hold.assignment_id}",
                legs,
                job_id=hold.job_id,
                worker_id=hold.worker_id,
                organization_id=organization_id,
                also=write_earning,  # the earning (and the hold) before the busy balances
            )
        )
    # No savepoint: the holds' row locks guard the keys; a failure fails the request.
    for earning, txn in zip(earnings.values(), ledger.post_together(postings), strict=True):
        if txn is None:  # nothing moved (a free job): the earning is all there is
            db.session.add(earning)
    return earnings


def reverse_judgment_pay_in_txn(assignment_id: int, reason: str) -> bool:
    """Take back a voided judgment's pay while it is still pending: the price, fee and margin
    return to the job's escrow. False when it is no longer pending (or was never paid)."""
    earning = db.session.scalar(
        select(Earning).where(Earning.assignment_id == assignment_id).with_for_update()
    )
    hold = db.session.get(Hold, assignment_id)
    if earning is None or hold is None or earning.status != EarningStatus.PENDING:
        return False
    legs = [
        Leg(_worker(Purpose.PENDING, hold.worker_id, hold.currency), -hold.price),
        Leg(ledger.platform(Purpose.FEES, hold.currency), -hold.fee),
        Leg(_job(Purpose.ESCROW, hold.job_id, hold.currency), hold.total),
    ]
    if hold.margin:
        legs.append(
            Leg(
                ledger.account(
                    OwnerType.ORGANIZATION,
                    hold.vendor_organization_id,
                    Purpose.MARGIN,
                    hold.currency,
                ),
                -hold.margin,
            )
        )
    ledger.post(
        "reversal",
        f"reverse:{assignment_id}",
        legs,
        job_id=hold.job_id,
        worker_id=hold.worker_id,
        memo=reason[:500],
    )
    earning.status = EarningStatus.REVERSED
    earning.reason = reason
    return True


def free_budget(job_id: int, currency: str) -> int:
    return ledger.current_balance(OwnerType.JOB, job_id, Purpose.ESCROW, currency)


def hold_cost(price: int, margin: int = 0) -> int:
    return price + platform_fee(price) + margin


# --- bonuses and earnings ----------------------------------------------------------------


def pay_bonus(
    *,
    job_id: int,
    organization_id: int,
    worker_id: int,
    amount: int,
    currency: str,
    reason: str,
    key: str,
) -> Earning:
    """A client's bonus to a worker, from the job's budget (plus the platform fee). Commits."""
    existing = db.session.scalar(
        select(Earning)
        .join(LedgerTransaction, LedgerTransaction.id == Earning.settled_transaction_id)
        .where(LedgerTransaction.idempotency_key == f"bonus:{key}")
    )
    if existing is not None:
        return existing
    fee = platform_fee(amount)
    txn = ledger.post(
        "bonus",
        f"bonus:{key}",
        [
            Leg(_job(Purpose.ESCROW, job_id, currency), -(amount + fee)),
            Leg(_worker(Purpose.PENDING, worker_id, currency), amount),
            Leg(ledger.platform(Purpose.FEES, currency), fee),
        ],
        job_id=job_id,
        worker_id=worker_id,
        organization_id=organization_id,
        memo=reason[:500],
    )
    earning = Earning(
        worker_id=worker_id,
        job_id=job_id,
        organization_id=organization_id,
        kind=EarningKind.BONUS,
        amount=amount,
        currency=currency,
        status=EarningStatus.PENDING,
        reason=reason,
        created_at=clock.now(),
        available_at=clock.now() + timedelta(seconds=settings().qa_window_seconds),
        settled_transaction_id=txn.id,
    )
    db.session.add(earning)
    db.session.flush()
    audit.record(
        "billing.bonus_paid",
        "earning",
        earning.id,
        organization_id=organization_id,
        detail={"worker_id": worker_id, "job_id": job_id, "amount": amount, "reason": reason},
    )
    db.session.commit()
    return earning


def mature_earnings(limit: int = 1000) -> int:
    """Move earnings whose QA window has closed from pending to available, except those of
    workers under a pay hold (see hold_maturing_pay). Periodic job: each call takes every
    worker with due earnings once, up to `limit` earnings each."""
    now = clock.now()
    due = (Earning.status == EarningStatus.PENDING, Earning.available_at <= now)
    matured, after = 0, 0
    while True:
        workers = list(
            db.session.scalars(
                select(Earning.worker_id)
                .where(*due, Earning.worker_id > after)
                .group_by(Earning.worker_id)
                .order_by(Earning.worker_id)
                .limit(limit)
            )
        )
        if not workers:
            break
        after = workers[-1]
        held = pay_held(workers)
        # One database transaction per worker: a settlement credits several workers'
        # pending accounts in one, so a run holding several of them at once could deadlock.
        for worker_id in workers:
            if worker_id in held:
                continue
            earnings = list(
                db.session.scalars(
                    select(Earning)
                    .where(Earning.worker_id == worker_id, *due)
                    .order_by(Earning.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            for earning in earnings:
                ledger.post(
                    "earning_matured",
                    f"mature:{earning.id}",
                    [
                        Leg(_worker(Purpose.PENDING, worker_id, earning.currency), -earning.amount),
                        Leg(
                            _worker(Purpose.AVAILABLE, worker_id, earning.currency), earning.amount
                        ),
                    ],
                    job_id=earning.job_id,
                    worker_id=worker_id,
                )
                earning.status = EarningStatus.AVAILABLE
            db.session.commit()
            matured += len(earnings)
        if len(workers) < limit:
            break
    db.session.commit()
    return matured


def worker_balances(worker_id: int, currency: str = "USD") -> dict[str, Any]:
    pending = ledger.current_balance(OwnerType.WORKER, worker_id, Purpose.PENDING, currency)
    available = ledger.current_balance(OwnerType.WORKER, worker_id, Purpose.AVAILABLE, currency)
    from billing.models import Payout, PayoutStatus

    paid = db.session.scalar(
        select(func.coalesce(func.sum(Payout.amount), 0)).where(
            Payout.worker_id == worker_id,
            Payout.status == PayoutStatus.PAID,
            Payout.currency == currency,
        )
    )
    in_flight = db.session.scalar(
        select(func.coalesce(func.sum(Payout.amount), 0)).where(
            Payout.worker_id == worker_id,
            Payout.status == PayoutStatus.PENDING,
            Payout.currency == currency,
        )
    )
    return {
        "currency": currency,
        "pending": {"amount": pending, "currency": currency},
        "available": {"amount": available, "currency": currency},
        "in_payout": {"amount": in_flight, "currency": currency},
        "paid": {"amount": paid, "currency": currency},
    }


def job_spend(job_id: int, currency: str) -> dict[str, Any]:
    """What a job's budget did: funded, refunded, held now, settled (pay, fees, margin)."""
    totals = dict(
        db.session.execute(
            select(LedgerTransaction.kind, func.count())
            .where(LedgerTransaction.job_id == job_id)
            .group_by(LedgerTransaction.kind)
        ).all()
    )

    def money(value: int) -> dict[str, Any]:
        return {"amount": int(value), "currency": currency}

    funded = _sum_kind(job_id, "funding", Purpose.ESCROW, currency) + _sum_kind(
        job_id, "allocation", Purpose.ESCROW, currency
    )
    refunded = -_sum_kind(job_id, "refund", Purpose.ESCROW, currency)
    settled = -_sum_kind(job_id, "settlement", Purpose.HOLDS, currency)
    reversed_ = _sum_kind(job_id, "reversal", Purpose.ESCROW, currency)
    bonuses = -_sum_kind(job_id, "bonus", Purpose.ESCROW, currency)
    return {
        "funded": money(funded),
        "refunded": money(refunded),
        "free": money(free_budget(job_id, currency)),
        "held": money(ledger.current_balance(OwnerType.JOB, job_id, Purpose.HOLDS, currency)),
        "settled": money(settled - reversed_),
        "bonuses": money(bonuses),
        "transactions": {k: int(v) for k, v in totals.items()},
    }


def _sum_kind(job_id: int, kind: str, purpose: Purpose, currency: str) -> int:
    from billing.models import LedgerAccount, LedgerEntry

    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
            .where(
                LedgerTransaction.job_id == job_id,
                LedgerTransaction.kind == kind,
                LedgerAccount.owner_type == OwnerType.JOB,
                LedgerAccount.owner_id == job_id,
                LedgerAccount.purpose == purpose,
                LedgerAccount.currency == currency,
            )
        )
    )


def get_payment(payment_id: int) -> Payment:
    payment = db.session.get(Payment, payment_id)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found")
    return payment


def earnings_due_before(moment: datetime) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Earning)
        .where(Earning.status == EarningStatus.PENDING, Earning.available_at <= moment)
    )


def list_earnings(worker_id: int, args: dict[str, Any]) -> dict[str, Any]:
    from marketplace.pagination import paginate

    return paginate(select(Earning).where(Earning.worker_id == worker_id), Earning.id, args)
