"""Private crowds: creation, invitations (single-use codes, optionally e-mail bound),
join requests, membership. The public crowd is every active worker and has no rows."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from marketplace import audit, clock
from marketplace.accounts.models import Organization, OrgKind, Role
from marketplace.accounts.services import normalize_email
from marketplace.auth import principal, require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound, ValidationFailed
from marketplace.locking import get_for_update
from marketplace.pagination import paginate
from workers.access import get_crowd, my_worker_profile
from workers.models import (
    Crowd,
    CrowdInvitation,
    CrowdJoinRequest,
    CrowdMember,
    InvitationStatus,
    JoinRequestStatus,
    WorkerProfile,
    WorkerStatus,
)

MAX_BULK_INVITES = 1000
INVITE_PREFIX = "cinv_"


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


def create_crowd(organization_id: int, data: dict[str, Any]) -> Crowd:
    """A vendor (or client) organization opens a private crowd."""
    require_org_role(organization_id, Role.ADMIN)
    org = db.session.get(Organization, organization_id)
    if org.kind not in (OrgKind.VENDOR, OrgKind.CLIENT):
        raise Forbidden("Only vendor and client organizations own crowds.")
    crowd = Crowd(
        organization_id=organization_id,
        name=data["name"].strip(),
        description=data.get("description", ""),
        created_at=clock.now(),
    )
    db.session.add(crowd)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(
            "This organization already has a crowd with that name.",
            errors={"name": ["Already used in this organization."]},
        ) from None
    audit.record("crowd.created", "crowd", crowd.id, organization_id=organization_id)
    db.session.commit()
    return crowd


def list_crowds(organization_id: int, args: dict[str, Any]) -> dict[str, Any]:
    require_org_role(organization_id)
    query = select(Crowd).where(Crowd.organization_id == organization_id)
    return paginate(query, Crowd.id, args)


def update_crowd(crowd_id: int, changes: dict[str, Any]) -> Crowd:
    crowd = get_crowd(crowd_id, Role.ADMIN)
    for field in ("name", "description"):
        if field in changes:
            setattr(crowd, field, changes[field])
    audit.record(
        "crowd.updated",
        "crowd",
        crowd.id,
        organization_id=crowd.organization_id,
        detail={k: changes[k] for k in changes},
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(
            "This organization already has a crowd with that name.",
            errors={"name": ["Already used in this organization."]},
        ) from None
    return crowd


def member_count(crowd_id: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(CrowdMember).where(CrowdMember.crowd_id == crowd_id)
    )


def list_members(crowd_id: int, args: dict[str, Any]) -> dict[str, Any]:
    get_crowd(crowd_id)
    query = select(CrowdMember).where(CrowdMember.crowd_id == crowd_id)
    return paginate(query, CrowdMember.id, args)


def _add_member(crowd: Crowd, worker: WorkerProfile, source: str) -> CrowdMember:
    exists = db.session.scalar(
        select(CrowdMember).where(
            CrowdMember.crowd_id == crowd.id, CrowdMember.worker_id == worker.id
        )
    )
    if exists is not None:
        raise Conflict("The worker is already in this crowd.")
    member = CrowdMember(
        crowd_id=crowd.id, worker_id=worker.id, joined_at=clock.now(), source=source
    )
    db.session.add(member)
    return member


def remove_member(crowd_id: int, worker_id: int, reason: str | None) -> None:
    """A crowd admin removes a worker, or a worker leaves (worker_id = their own)."""
    crowd = db.session.get(Crowd, crowd_id)
    if crowd is None:
        raise NotFound(f"crowd {crowd_id} not found")
    caller = principal()
    me = None
    if caller.user is not None:
        me = db.session.scalar(select(WorkerProfile).where(WorkerProfile.user_id == caller.user.id))
    leaving = me is not None and me.id == worker_id
    if not leaving:
        get_crowd(crowd_id, Role.ADMIN)
    member = db.session.scalar(
        select(CrowdMember).where(
            CrowdMember.crowd_id == crowd_id, CrowdMember.worker_id == worker_id
        )
    )
    if member is None:
        raise NotFound(f"worker {worker_id} is not in crowd {crowd_id}")
    db.session.delete(member)
    audit.record(
        "crowd.member_left" if leaving else "crowd.member_removed",
        "crowd",
        crowd_id,
        organization_id=crowd.organization_id,
        detail={"worker_id": worker_id, "reason": reason},
    )
    db.session.commit()


def create_invitations(crowd_id: int, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue single-use invitation codes: one per e-mail given, plus `count` open ones.

    The codes are returned once, here; only their digests are stored.
    """
    crowd = get_crowd(crowd_id, Role.ADMIN)
    emails = [normalize_email(e) for e in data.get("emails", [])]
    count = data.get("count", 0)
    if len(set(emails)) != len(emails):
        raise ValidationFailed(
            "The same e-mail address appears twice.", errors={"emails": ["Duplicates."]}
        )
    total = len(emails) + count
    if total == 0:
        raise ValidationFailed(
            "Give e-mail addresses or a count of open codes.",
            errors={"emails": ["Give emails or count."]},
        )
    if total > MAX_BULK_INVITES:
        raise ValidationFailed(
            f"At most {MAX_BULK_INVITES} invitations per request.",
            errors={"emails": [f"At most {MAX_BULK_INVITES} in all."]},
        )
    now = clock.now()
    expires_at = now + timedelta(days=data.get("expires_in_days", 14))
    created = []
    for email in [*emails, *([None] * count)]:
        code = INVITE_PREFIX + secrets.token_urlsafe(18)
        invitation = CrowdInvitation(
            crowd_id=crowd.id,
            code_hash=_digest(code),
            email_normalized=email,
            status=InvitationStatus.OPEN,
            expires_at=expires_at,
            created_at=now,
            created_by_user_id=principal().user_id,
        )
        db.session.add(invitation)
        created.append((invitation, code))
    db.session.flush()
    audit.record(
        "crowd.invitations_created",
        "crowd",
        crowd.id,
        organization_id=crowd.organization_id,
        detail={"count": total, "emails": len(emails)},
    )
    db.session.commit()
    return [
        {
            "id": inv.id,
            "code": code,
            "email": inv.email_normalized,
            "expires_at": inv.expires_at,
            "status": inv.status,
        }
        for inv, code in created
    ]


