"""Batch aggregation runs: one Dawid–Skene pass over a job's judgments, and what it changed."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.database import BigIntPK, JSONType, UTCDateTime, db
from marketplace.enums import enum_column


class AggregationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AggregationRun(db.Model):
    """One batch pass. `changes` keeps each label the pass replaced (the online label before
    it), so a client can see what the batch model overturned."""

    __tablename__ = "aggregation_runs"
    __table_args__ = (Index("ix_aggregation_runs_job_status", "job_id", "status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    status: Mapped[AggregationStatus] = mapped_column(
        enum_column(AggregationStatus, "aggregation_status", 12), default=AggregationStatus.QUEUED
    )
    method: Mapped[str] = mapped_column(String(40), default="dawid_skene")
    trigger: Mapped[str] = mapped_column(String(20))  # "job_completed" or "request"
    requested_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    tasks: Mapped[int | None] = mapped_column(Integer)  # tasks with judgments or gold
    gold_tasks: Mapped[int | None] = mapped_column(Integer)
    workers: Mapped[int | None] = mapped_column(Integer)
    judgments: Mapped[int | None] = mapped_column(Integer)
    labels: Mapped[int | None] = mapped_column(Integer)  # classes in the model
    labels_written: Mapped[int | None] = mapped_column(Integer)
    labels_changed: Mapped[int | None] = mapped_column(Integer)
    iterations: Mapped[int | None] = mapped_column(Integer)
    converged: Mapped[bool | None] = mapped_column(Boolean)
    log_likelihood: Mapped[float | None] = mapped_column(Float)
    changes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
