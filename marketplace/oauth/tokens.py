"""Issuing, finding and revoking bearer tokens. Raw tokens are shown once and never stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from marketplace import clock
from marketplace.database import db
from marketplace.oauth.models import OAuthToken

# The first-party client behind /api/v1/auth/login; it exists in code, not in the database.
FIRST_PARTY_CLIENT_ID = "crowdline"

ACCESS_PREFIX = "cla_"
REFRESH_PREFIX = "clr_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_access_token(*_args, **_kwargs) -> str:
    return ACCESS_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token(*_args, **_kwargs) -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(40)


def settings():
    return current_app.config["CROWDLINE"]


def store_token(
    token: dict,
    *,
    client_id: str,
    grant_type: str,
    user_id: int | None = None,
    organization_id: int | None = None,
    meta: dict | None = None,
) -> OAuthToken:
    """Persist the digests of a freshly generated token dict (adds to the session)."""
    now = clock.now()
    refresh = token.get("refresh_token")
    row = OAuthToken(
        client_id=client_id,
        user_id=user_id,
        organization_id=organization_id,
        grant_type=grant_type,
        scope=token.get("scope", ""),
        access_token_hash=digest(token["access_token"]),
        refresh_token_hash=digest(refresh) if refresh else None,
        issued_at=now,
        expires_in=int(token["expires_in"]),
        refresh_expires_at=(
            now + timedelta(seconds=settings().refresh_token_seconds) if refresh else None
        ),
        meta=meta or {},
    )
    db.session.add(row)
    return row


def issue_first_party_token(user_id: int, scope: str) -> dict:
    """A token pair for a user who signed in with their password (adds to the session)."""
    token = {
        "access_token": new_access_token(),
        "token_type": "Bearer",
        "expires_in": settings().access_token_seconds,
        "refresh_token": new_refresh_token(),
        "scope": scope,
    }
    store_token(token, client_id=FIRST_PARTY_CLIENT_ID, grant_type="password", user_id=user_id)
    return token


def find_by_access_token(raw: str) -> OAuthToken | None:
    return db.session.scalar(select(OAuthToken).where(OAuthToken.access_token_hash == digest(raw)))


def find_by_refresh_token(raw: str) -> OAuthToken | None:
    return db.session.scalar(select(OAuthToken).where(OAuthToken.refresh_token_hash == digest(raw)))


def access_is_live(token: OAuthToken) -> bool:
    return token.access_revoked_at is None and clock.now() < token.expires_at


def refresh_is_live(token: OAuthToken) -> bool:
    return (
        token.refresh_token_hash is not None
        and token.refresh_revoked_at is None
        and token.refresh_expires_at is not None
        and clock.now() < token.refresh_expires_at
    )


def revoke(token: OAuthToken) -> None:
    """Revoke both halves of a token pair (RFC 7009: revoking one revokes the grant)."""
    now = clock.now()
    token.access_revoked_at = token.access_revoked_at or now
    if token.refresh_token_hash:
        token.refresh_revoked_at = token.refresh_revoked_at or now


def revoke_all_for_user(user_id: int, *, except_token_id: int | None = None) -> None:
    """Sign a user out everywhere (after a password change or when disabled)."""
    now = clock.now()
    condition = OAuthToken.user_id == user_id
    if except_token_id is not None:
        condition = condition & (OAuthToken.id != except_token_id)
    db.session.execute(
        update(OAuthToken)
        .where(condition, OAuthToken.access_revoked_at.is_(None))
        .values(access_revoked_at=now)
    )
    db.session.execute(
        update(OAuthToken)
        .where(condition, OAuthToken.refresh_revoked_at.is_(None))
        .values(refresh_revoked_at=now)
    )
