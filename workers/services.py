"""Worker profiles and the recruitment funnel."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from marketplace import audit, clock
from marketplace.accounts.models import Role
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden
from marketplace.locking import lock
from marketplace.pagination import paginate
from workers.access import get_visible_worker, managed_worker_ids_query
from workers.models import CrowdMember, WorkerLanguage, WorkerProfile, WorkerStatus

S = WorkerStatus

# (from, to) → who may make the move: "platform" admins, "vendor" admins of a crowd holding
# the worker, or the worker "self".
TRANSITIONS: dict[tuple[WorkerStatus, WorkerStatus], frozenset[str]] = {
    (S.APPLIED, S.SCREENING): frozenset({"platform", "vendor"}),
    (S.SCREENING, S.ACTIVE): frozenset({"platform", "vendor"}),
    (S.SCREENING, S.APPLIED): frozenset({"platform", "vendor"}),
    (S.ACTIVE, S.SUSPENDED): frozenset({"platform", "vendor"}),
    (S.SUSPENDED, S.ACTIVE): frozenset({"platform", "vendor"}),
    (S.APPLIED, S.BANNED): frozenset({"platform"}),
    (S.SCREENING, S.BANNED): frozenset({"platform"}),
    (S.ACTIVE, S.BANNED): frozenset({"platform"}),
    (S.SUSPENDED, S.BANNED): frozenset({"platform"}),
    (S.BANNED, S.SUSPENDED): frozenset({"platform"}),  # an appeal lands in suspension first
    (S.APPLIED, S.OFFBOARDED): frozenset({"platform", "self"}),
    (S.SCREENING, S.OFFBOARDED): frozenset({"platform", "self"}),
    (S.ACTIVE, S.OFFBOARDED): frozenset({"platform", "self"}),
    (S.SUSPENDED, S.OFFBOARDED): frozenset({"platform"}),
    (S.OFFBOARDED, S.APPLIED): frozenset({"platform", "self"}),  # coming back starts over
}


def _sync_languages(profile: WorkerProfile) -> None:
    db.session.execute(delete(WorkerLanguage).where(WorkerLanguage.worker_id == profile.id))
    for entry in profile.languages or []:
        db.session.add(
            WorkerLanguage(
                worker_id=profile.id, code=entry["code"], proficiency=entry["proficiency"]
            )
        )


def update_profile(profile: WorkerProfile, changes: dict[str, Any]) -> WorkerProfile:
    """A worker edits their own profile."""
    for field in (
        "display_name",
        "country",
        "timezone",
        "languages",
        "weekly_availability_hours",
        "availability",
        "claimed_skills",
        "payout_country",
    ):
        if field in changes:
            setattr(profile, field, changes[field])
    if "languages" in changes:
        db.session.flush()
        _sync_languages(profile)
    profile.updated_at = clock.now()
    db.session.commit()
    return profile


def list_workers(args: dict[str, Any]) -> dict[str, Any]:
    """Workers the caller manages (every worker, for platform admins)."""
    query = select(WorkerProfile)
    if not principal().is_platform_admin:
        query = query.where(WorkerProfile.id.in_(managed_worker_ids_query()))
    if status := args.get("status"):
        query = query.where(WorkerProfile.status == status)
    if crowd_id := args.get("crowd_id"):
        query = query.where(
            WorkerProfile.id.in_(
                select(CrowdMember.worker_id).where(CrowdMember.crowd_id == crowd_id)
            )
        )
    return paginate(query, WorkerProfile.id, args)


def _actor_kinds(worker: WorkerProfile) -> set[str]:
    caller = principal()
    kinds = set()
    if caller.is_platform_admin:
        kinds.add("platform")
    if caller.user is not None and caller.user.id == worker.user_id:
        kinds.add("self")
    found = db.session.scalar(
        managed_worker_ids_query(Role.ADMIN).where(CrowdMember.worker_id == worker.id).limit(1)
    )
    if found is not None:
        kinds.add("vendor")
    return kinds


def change_status(worker_id: int, to: WorkerStatus, reason: str) -> WorkerProfile:
    """Move a worker through the funnel; every move is audited with its reason."""
    worker = get_visible_worker(worker_id)
    worker = lock(worker)
    current = worker.status
    if current == to:
        raise Conflict(f"The worker is already {to.value}.")
    allowed = TRANSITIONS.get((current, to))
    if allowed is None:
        raise Conflict(
            f"A worker cannot go from {current.value} to {to.value}.",
            allowed=sorted(t.value for (f, t) in TRANSITIONS if f == current),
        )
    if not allowed & _actor_kinds(worker):
        raise Forbidden(
            f"Moving a worker from {current.value} to {to.value} needs: "
            + ", ".join(sorted(allowed))
            + "."
        )
    worker.status = to
    worker.status_reason = reason
    worker.status_changed_at = clock.now()
    audit.record(
        "worker.status_changed",
        "worker",
        worker.id,
        detail={"from": current.value, "to": to.value, "reason": reason},
    )
    db.session.commit()
    return worker
