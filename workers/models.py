"""Worker profiles, the recruitment funnel, and crowds (public and private)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.accounts.models import User
from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class WorkerStatus(enum.StrEnum):
    APPLIED = "applied"
    SCREENING = "screening"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BANNED = "banned"
    OFFBOARDED = "offboarded"


class WorkerProfile(db.Model):
    """What makes a user a worker: where they are, what they speak, when they work."""

    __tablename__ = "worker_profiles"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # What clients see instead of a name or an id that links across clients.
    pseudonym: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[WorkerStatus] = mapped_column(
        enum_column(WorkerStatus, "worker_status", 16), default=WorkerStatus.APPLIED, index=True
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    country: Mapped[str | None] = mapped_column(String(2), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    # [{"code": "es", "proficiency": "native"}, ...]
    languages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    weekly_availability_hours: Mapped[int | None] = mapped_column(Integer)
    # {"mon": [["09:00", "17:00"]], ...} in the worker's own timezone
    availability: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    claimed_skills: Mapped[list[str]] = mapped_column(JSONType, default=list)
    payout_country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()  # the caller's own user is in the session already

    @property
    def language_codes(self) -> set[str]:
        return {entry["code"] for entry in self.languages or []}


class WorkerLanguage(db.Model):
    """One row per (worker, language), kept in step with the profile, for bulk eligibility."""

    __tablename__ = "worker_languages"
    __table_args__ = (Index("ix_worker_languages_code_worker", "code", "worker_id"),)

    worker_id: Mapped[int] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    proficiency: Mapped[str] = mapped_column(String(16))


class Crowd(db.Model):
    """A private crowd owned by a vendor (or a client) organization."""

    __tablename__ = "crowds"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # A vendor's margin on each judgment its crowd's workers do, in basis points of the price.
    vendor_margin_bps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CrowdMember(db.Model):
    __tablename__ = "crowd_members"
    __table_args__ = (
        UniqueConstraint("crowd_id", "worker_id"),
        Index("ix_crowd_members_worker_crowd", "worker_id", "crowd_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    crowd_id: Mapped[int] = mapped_column(ForeignKey("crowds.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # how they came in: invitation, join_request, added
    source: Mapped[str] = mapped_column(String(20))

    worker: Mapped[WorkerProfile] = relationship(lazy="joined")


class InvitationStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REVOKED = "revoked"


class CrowdInvitation(db.Model):
    """A single-use code, optionally bound to one e-mail address, that joins a crowd."""

    __tablename__ = "crowd_invitations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    crowd_id: Mapped[int] = mapped_column(ForeignKey("crowds.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email_normalized: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[InvitationStatus] = mapped_column(
        enum_column(InvitationStatus, "invitation_status", 12), default=InvitationStatus.OPEN
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by_worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="SET NULL")
    )


class JoinRequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class CrowdJoinRequest(db.Model):
    __tablename__ = "crowd_join_requests"
    __table_args__ = (Index("ix_crowd_join_requests_crowd_status", "crowd_id", "status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    crowd_id: Mapped[int] = mapped_column(ForeignKey("crowds.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("worker_profiles.id", ondelete="CASCADE"), index=True
    )
    message: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[JoinRequestStatus] = mapped_column(
        enum_column(JoinRequestStatus, "join_request_status", 12),
        default=JoinRequestStatus.PENDING,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    decision_reason: Mapped[str | None] = mapped_column(Text)

    worker: Mapped[WorkerProfile] = relationship(lazy="joined")
