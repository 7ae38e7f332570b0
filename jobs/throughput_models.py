"""Flags on tasks found by throughput analysis (e.g. a task good workers take far longer on)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.database import BigIntPK, JSONType, UTCDateTime, db

SLOW_TASK = "slow_task"  # possibly ambiguous or hard


class TaskFlag(db.Model):
    __tablename__ = "task_flags"
    __table_args__ = (
        UniqueConstraint("task_id", "kind"),
        Index("ix_task_flags_job_kind", "job_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
