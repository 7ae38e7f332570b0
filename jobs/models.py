"""Jobs, tasks (with gold and pre-labels), assignments (the task API's leases and judgments)
and client webhooks."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class JobStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    answer_spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    price_amount: Mapped[int] = mapped_column(Integer)  # minor units per judgment
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    redundancy_min: Mapped[int] = mapped_column(Integer)
    redundancy_max: Mapped[int] = mapped_column(Integer)
    target_confidence: Mapped[float] = mapped_column(Float)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    review_rate: Mapped[float] = mapped_column(Float, default=0.0)
    requirements: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=600)
    status: Mapped[JobStatus] = mapped_column(
        enum_column(JobStatus, "job_status", 12), default=JobStatus.DRAFT
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # job.budget_low fires once per funding cycle; a new funding clears it.
    budget_low_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # redundancy.escalation: {"extra": n, "skill": slug, "min_skill_level": l} or
    # {"extra": n, "credential": slug} (see jobs.escalation); None: straight to review.
    escalation: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # redundancy.agreement_threshold: IoU / overlap / tolerance for non-categorical answers.
    agreement_threshold: Mapped[float | None] = mapped_column(Float)


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Task(db.Model):
    """One data item. `live_count` and `submitted_count` are kept under the row lock that
    leasing takes, so live + submitted never exceeds `redundancy_target`."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("job_id", "external_id"),
        # The lease query walks this index: open tasks of a job, gold or not, by priority.
        Index(
            "ix_tasks_leasable",
            "job_id",
            "is_gold",
            text("priority DESC"),
            "id",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index("ix_tasks_job_status", "job_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_answer: Mapped[Any] = mapped_column(JSONType, nullable=True)
    prelabel: Mapped[Any] = mapped_column(JSONType, nullable=True)
    prelabel_confidence: Mapped[float | None] = mapped_column(Float)
    status: Mapped[TaskStatus] = mapped_column(
        enum_column(TaskStatus, "task_status", 12), default=TaskStatus.OPEN
    )
    priority: Mapped[int] = mapped_column(Integer, default=0)
    redundancy_target: Mapped[int] = mapped_column(Integer)
    live_count: Mapped[int] = mapped_column(Integer, default=0)
    submitted_count: Mapped[int] = mapped_column(Integer, default=0)
    final_answer: Mapped[Any] = mapped_column(JSONType, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    def reopen(self, target: int) -> None:
        """Open a decided task for more judgments (review sent it back, or fraud voided
        some): its label is cleared until consensus decides again. The caller holds the
        task's row lock."""
        self.status = TaskStatus.OPEN
        self.final_answer = None
        self.confidence = None
        self.method = None
        self.completed_at = None
        self.redundancy_target = target

    # 0: anyone eligible may lease it; 1: escalated, only workers meeting job.escalation.
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Why the task went to review (sampled, low_confidence, escalated, ambiguous), if it did.
    review_reason: Mapped[str | None] = mapped_column(String(40))


class AssignmentStatus(enum.StrEnum):
    LEASED = "leased"
    RELEASED = "released"
    EXPIRED = "expired"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    VOIDED = "voided"


class Assignment(db.Model):
    """A worker's lease on a task and, once submitted, their judgment."""

    __tablename__ = "assignments"
    __table_args__ = (
        # A worker gets a task at most once, ever: never two leases, never two judgments.
        UniqueConstraint("task_id", "worker_id"),
        Index("ix_assignments_worker_status", "worker_id", "status", "id"),
        Index("ix_assignments_job_status", "job_id", "status"),
        Index(
            "ix_assignments_live_expiry",
            "lease_expires_at",
            postgresql_where=text("status = 'leased'"),
            sqlite_where=text("status = 'leased'"),
        ),
        Index("ix_assignments_job_submitted", "job_id", "submitted_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    status: Mapped[AssignmentStatus] = mapped_column(
        enum_column(AssignmentStatus, "assignment_status", 12), default=AssignmentStatus.LEASED
    )
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_reason: Mapped[str | None] = mapped_column(String(500))
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answer: Mapped[Any] = mapped_column(JSONType, nullable=True)
    server_seconds: Mapped[float | None] = mapped_column(Float)
    active_seconds: Mapped[float | None] = mapped_column(Float)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_correct: Mapped[bool | None] = mapped_column(Boolean)
    fingerprint_hash: Mapped[str | None] = mapped_column(String(64))
    ip_hash: Mapped[str | None] = mapped_column(String(64))

    task: Mapped[Task] = relationship(lazy="raise_on_sql")


class WebhookEndpoint(db.Model):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    events: Mapped[list[str]] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the last retry


class WebhookDelivery(db.Model):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[DeliveryStatus] = mapped_column(
        enum_column(DeliveryStatus, "delivery_status", 12), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerJobQuality(db.Model):
    """A worker's measured quality in one job: gold results and agreement with final labels.

    `confusion` is {true_label: {given_label: n}} (single_choice jobs), from gold answers and
    closed tasks alike. Rows are locked after the task row (submit's lock order)."""

    __tablename__ = "worker_job_quality"
    __table_args__ = (
        UniqueConstraint("worker_id", "job_id"),
        Index("ix_worker_job_quality_job", "job_id", "worker_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    gold_correct: Mapped[int] = mapped_column(Integer, default=0)
    gold_wrong: Mapped[int] = mapped_column(Integer, default=0)
    agreed: Mapped[int] = mapped_column(Integer, default=0)
    disagreed: Mapped[int] = mapped_column(Integer, default=0)
    confusion: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRemoval(db.Model):
    """A worker taken off one job because their measured accuracy fell below its floor."""

    __tablename__ = "job_removals"
    __table_args__ = (UniqueConstraint("worker_id", "job_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker_profiles.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    accuracy: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReviewStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    CORRECTED = "corrected"
    SENT_BACK = "sent_back"


class ReviewItem(db.Model):
    """A closed (or escalated) task waiting for, or decided by, a reviewer of the job."""

    __tablename__ = "review_items"
    __table_args__ = (Index("ix_review_items_job_status", "job_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    status: Mapped[ReviewStatus] = mapped_column(
        enum_column(ReviewStatus, "review_status", 12), default=ReviewStatus.PENDING
    )
    answer: Mapped[Any] = mapped_column(JSONType, nullable=True)  # the corrected answer
    decided_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