def list_invitations(crowd_id: int, args: dict[str, Any]) -> dict[str, Any]:
    get_crowd(crowd_id, Role.ADMIN)
    query = select(CrowdInvitation).where(CrowdInvitation.crowd_id == crowd_id)
    if status := args.get("status"):
        query = query.where(CrowdInvitation.status == status)
    return paginate(query, CrowdInvitation.id, args)


def revoke_invitation(crowd_id: int, invitation_id: int) -> CrowdInvitation:
    crowd = get_crowd(crowd_id, Role.ADMIN)
    invitation = db.session.get(CrowdInvitation, invitation_id)
    if invitation is None or invitation.crowd_id != crowd.id:
        raise NotFound(f"invitation {invitation_id} not found")
    if invitation.status != InvitationStatus.OPEN:
        raise Conflict(f"The invitation is already {invitation.status.value}.")
    invitation.status = InvitationStatus.REVOKED
    audit.record(
        "crowd.invitation_revoked",
        "crowd_invitation",
        invitation.id,
        organization_id=crowd.organization_id,
    )
    db.session.commit()
    return invitation


def accept_invitation(code: str) -> CrowdMember:
    """A worker redeems an invitation code and joins the crowd."""
    worker = my_worker_profile()
    if worker.status in (WorkerStatus.BANNED, WorkerStatus.OFFBOARDED):
        raise Forbidden(f"A {worker.status.value} worker cannot join crowds.")
    invitation = db.session.scalar(
        select(CrowdInvitation).where(CrowdInvitation.code_hash == _digest(code)).with_for_update()
    )
    # One answer for unknown, used and revoked codes, so codes cannot be probed.
    if invitation is None or invitation.status != InvitationStatus.OPEN:
        raise NotFound("This invitation code is not valid.")
    if invitation.expires_at <= clock.now():
        raise Conflict("This invitation has expired; ask for a new one.")
    if invitation.email_normalized and invitation.email_normalized != normalize_email(
        worker.user.email
    ):
        raise Forbidden("This invitation was sent to another e-mail address.")
    crowd = db.session.get(Crowd, invitation.crowd_id)
    member = _add_member(crowd, worker, "invitation")
    invitation.status = InvitationStatus.ACCEPTED
    invitation.accepted_at = clock.now()
    invitation.accepted_by_worker_id = worker.id
    audit.record(
        "crowd.invitation_accepted",
        "crowd",
        crowd.id,
        organization_id=crowd.organization_id,
        detail={"worker_id": worker.id, "invitation_id": invitation.id},
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("The worker is already in this crowd.") from None
    return member


def request_to_join(crowd_id: int, message: str) -> CrowdJoinRequest:
    """A worker asks to join a crowd; its admins approve or reject."""
    worker = my_worker_profile()
    crowd = db.session.get(Crowd, crowd_id)
    if crowd is None:
        raise NotFound(f"crowd {crowd_id} not found")
    if worker.status in (WorkerStatus.BANNED, WorkerStatus.OFFBOARDED):
        raise Forbidden(f"A {worker.status.value} worker cannot join crowds.")
    already = db.session.scalar(
        select(CrowdMember).where(
            CrowdMember.crowd_id == crowd_id, CrowdMember.worker_id == worker.id
        )
    )
    if already is not None:
        raise Conflict("You are already in this crowd.")
    pending = db.session.scalar(
        select(CrowdJoinRequest).where(
            CrowdJoinRequest.crowd_id == crowd_id,
            CrowdJoinRequest.worker_id == worker.id,
            CrowdJoinRequest.status == JoinRequestStatus.PENDING,
        )
    )
    if pending is not None:
        raise Conflict("You already asked to join this crowd.", request_id=pending.id)
    join_request = CrowdJoinRequest(
        crowd_id=crowd_id,
        worker_id=worker.id,
        message=message,
        status=JoinRequestStatus.PENDING,
        created_at=clock.now(),
    )
    db.session.add(join_request)
    db.session.flush()
    audit.record(
        "crowd.join_requested",
        "crowd_join_request",
        join_request.id,
        organization_id=crowd.organization_id,
        detail={"worker_id": worker.id},
    )
    db.session.commit()
    return join_request


def list_join_requests(crowd_id: int, args: dict[str, Any]) -> dict[str, Any]:
    get_crowd(crowd_id, Role.ADMIN)
    query = select(CrowdJoinRequest).where(CrowdJoinRequest.crowd_id == crowd_id)
    if status := args.get("status"):
        query = query.where(CrowdJoinRequest.status == status)
    return paginate(query, CrowdJoinRequest.id, args)


def decide_join_request(
    crowd_id: int, request_id: int, approve: bool, reason: str | None
) -> CrowdJoinRequest:
    crowd = get_crowd(crowd_id, Role.ADMIN)
    join_request = get_for_update(CrowdJoinRequest, request_id)
    if join_request is None or join_request.crowd_id != crowd.id:
        raise NotFound(f"join request {request_id} not found")
    if join_request.status != JoinRequestStatus.PENDING:
        raise Conflict(f"The request is already {join_request.status.value}.")
    join_request.status = JoinRequestStatus.APPROVED if approve else JoinRequestStatus.REJECTED
    join_request.decided_at = clock.now()
    join_request.decided_by_user_id = principal().user_id
    join_request.decision_reason = reason
    if approve:
        _add_member(crowd, join_request.worker, "join_request")
    audit.record(
        "crowd.join_approved" if approve else "crowd.join_rejected",
        "crowd_join_request",
        join_request.id,
        organization_id=crowd.organization_id,
        detail={"worker_id": join_request.worker_id, "reason": reason},
    )
    db.session.commit()
    return join_request


def my_crowds(args: dict[str, Any]) -> dict[str, Any]:
    worker = my_worker_profile()
    query = select(CrowdMember).where(CrowdMember.worker_id == worker.id)
    return paginate(query, CrowdMember.id, args)
