"""The worker profile: what makes a user a worker. The workforce issue fills it out."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.database import BigIntPK, UTCDateTime, db


class WorkerStatus(enum.StrEnum):
    APPLIED = "applied"
    SCREENING = "screening"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BANNED = "banned"
    OFFBOARDED = "offboarded"


class WorkerProfile(db.Model):
    __tablename__ = "worker_profiles"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[WorkerStatus] = mapped_column(
        Enum(
            WorkerStatus,
            name="worker_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=WorkerStatus.APPLIED,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
