"""Who is calling: bearer-token authentication, scope checks and tenant roles.

Every API route is wrapped in `require(...)`; the caller is then `principal()`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import g, request
from sqlalchemy import select

from marketplace.accounts.models import Membership, OrgKind, Role, User, UserStatus
from marketplace.database import db
from marketplace.errors import InsufficientScope, NotFound, Unauthorized
from marketplace.oauth import tokens
from marketplace.oauth.models import OAuthClient, OAuthToken

ROLE_RANK = {Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

# Rows that later packages keep one of per user (a worker's profile, say), loaded with the
# token in its one query, so the routes that need them pay no second look-up. Registered by
# those packages (marketplace imports none of them): name -> model with a unique `user_id`.
_USER_ROWS: dict[str, Any] = {}


def load_with_user(name: str, model: Any) -> None:
    """Have every authentication also load the caller's `model` row (or None) as `name`."""
    _USER_ROWS[name] = model


@dataclass
class Principal:
    """The caller: a user (perhaps through a labeling tool) or an org's service account."""

    token: OAuthToken
    user: User | None
    organization_id: int | None
    scopes: frozenset[str]
    rows: dict[str, Any] = field(default_factory=dict)  # see load_with_user

    @property
    def client_id(self) -> str:
        return self.token.client_id

    @property
    def user_id(self) -> int | None:
        return self.user.id if self.user else None

    @property
    def idempotency_owner(self) -> str:
        if self.user is not None:
            return f"user:{self.user.id}"
        return f"client:{self.token.client_id}"

    @functools.cached_property
    def roles(self) -> dict[int, Role]:
        """Organization id → role. A service account holds the owner's reach in its own org,
        bounded by its scopes."""
        if self.user is None:
            return {self.organization_id: Role.ADMIN} if self.organization_id else {}
        rows = db.session.execute(
            select(Membership.organization_id, Membership.role).where(
                Membership.user_id == self.user.id
            )
        ).all()
        return {org_id: role for org_id, role in rows}

    @functools.cached_property
    def is_platform_admin(self) -> bool:
        if "admin" not in self.scopes:
            return False
        from marketplace.accounts.models import Organization

        platform_ids = set(
            db.session.scalars(select(Organization.id).where(Organization.kind == OrgKind.PLATFORM))
        )
        return any(
            org_id in platform_ids and ROLE_RANK[role] >= ROLE_RANK[Role.ADMIN]
            for org_id, role in self.roles.items()
        )

    def role_in(self, organization_id: int) -> Role | None:
        return self.roles.get(organization_id)

    def has_role(self, organization_id: int, minimum: Role = Role.MEMBER) -> bool:
        role = self.role_in(organization_id)
        return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise Unauthorized("Send an access token: 'Authorization: Bearer <token>'.", error="")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "The Authorization header must be 'Bearer <token>'.", error="invalid_request"
        )
    return value.strip()


def authenticate() -> Principal:
    """Resolve the request's bearer token into a Principal, or raise 401."""
    if "principal" in g:
        return g.principal
    # The token, its user and the user's registered rows in one query: every API call pays
    # for this one.
    names = list(_USER_ROWS)
    query = select(OAuthToken, User, *(_USER_ROWS[n] for n in names)).outerjoin(
        User, User.id == OAuthToken.user_id
    )
    for name in names:
        model = _USER_ROWS[name]
        query = query.outerjoin(model, model.user_id == OAuthToken.user_id)
    found = db.session.execute(
        query.where(OAuthToken.access_token_hash == tokens.digest(_bearer_token()))
    ).first()
    if found is None:
        raise Unauthorized("The access token is not recognised.")
    token, user, *extra = found
    if token.access_revoked_at is not None:
        raise Unauthorized("The access token has been revoked.")
    if not tokens.access_is_live(token):
        raise Unauthorized("The access token has expired; refresh it or sign in again.")
    if token.user_id is not None and (user is None or user.status != UserStatus.ACTIVE):
        raise Unauthorized("The account behind this token is not active.")
    if token.client_id != tokens.FIRST_PARTY_CLIENT_ID:
        client = db.session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == token.client_id)
        )
        if client is None or client.revoked_at is not None:
            raise Unauthorized("The application behind this token has been revoked.")
    g.principal = Principal(
        token=token,
        user=user,
        organization_id=token.organization_id,
        scopes=frozenset(token.scope.split()),
        rows=dict(zip(names, extra, strict=True)) if user is not None else {},
    )
    return g.principal


def principal() -> Principal:
    """The authenticated caller of the current request."""
    return g.principal


def require(*scopes: str) -> Callable:
    """Authenticate the caller and demand every listed scope; documents itself in OpenAPI."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = authenticate()
            missing = [s for s in scopes if s not in caller.scopes]
            if missing:
                raise InsufficientScope(missing)
            return view(*args, **kwargs)

        apidoc = dict(getattr(view, "_apidoc", {}))
        manual = dict(apidoc.get("manual_doc", {}))
        manual["security"] = [{"bearerAuth": list(scopes)}]
        responses = dict(manual.get("responses", {}))
        responses.setdefault("401", {"description": "Missing, expired or revoked token"})
        if scopes:
            responses.setdefault("403", {"description": "The token lacks a required scope"})
        manual["responses"] = responses
        apidoc["manual_doc"] = manual
        wrapper._apidoc = apidoc
        return wrapper

    return decorator


def require_user() -> User:
    """The calling user; service-account tokens are refused with 403 for person-only routes."""
    caller = principal()
    if caller.user is None:
        from marketplace.errors import Forbidden

        raise Forbidden("This route acts for a person; a service-account token cannot call it.")
    return caller.user


def require_org_role(organization_id: int, minimum: Role = Role.MEMBER) -> None:
    """Raise 404 (never 403) when the caller has no standing in another tenant's organization."""
    caller = principal()
    if caller.is_platform_admin:
        return
    if caller.role_in(organization_id) is None:
        raise NotFound(f"organization {organization_id} not found")
    if not caller.has_role(organization_id, minimum):
        from marketplace.errors import Forbidden

        raise Forbidden(f"this needs the {minimum.value} role in the organization")
