"""Health checks, the sandbox clock and user administration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, text

from marketplace import audit, clock
from marketplace.accounts.models import User, UserStatus
from marketplace.accounts.services import normalize_email
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Forbidden, NotFound
from marketplace.models import ClockState
from marketplace.oauth import tokens
from marketplace.pagination import paginate


def readiness() -> dict[str, Any]:
    """Reachability of the database and (when configured) Redis."""
    checks: dict[str, Any] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # any driver error means "not ready"
        db.session.rollback()
        checks["database"] = f"unreachable: {type(error).__name__}"
    settings = current_app.config["CROWDLINE"]
    if settings.redis_url:
        try:
            from marketplace.background import redis_connection

            redis_connection().ping()
            checks["redis"] = "ok"
        except Exception as error:
            checks["redis"] = f"unreachable: {type(error).__name__}"
    else:
        checks["redis"] = "not configured (jobs run inline)"
    return checks


def _require_sandbox_admin() -> None:
    if not current_app.config["CROWDLINE"].sandbox:
        raise Forbidden(
            "The sandbox clock exists only when the server runs with CROWDLINE_SANDBOX=1."
        )
    if not principal().is_platform_admin:
        raise Forbidden("Only a platform admin may read or move the sandbox clock.")


def _clock_view(state: ClockState | None) -> dict[str, Any]:
    return {
        "now": clock.now(),
        "offset_seconds": state.offset_seconds if state else 0.0,
        "frozen": bool(state and state.frozen_at is not None),
        "sandbox": True,
    }


def read_sandbox_clock() -> dict[str, Any]:
    _require_sandbox_admin()
    return _clock_view(db.session.get(ClockState, 1))


def move_sandbox_clock(change: dict[str, Any]) -> dict[str, Any]:
    """Advance, set, freeze or unfreeze the shared sandbox clock."""
    _require_sandbox_admin()
    real = datetime.now(UTC)
    state = db.session.get(ClockState, 1, with_for_update=True)
    if state is None:
        state = ClockState(id=1, offset_seconds=0.0, frozen_at=None, updated_at=real)
        db.session.add(state)
    current = state.frozen_at or real + timedelta(seconds=state.offset_seconds)
    if "set" in change:
        target = change["set"].astimezone(UTC)
    else:
        target = current + timedelta(seconds=change.get("advance_seconds", 0.0))
    frozen = change.get("frozen", state.frozen_at is not None)
    state.offset_seconds = (target - real).total_seconds()
    state.frozen_at = target if frozen else None
    state.updated_at = real
    audit.record(
        "sandbox.clock_moved",
        "clock",
        1,
        detail={"from": current.isoformat(), "to": target.isoformat(), "frozen": frozen},
    )
    db.session.commit()
    installed = clock.current()
    if isinstance(installed, clock.SandboxClock):
        installed.forget()  # later reads in this request see the new time
    return _clock_view(state)


def list_users(args: dict[str, Any]) -> dict[str, Any]:
    query = select(User)
    if email := args.get("email"):
        query = query.where(User.email_normalized == normalize_email(email))
    return paginate(query, User.id, args)


def set_user_status(user_id: int, status: UserStatus, reason: str) -> User:
    """Disable or re-enable an account; disabling signs it out everywhere."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if user.id == principal().user_id and status != UserStatus.ACTIVE:
        raise Forbidden("You cannot disable your own account.")
    old = user.status
    user.status = status
    if status != UserStatus.ACTIVE:
        tokens.revoke_all_for_user(user.id)
    audit.record(
        "user.status_changed",
        "user",
        user.id,
        detail={"from": old.value, "to": status.value, "reason": reason},
    )
    db.session.commit()
    return user
