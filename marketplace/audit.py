"""The audit log helper: every privileged change records who did what to which object."""

from __future__ import annotations

from typing import Any

from flask import g, has_request_context, request

from marketplace import clock
from marketplace.database import db
from marketplace.models import AuditEvent


def record(
    action: str,
    object_type: str,
    object_id: Any,
    *,
    organization_id: int | None = None,
    detail: dict[str, Any] | None = None,
    actor_user_id: int | None = None,
) -> AuditEvent:
    """Add an audit event to the current transaction (it commits with the change it describes)."""
    caller = g.get("principal") if has_request_context() else None
    event = AuditEvent(
        occurred_at=clock.now(),
        actor_user_id=actor_user_id if actor_user_id is not None else caller and caller.user_id,
        actor_client_id=caller.client_id if caller else None,
        organization_id=organization_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        detail=detail or {},
        ip_address=request.remote_addr if has_request_context() else None,
        request_id=g.get("request_id") if has_request_context() else None,
    )
    db.session.add(event)
    return event
