"""Which jobs a caller may see and change: the client organization's members, platform admins."""

from __future__ import annotations

from jobs.models import Job
from marketplace.accounts.models import Role
from marketplace.auth import principal, require_org_role
from marketplace.database import db
from marketplace.errors import NotFound
from marketplace.locking import get_for_update


def _visible(job: Job | None, job_id: int, minimum: Role) -> Job:
    if job is None:
        raise NotFound(f"job {job_id} not found")
    caller = principal()
    if not caller.is_platform_admin and caller.role_in(job.organization_id) is None:
        raise NotFound(f"job {job_id} not found")  # other tenants' jobs do not exist
    require_org_role(job.organization_id, minimum)
    return job


def get_job(job_id: int, minimum: Role = Role.MEMBER) -> Job:
    """A job of one of the caller's organizations (404 for anyone else)."""
    return _visible(db.session.get(Job, job_id), job_id, minimum)


def get_job_for_update(job_id: int, minimum: Role = Role.MEMBER) -> Job:
    return _visible(get_for_update(Job, job_id), job_id, minimum)
