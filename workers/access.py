"""Who may see or manage which worker: the worker, vendors whose crowds hold them, admins."""

from __future__ import annotations

from sqlalchemy import select

from marketplace.accounts.models import Role
from marketplace.auth import ROLE_RANK, load_with_user, principal
from marketplace.database import db
from marketplace.errors import Forbidden, NotFound
from workers.models import Crowd, CrowdMember, WorkerProfile

load_with_user("worker_profile", WorkerProfile)  # the task API's every call needs it


def my_worker_profile() -> WorkerProfile:
    """The calling worker's own profile (403 for callers who are not workers)."""
    caller = principal()
    if caller.user is None:
        raise Forbidden("This route acts for a worker; a service-account token cannot call it.")
    profile = _loaded_with_token(caller)
    if profile is None:
        raise Forbidden("Only worker accounts can do this.")
    return profile


def my_worker_profile_or_none() -> WorkerProfile | None:
    caller = principal()
    if caller.user is None:
        return None
    return _loaded_with_token(caller)


def _loaded_with_token(caller) -> WorkerProfile | None:
    profile = caller.rows.get("worker_profile")
    # Still the session's row (a commit since only expires it; it reloads on use). None is
    # looked up again: the profile may have been made since.
    if profile is not None and profile in db.session:
        return profile
    return db.session.scalar(select(WorkerProfile).where(WorkerProfile.user_id == caller.user.id))


def org_ids_with_role(minimum: Role) -> list[int]:
    return [
        org_id
        for org_id, role in principal().roles.items()
        if ROLE_RANK[role] >= ROLE_RANK[minimum]
    ]


def managed_worker_ids_query(minimum: Role = Role.MEMBER):
    """Worker ids in crowds owned by organizations where the caller holds `minimum`."""
    return (
        select(CrowdMember.worker_id)
        .join(Crowd, Crowd.id == CrowdMember.crowd_id)
        .where(Crowd.organization_id.in_(org_ids_with_role(minimum) or [-1]))
    )


def can_see_worker(worker: WorkerProfile, minimum: Role = Role.MEMBER) -> bool:
    caller = principal()
    if caller.is_platform_admin:
        return True
    if caller.user is not None and worker.user_id == caller.user.id:
        return True
    found = db.session.scalar(
        managed_worker_ids_query(minimum).where(CrowdMember.worker_id == worker.id).limit(1)
    )
    return found is not None


def get_visible_worker(worker_id: int, minimum: Role = Role.MEMBER) -> WorkerProfile:
    """A worker the caller may see (404 for everyone else, so ids reveal nothing)."""
    worker = db.session.get(WorkerProfile, worker_id)
    if worker is None or not can_see_worker(worker, Role.MEMBER):
        raise NotFound(f"worker {worker_id} not found")
    if minimum != Role.MEMBER and not (
        principal().is_platform_admin or can_see_worker(worker, minimum)
    ):
        raise Forbidden(f"this needs the {minimum.value} role in a vendor that manages the worker")
    return worker


def get_crowd(crowd_id: int, minimum: Role = Role.MEMBER) -> Crowd:
    """A crowd of one of the caller's organizations (404 for other tenants)."""
    caller = principal()
    crowd = db.session.get(Crowd, crowd_id)
    if crowd is None:
        raise NotFound(f"crowd {crowd_id} not found")
    if caller.is_platform_admin:
        return crowd
    role = caller.role_in(crowd.organization_id)
    if role is None:
        raise NotFound(f"crowd {crowd_id} not found")
    if ROLE_RANK[role] < ROLE_RANK[minimum]:
        raise Forbidden(f"this needs the {minimum.value} role in the crowd's organization")
    return crowd
