"""Clearance types and workers' attestations: submit → verify | reject; expire; revoke.

An attestation counts only while it is verified, not revoked and not past its expiry —
checked against the clock at every use, so expiry and revocation bite at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from credentials import evidence
from credentials.models import (
    Attestation,
    AttestationStatus,
    ClearanceType,
    EvidenceKind,
    Verifier,
)
from marketplace import audit, clock
from marketplace.accounts.models import Organization, OrgKind, Role
from marketplace.auth import principal, require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound, ValidationFailed
from marketplace.locking import get_for_update
from marketplace.pagination import paginate
from workers.access import (
    can_see_worker,
    managed_worker_ids_query,
    my_worker_profile,
    my_worker_profile_or_none,
)
from workers.models import Crowd, CrowdMember, WorkerProfile


def create_clearance_type(data: dict[str, Any]) -> ClearanceType:
    """The platform (organization_id omitted) or a client defines a clearance."""
    caller = principal()
    organization_id = data.get("organization_id")
    if organization_id is None:
        if not caller.is_platform_admin:
            raise Forbidden(
                "Only platform admins define platform clearances; give organization_id."
            )
    else:
        require_org_role(organization_id, Role.ADMIN)
        org = db.session.get(Organization, organization_id)
        if org.kind != OrgKind.CLIENT and not caller.is_platform_admin:
            raise Forbidden("Only client organizations define their own clearances.")
    clearance = ClearanceType(
        slug=data["slug"],
        name=data["name"],
        description=data.get("description", ""),
        organization_id=organization_id,
        validity_days=data.get("validity_days"),
        verifier=data.get(
            "verifier", Verifier.PLATFORM if organization_id is None else Verifier.OWNER
        ),
        evidence=data.get("evidence", EvidenceKind.ANY),
        created_at=clock.now(),
    )
    db.session.add(clearance)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("A clearance with this slug exists.", errors={"slug": ["Taken."]}) from None
    audit.record(
        "clearance_type.created",
        "clearance_type",
        clearance.id,
        organization_id=organization_id,
        detail={"slug": clearance.slug},
    )
    db.session.commit()
    return clearance


def list_clearance_types(args: dict[str, Any]) -> dict[str, Any]:
    return paginate(select(ClearanceType), ClearanceType.id, args)


def get_clearance_type(clearance_type_id: int) -> ClearanceType:
    clearance = db.session.get(ClearanceType, clearance_type_id)
    if clearance is None:
        raise NotFound(f"clearance type {clearance_type_id} not found")
    return clearance


def clearance_by_slug(slug: str) -> ClearanceType | None:
    return db.session.scalar(select(ClearanceType).where(ClearanceType.slug == slug))


def is_current(attestation: Attestation, at: datetime | None = None) -> bool:
    """Verified, not revoked, and not past its expiry at `at` (default: now)."""
    at = at or clock.now()
    return (
        attestation.status == AttestationStatus.VERIFIED
        and attestation.revoked_at is None
        and (attestation.expires_at is None or attestation.expires_at > at)
    )


def effective_status(attestation: Attestation) -> AttestationStatus:
    if attestation.status == AttestationStatus.VERIFIED and not is_current(attestation):
        return AttestationStatus.EXPIRED
    return attestation.status


def submit_attestation(
    clearance_type_id: int,
    *,
    reference: str | None,
    document=None,
    document_name: str | None = None,
    note: str = "",
) -> Attestation:
    """A worker claims a clearance, with a document, an external reference, or both."""
    worker = my_worker_profile()
    clearance = get_clearance_type(clearance_type_id)
    if document is None and not reference:
        raise ValidationFailed(
            "Attach a document or give an external reference.",
            errors={"document": ["Give a document or a reference."]},
        )
    if clearance.evidence == EvidenceKind.DOCUMENT and document is None:
        raise ValidationFailed(
            "This clearance needs a document.", errors={"document": ["Required."]}
        )
    if clearance.evidence == EvidenceKind.REFERENCE and not reference:
        raise ValidationFailed(
            "This clearance needs an external reference.", errors={"reference": ["Required."]}
        )
    pending = db.session.scalar(
        select(Attestation).where(
            Attestation.worker_id == worker.id,
            Attestation.clearance_type_id == clearance.id,
            Attestation.status == AttestationStatus.PENDING,
        )
    )
    if pending is not None:
        raise Conflict(
            "You already have an attestation waiting for review.", attestation_id=pending.id
        )
    attestation = Attestation(
        worker_id=worker.id,
        clearance_type_id=clearance.id,
        status=AttestationStatus.PENDING,
        evidence_reference=reference,
        note=note,
        submitted_at=clock.now(),
    )
    key = None
    if document is not None:
        data, media_type, sha256 = evidence.read_checked_document(document)
        key = evidence.store().put(data, media_type)
        attestation.document_key = key
        attestation.document_name = (document_name or "document")[:255]
        attestation.document_content_type = media_type
        attestation.document_size = len(data)
        attestation.document_sha256 = sha256
    db.session.add(attestation)
    try:
        db.session.flush()
        audit.record(
            "attestation.submitted",
            "attestation",
            attestation.id,
            detail={
                "worker_id": worker.id,
                "clearance": clearance.slug,
                "reference": reference,
                "document_sha256": attestation.document_sha256,
                "document_size": attestation.document_size,
            },
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        if key:
            evidence.store().delete(key)  # nothing half-written: no orphan file
        raise
    return attestation


def _may_verify(attestation: Attestation) -> bool:
    caller = principal()
    if caller.is_platform_admin:
        return True
    worker = db.session.get(WorkerProfile, attestation.worker_id)
    if caller.user_id is not None and worker.user_id == caller.user_id:
        return False  # never your own
    clearance = attestation.clearance_type
    if clearance.verifier == Verifier.VENDOR:
        return (
            db.session.scalar(
                managed_worker_ids_query(Role.ADMIN)
                .where(CrowdMember.worker_id == worker.id)
                .where(Crowd.organization_id.in_(_vendor_org_ids()))
                .limit(1)
            )
            is not None
        )
    if clearance.verifier == Verifier.OWNER and clearance.organization_id is not None:
        return caller.has_role(clearance.organization_id, Role.ADMIN)
    return False


def _vendor_org_ids() -> list[int]:
    ids = list(principal().roles)
    return list(
        db.session.scalars(
            select(Organization.id).where(
                Organization.id.in_(ids or [-1]), Organization.kind == OrgKind.VENDOR
            )
        )
    )


def _can_see_attestation(attestation: Attestation) -> bool:
    worker = db.session.get(WorkerProfile, attestation.worker_id)
    return can_see_worker(worker) or _may_verify(attestation)


def get_attestation(attestation_id: int) -> Attestation:
    attestation = db.session.get(Attestation, attestation_id)
    if attestation is None or not _can_see_attestation(attestation):
        raise NotFound(f"attestation {attestation_id} not found")
    return attestation


def _decidable(attestation_id: int) -> Attestation:
    attestation = get_for_update(Attestation, attestation_id)
    if attestation is None or not _can_see_attestation(attestation):
        raise NotFound(f"attestation {attestation_id} not found")
    if not _may_verify(attestation):
        raise Forbidden("You may not decide on this attestation.")
    return attestation


def verify_attestation(
    attestation_id: int, expires_at: datetime | None, reason: str | None
) -> Attestation:
    """A verifier accepts the evidence; the clearance holds until its expiry."""
    attestation = _decidable(attestation_id)
    if attestation.status != AttestationStatus.PENDING:
        raise Conflict(
            f"The attestation is {attestation.status.value}; only pending ones are decided."
        )
    now = clock.now()
    validity = attestation.clearance_type.validity_days
    default_expiry = now + timedelta(days=validity) if validity else None
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(
            "The expiry must be in the future.", errors={"expires_at": ["In the past."]}
        )
    if expires_at is not None and default_expiry is not None and expires_at > default_expiry:
        raise ValidationFailed(
            f"This clearance is valid for at most {validity} days.",
            errors={"expires_at": [f"At most {validity} days from now."]},
        )
    attestation.status = AttestationStatus.VERIFIED
    attestation.expires_at = expires_at or default_expiry
    attestation.decided_at = now
    attestation.decided_by_user_id = principal().user_id
    attestation.decision_reason = reason
    audit.record(
        "attestation.verified",
        "attestation",
        attestation.id,
        detail={
            "worker_id": attestation.worker_id,
            "clearance": attestation.clearance_type.slug,
            "expires_at": attestation.expires_at.isoformat() if attestation.expires_at else None,
            "reason": reason,
        },
    )
    db.session.commit()
    return attestation


def reject_attestation(attestation_id: int, reason: str) -> Attestation:
    attestation = _decidable(attestation_id)
    if attestation.status != AttestationStatus.PENDING:
        raise Conflict(
            f"The attestation is {attestation.status.value}; only pending ones are decided."
        )
    attestation.status = AttestationStatus.REJECTED
    attestation.decided_at = clock.now()
    attestation.decided_by_user_id = principal().user_id
    attestation.decision_reason = reason
    audit.record(
        "attestation.rejected",
        "attestation",
        attestation.id,
        detail={"worker_id": attestation.worker_id, "reason": reason},
    )
    db.session.commit()
    return attestation


def revoke_attestation(attestation_id: int, reason: str) -> Attestation:
    """Withdraw a verified clearance; eligibility is lost at once, live leases included."""
    attestation = _decidable(attestation_id)
    if attestation.status != AttestationStatus.VERIFIED:
        raise Conflict(
            f"Only verified attestations can be revoked; this one is {attestation.status.value}."
        )
    attestation.status = AttestationStatus.REVOKED
    attestation.revoked_at = clock.now()
    attestation.decision_reason = reason
    audit.record(
        "attestation.revoked",
        "attestation",
        attestation.id,
        detail={"worker_id": attestation.worker_id, "reason": reason},
    )
    db.session.commit()
    return attestation


def list_attestations(args: dict[str, Any]) -> dict[str, Any]:
    """The caller's own (workers), those of workers they manage (vendors), or all (admins)."""
    caller = principal()
    query = select(Attestation)
    me = my_worker_profile_or_none()
    if me is not None:
        query = query.where(Attestation.worker_id == me.id)
    elif not caller.is_platform_admin:
        owned_types = select(ClearanceType.id).where(
            ClearanceType.organization_id.in_(list(caller.roles) or [-1])
        )
        query = query.where(
            Attestation.worker_id.in_(managed_worker_ids_query())
            | Attestation.clearance_type_id.in_(owned_types)
        )
    if status := args.get("status"):
        query = query.where(Attestation.status == status)
    if worker_id := args.get("worker_id"):
        query = query.where(Attestation.worker_id == worker_id)
    return paginate(query, Attestation.id, args)


def expire_lapsed_attestations() -> int:
    """Mark verified attestations past their expiry as expired (eligibility already ignores
    them; this keeps the status column and audit trail honest). Periodic job."""
    now = clock.now()
    lapsed = list(
        db.session.scalars(
            select(Attestation).where(
                Attestation.status == AttestationStatus.VERIFIED,
                Attestation.expires_at.is_not(None),
                Attestation.expires_at <= now,
            )
        )
    )
    for attestation in lapsed:
        attestation.status = AttestationStatus.EXPIRED
        audit.record(
            "attestation.expired",
            "attestation",
            attestation.id,
            detail={"worker_id": attestation.worker_id},
        )
    db.session.commit()
    return len(lapsed)
