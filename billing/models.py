"""The double-entry ledger and what hangs off it: holds, earnings, payments, payouts and
processor events. Amounts are integer minor units with an ISO currency; never floats."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class OwnerType(enum.StrEnum):
    ORGANIZATION = "organization"  # a client's balance, a vendor's margin
    JOB = "job"
    WORKER = "worker"
    PLATFORM = "platform"
    PROCESSOR = "processor"  # the outside world, through Stripe (or the offline gateway)


class Purpose(enum.StrEnum):
    BALANCE = "balance"  # a client's unallocated funds
    ESCROW = "escrow"  # a job's free budget
    HOLDS = "holds"  # a job's budget held for live leases
    PENDING = "pending"  # a worker's earnings inside the QA window
    AVAILABLE = "available"  # a worker's earnings that may be paid out
    MARGIN = "margin"  # a vendor's margin
    FEES = "fees"  # the platform's revenue
    PAYOUT_CLEARING = "payout_clearing"  # payouts sent to the processor, not yet confirmed
    PROCESSOR = "processor"


class LedgerAccount(db.Model):
    """One owner's money for one purpose in one currency. `balance` is a cache of the sum of
    its entries, updated in the same transaction as every entry (and checked by tests)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("owner_type", "owner_id", "purpose", "currency"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    owner_type: Mapped[OwnerType] = mapped_column(enum_column(OwnerType, "owner_type", 16))
    owner_id: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[Purpose] = mapped_column(enum_column(Purpose, "account_purpose", 16))
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerTransaction(db.Model):
    """One money movement: immutable, its entries sum to zero, unique by idempotency key."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (Index("ix_ledger_transactions_kind", "kind", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    worker_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    reference: Mapped[str | None] = mapped_column(String(200), index=True)
    memo: Mapped[str] = mapped_column(Text, default="")


class LedgerEntry(db.Model):
    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_transactions.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class HoldStatus(enum.StrEnum):
    HELD = "held"
    RELEASED = "released"
    SETTLED = "settled"


class Hold(db.Model):
    """The budget held for one lease, and how it splits when the judgment is accepted."""

    __tablename__ = "holds"

    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("assignments.id", ondelete="RESTRICT"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    worker_id: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    margin: Mapped[int] = mapped_column(BigInteger)
    vendor_organization_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[HoldStatus] = mapped_column(enum_column(HoldStatus, "hold_status", 10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def total(self) -> int:
        return self.price + self.fee + self.margin


class EarningKind(enum.StrEnum):
    JUDGMENT = "judgment"
    BONUS = "bonus"


class EarningStatus(enum.StrEnum):
    PENDING = "pending"  # inside the QA window
    AVAILABLE = "available"
    REVERSED = "reversed"  # voided while pending


class Earning(db.Model):
    """Money a worker earned (a judgment or a bonus), pending until its QA window closes."""

    __tablename__ = "earnings"
    __table_args__ = (
        Index("ix_earnings_due", "status", "available_at"),
        Index("ix_earnings_worker", "worker_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="RESTRICT"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[int | None] = mapped_column(BigInteger)
    assignment_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    kind: Mapped[EarningKind] = mapped_column(enum_column(EarningKind, "earning_kind", 10))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[EarningStatus] = mapped_column(enum_column(EarningStatus, "earning_status", 10))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_transaction_id: Mapped[int | None] = mapped_column(BigInteger)


class PaymentStatus(enum.StrEnum):
    REQUIRES_PAYMENT = "requires_payment"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Payment(db.Model):
    """A client's funding through a PaymentIntent (Stripe or the offline gateway)."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway: Mapped[str] = mapped_column(String(16))
    payment_intent_id: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[PaymentStatus] = mapped_column(enum_column(PaymentStatus, "payment_status", 20))
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by_user_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Refund(db.Model):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    processor_refund_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PayoutAccountStatus(enum.StrEnum):
    ONBOARDING = "onboarding"
    READY = "ready"
    RESTRICTED = "restricted"


class PayoutAccount(db.Model):
    """A worker's Stripe Connect account."""

    __tablename__ = "payout_accounts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="RESTRICT"), unique=True
    )
    processor_account_id: Mapped[str] = mapped_column(String(100), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    status: Mapped[PayoutAccountStatus] = mapped_column(
        enum_column(PayoutAccountStatus, "payout_account_status", 12)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PayoutStatus(enum.StrEnum):
    PENDING = "pending"  # money moved to payout clearing; the transfer is not yet confirmed
    PAID = "paid"
    FAILED = "failed"  # gave up; the money went back to available


class Payout(db.Model):
    __tablename__ = "payouts"
    __table_args__ = (Index("ix_payouts_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="RESTRICT"), index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PayoutStatus] = mapped_column(enum_column(PayoutStatus, "payout_status", 10))
    # Derived from the ledger transaction that moved the money; Stripe dedupes on it.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    processor_transfer_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProcessorEvent(db.Model):
    """A webhook event from the processor, kept so each is applied at most once."""

    __tablename__ = "processor_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)
