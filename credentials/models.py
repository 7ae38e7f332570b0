"""Skills and worker skill levels, assessments (qualification tests), clearances, attestations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class Skill(db.Model):
    """An entry of the skills catalog, e.g. `image.bbox` or `medical.radiology`."""

    __tablename__ = "skills"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SkillSource(enum.StrEnum):
    ASSESSMENT = "assessment"
    PERFORMANCE = "performance"
    ADMIN = "admin"


class WorkerSkill(db.Model):
    """A worker's current level (0–100) in a skill, where it came from and until when it holds."""

    __tablename__ = "worker_skills"
    __table_args__ = (
        UniqueConstraint("worker_id", "skill_id"),
        Index("ix_worker_skills_skill_level", "skill_id", "level", "worker_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id", ondelete="CASCADE"))
    level: Mapped[int] = mapped_column(Integer)
    source: Mapped[SkillSource] = mapped_column(enum_column(SkillSource, "skill_source", 16))
    source_ref: Mapped[str | None] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    skill: Mapped[Skill] = relationship(lazy="joined")


class QuestionKind(enum.StrEnum):
    SINGLE_CHOICE = "single_choice"
    MULTI_CHOICE = "multi_choice"
    NUMERIC = "numeric"
    TEXT = "text"
    BBOX = "bbox"
    FREE_TEXT = "free_text"


class Assessment(db.Model):
    """A qualification test for one skill, owned by the platform, a vendor or a client."""

    __tablename__ = "assessments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    questions_per_attempt: Mapped[int] = mapped_column(Integer)
    time_limit_seconds: Mapped[int] = mapped_column(Integer)
    pass_mark: Mapped[float] = mapped_column(Float)  # percent of points, 0–100
    retake_cooldown_seconds: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    grant_level: Mapped[int] = mapped_column(Integer)  # skill level granted on a pass
    grant_validity_days: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    skill: Mapped[Skill] = relationship(lazy="joined")


class AssessmentQuestion(db.Model):
    __tablename__ = "assessment_questions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    assessment_id: Mapped[int] = mapped_column(
        ForeignKey("assessments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[QuestionKind] = mapped_column(enum_column(QuestionKind, "question_kind", 16))
    prompt: Mapped[str] = mapped_column(Text)
    # what the worker is shown: {"options": [...]} / {"image_url": ..., "labels": [...]} …
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # never shown to a worker in a graded attempt
    answer_key: Mapped[Any] = mapped_column(JSONType)
    tolerance: Mapped[float | None] = mapped_column(Float)
    iou_threshold: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[str] = mapped_column(Text, default="")
    points: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttemptMode(enum.StrEnum):
    GRADED = "graded"
    PRACTICE = "practice"


class AttemptStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    GRADING = "grading"  # waiting for a reviewer to grade free-text answers
    PASSED = "passed"
    FAILED = "failed"
    EXPIRED = "expired"  # the time limit passed before submission
    COMPLETED = "completed"  # practice attempts end here


class AssessmentAttempt(db.Model):
    __tablename__ = "assessment_attempts"
    __table_args__ = (Index("ix_assessment_attempts_worker", "worker_id", "assessment_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    mode: Mapped[AttemptMode] = mapped_column(enum_column(AttemptMode, "attempt_mode", 12))
    status: Mapped[AttemptStatus] = mapped_column(
        enum_column(AttemptStatus, "attempt_status", 16), default=AttemptStatus.IN_PROGRESS
    )
    question_ids: Mapped[list[int]] = mapped_column(JSONType)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    score: Mapped[float | None] = mapped_column(Float)  # percent, 0–100

    assessment: Mapped[Assessment] = relationship(lazy="joined")


class AttemptAnswer(db.Model):
    __tablename__ = "attempt_answers"
    __table_args__ = (UniqueConstraint("attempt_id", "question_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("assessment_attempts.id", ondelete="CASCADE")
    )
    question_id: Mapped[int] = mapped_column(
        ForeignKey("assessment_questions.id", ondelete="CASCADE")
    )
    answer: Mapped[Any] = mapped_column(JSONType)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    points_awarded: Mapped[float | None] = mapped_column(Float)
    needs_grading: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    graded_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    graded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    feedback: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime)

    question: Mapped[AssessmentQuestion] = relationship(lazy="joined")
    attempt: Mapped[AssessmentAttempt] = relationship()


class Verifier(enum.StrEnum):
    PLATFORM = "platform"  # platform admins only
    VENDOR = "vendor"  # admins of a vendor whose crowd the worker is in, or platform admins
    OWNER = "owner"  # admins of the organization that defined the clearance, or platform admins


class EvidenceKind(enum.StrEnum):
    DOCUMENT = "document"
    REFERENCE = "reference"
    ANY = "any"


class ClearanceType(db.Model):
    """A clearance such as HIPAA training or a background check; platform-wide or a client's own."""

    __tablename__ = "clearance_types"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # NULL: defined by the platform
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    validity_days: Mapped[int | None] = mapped_column(Integer)
    verifier: Mapped[Verifier] = mapped_column(enum_column(Verifier, "clearance_verifier", 12))
    evidence: Mapped[EvidenceKind] = mapped_column(
        enum_column(EvidenceKind, "evidence_kind", 12), default=EvidenceKind.ANY
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttestationStatus(enum.StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Attestation(db.Model):
    """A worker's claim to a clearance, with evidence, and what a verifier decided about it."""

    __tablename__ = "attestations"
    __table_args__ = (
        Index("ix_attestations_type_status", "clearance_type_id", "status", "worker_id"),
        Index("ix_attestations_worker", "worker_id", "clearance_type_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    clearance_type_id: Mapped[int] = mapped_column(
        ForeignKey("clearance_types.id", ondelete="CASCADE")
    )
    status: Mapped[AttestationStatus] = mapped_column(
        enum_column(AttestationStatus, "attestation_status", 12),
        default=AttestationStatus.PENDING,
    )
    evidence_reference: Mapped[str | None] = mapped_column(String(500))
    document_key: Mapped[str | None] = mapped_column(String(200))
    document_name: Mapped[str | None] = mapped_column(String(255))
    document_content_type: Mapped[str | None] = mapped_column(String(100))
    document_size: Mapped[int | None] = mapped_column(Integer)
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    decision_reason: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    clearance_type: Mapped[ClearanceType] = relationship(lazy="joined")
