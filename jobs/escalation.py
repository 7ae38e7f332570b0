"""Escalation: a task that reached the job's maximum without confidence asks a few more,
better qualified workers before it goes to review.

A job configures it as `redundancy.escalation`: `{"skill": slug, "min_skill_level": 0-100}`
or `{"credential": clearance slug}`, with `"extra"` judgments (default 2). An escalated task
(`escalation_level` 1) is leased only by workers meeting that requirement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, true

from credentials import eligibility
from jobs.models import Job, Task
from workers.models import WorkerProfile

DEFAULT_EXTRA = 2


def extra_judgments(job: Job) -> int:
    return int((job.escalation or {}).get("extra", DEFAULT_EXTRA)) if job.escalation else 0


def maximum(job: Job, task: Task) -> int:
    """How many human judgments the task may take before it goes to review."""
    limit = job.redundancy_max + (extra_judgments(job) if task.escalation_level else 0)
    return max(limit, task.redundancy_target)


def requirements(config: dict[str, Any]) -> eligibility.Requirements:
    if "credential" in config:
        return eligibility.Requirements(clearances=(config["credential"],))
    return eligibility.Requirements(
        skills=(eligibility.SkillRequirement(config["skill"], int(config["min_skill_level"])),)
    )


def qualifies(worker: WorkerProfile, job: Job) -> bool:
    """Whether the worker may take this job's escalated tasks."""
    if not job.escalation:
        return True
    return eligibility.check(worker, requirements(job.escalation)).eligible


def lease_filter(job: Job, worker: WorkerProfile) -> ColumnElement[bool]:
    """The lease query's condition: escalated tasks only for qualified workers."""
    if not job.escalation or qualifies(worker, job):
        return true()
    return Task.escalation_level == 0


def escalate(job: Job, task: Task, human_judgments: int) -> bool:
    """Raise the task's target for escalation-tier workers; False when there is no tier left."""
    if not job.escalation or task.escalation_level > 0:
        return False
    task.escalation_level = 1
    task.redundancy_target = max(task.redundancy_target, human_judgments + extra_judgments(job))
    return True
