"""Fraud detection: signals with their evidence, one case per suspected worker, appeals.

A signal is keyed per worker (`worker_id`, `key`): detectors upsert it with the current
strength of the pattern (a worker answering too fast in a job has one `too_fast` signal for
that job, whose weight grows with the evidence), so re-running a scan never double-counts.
A reviewer's decision marks every signal as seen at its weight then (`reviewed_weight`):
only evidence added afterwards counts towards the risk score again.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from jobs.models import Assignment
from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class SignalKind(enum.StrEnum):
    TOO_FAST = "too_fast"
    GOLD_FAILED = "gold_failed"
    REGULAR_TIMING = "regular_timing"
    DEGENERATE = "degenerate"
    RANDOM_ANSWERS = "random_answers"
    LOW_AGREEMENT = "low_agreement"
    COLLUSION = "collusion"
    SHARED_DEVICE = "shared_device"
    SHARED_NETWORK = "shared_network"


class FraudSignal(db.Model):
    __tablename__ = "fraud_signals"
    __table_args__ = (UniqueConstraint("worker_id", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[SignalKind] = mapped_column(enum_column(SignalKind, "fraud_signal_kind", 20))
    # What makes the signal unique for its worker, e.g. "too_fast:job:12", "device:ab12…".
    key: Mapped[str] = mapped_column(String(120))
    weight: Mapped[float] = mapped_column(Float)
    reviewed_weight: Mapped[float] = mapped_column(Float, default=0.0)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def effective_weight(self) -> float:
        return max(0.0, self.weight - (self.reviewed_weight or 0.0))


class FraudAction(enum.StrEnum):
    """Graduated: each level includes the ones before it."""

    NONE = "none"
    FLAG = "flag"
    RESTRICT = "restrict"
    SUSPEND = "suspend"
    BAN = "ban"


ACTION_RANK = {a: i for i, a in enumerate(FraudAction)}


class CaseStatus(enum.StrEnum):
    OPEN = "open"  # awaiting a reviewer
    REVIEWED = "reviewed"  # a reviewer decided; `action` is what is in force


class FraudCase(db.Model):
    """A worker's fraud record (one per worker): the action in force and the review state."""

    __tablename__ = "fraud_cases"
    __table_args__ = (Index("ix_fraud_cases_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[CaseStatus] = mapped_column(
        enum_column(CaseStatus, "fraud_case_status", 12), default=CaseStatus.OPEN
    )
    action: Mapped[FraudAction] = mapped_column(
        enum_column(FraudAction, "fraud_action", 12), default=FraudAction.NONE
    )
    risk_score: Mapped[float] = mapped_column(Float, default=0.0)
    # The worker status an automatic or reviewer suspension replaced, restored on a lift.
    status_before: Mapped[str | None] = mapped_column(String(16))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    note: Mapped[str | None] = mapped_column(Text)
    # What the last voiding did: counts, money reversed, money already paid out.
    voiding: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class AppealStatus(enum.StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    OVERTURNED = "overturned"


class FraudAppeal(db.Model):
    __tablename__ = "fraud_appeals"
    __table_args__ = (
        Index("ix_fraud_appeals_status_id", "status", "id"),
        Index("ix_fraud_appeals_worker_status", "worker_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("fraud_cases.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[AppealStatus] = mapped_column(
        enum_column(AppealStatus, "fraud_appeal_status", 12), default=AppealStatus.OPEN
    )
    action_appealed: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    note: Mapped[str | None] = mapped_column(Text)


# The shared-device scan groups assignments by fingerprint and IP hash; these indexes make it
# an index-only walk (declared here: the assignments model belongs to the task loop).
Index(
    "ix_assignments_fingerprint_worker",
    Assignment.__table__.c.fingerprint_hash,
    Assignment.__table__.c.worker_id,
    postgresql_where=text("fingerprint_hash IS NOT NULL"),
    sqlite_where=text("fingerprint_hash IS NOT NULL"),
)
Index(
    "ix_assignments_ip_worker",
    Assignment.__table__.c.ip_hash,
    Assignment.__table__.c.worker_id,
    postgresql_where=text("ip_hash IS NOT NULL"),
    sqlite_where=text("ip_hash IS NOT NULL"),
)
