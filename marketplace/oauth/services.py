"""OAuth rules: the protocol endpoints (through Authlib) and the registry of an org's clients.

Every public function here commits at most once and raises domain errors.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Response, request
from sqlalchemy import select, update

from marketplace import audit, clock, scopes
from marketplace.accounts.models import Organization, Role, User
from marketplace.auth import authenticate, require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, InsufficientScope, NotFound, ValidationFailed
from marketplace.oauth import tokens
from marketplace.oauth.models import OAuthClient, OAuthToken
from marketplace.oauth.server import (
    CrowdlineAuthorizationServer,
    OAuthProblem,
    authorization_server,
    error_location,
)
from marketplace.pagination import paginate

CLIENT_ID_PREFIX = "cli_"
CLIENT_SECRET_PREFIX = "cls_"

# --- the protocol endpoints --------------------------------------------------------------


def _answer(call: Callable[[CrowdlineAuthorizationServer], Response]) -> Response:
    """Run one Authlib endpoint; keep its writes only when it succeeded."""
    server = authorization_server()
    try:
        response = call(server)
    except OAuth2Error as error:  # raised before Authlib's own handling (e.g. plain http)
        response = server.handle_error_response(None, error)
    if response.status_code < 400:
        db.session.commit()
    else:
        db.session.rollback()
    return response


def issue_token() -> Response:
    """/oauth/token: authorization_code (+PKCE), refresh_token (rotating), client_credentials."""
    return _answer(lambda server: server.create_token_response())


def revoke_token() -> Response:
    """/oauth/revoke (RFC 7009): revokes both halves of the presented token's pair."""
    return _answer(lambda server: server.create_endpoint_response("revocation"))


def introspect_token() -> Response:
    """/oauth/introspect (RFC 7662)."""
    return _answer(lambda server: server.create_endpoint_response("introspection"))


def _end_user() -> User:
    """The person deciding: signed in to Crowdline itself, with the `account` scope."""
    caller = authenticate()
    if caller.client_id != tokens.FIRST_PARTY_CLIENT_ID or caller.user is None:
        raise Forbidden("Applications are approved with a token from /api/v1/auth/login.")
    if "account" not in caller.scopes:
        raise InsufficientScope(["account"])
    return caller.user


def describe_consent() -> dict[str, Any]:
    """Validate an authorization request and say what the user is asked to approve."""
    user = _end_user()
    try:
        grant = authorization_server().get_consent_grant(end_user=user)
    except OAuth2Error as error:
        raise OAuthProblem.from_authlib(error, redirect_to=error_location(error)) from None
    payload = grant.request.payload
    return {
        "client": {"client_id": grant.client.client_id, "name": grant.client.name},
        "scope": grant.request.scope,
        "scopes": [
            {"name": name, "description": scopes.SCOPES[name]}
            for name in sorted(scopes.parse(grant.request.scope))
        ],
        "redirect_uri": grant.redirect_uri,
        "state": payload.state,
    }


def _confirmation() -> bool:
    body = request.get_json(silent=True) if request.is_json else None
    value = request.values.get("confirm")
    if isinstance(body, dict) and "confirm" in body:
        value = body["confirm"]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    raise ValidationFailed(
        "Say confirm=yes to approve the application or confirm=no to deny it.",
        errors={"confirm": ["Must be yes or no."]},
    )


def decide_authorization() -> Response:
    """Approve (issue a code) or deny; both answer with a redirect to the client."""
    user = _end_user()
    approved = _confirmation()

    def decide(server: CrowdlineAuthorizationServer) -> Response:
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return server.create_authorization_response(
            grant=grant, grant_user=user if approved else None
        )

    return _answer(decide)


# --- the client registry -----------------------------------------------------------------


@dataclass
class IssuedCredentials:
    """A client together with the secret shown once (at creation and rotation)."""

    client: OAuthClient
    client_secret: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _organization(organization_id: int, minimum: Role) -> Organization:
    require_org_role(organization_id, minimum)
    org = db.session.get(Organization, organization_id) if organization_id < 2**63 else None
    if org is None:
        raise NotFound(f"organization {organization_id} not found")
    return org


def _client(organization_id: int, client_id: str) -> OAuthClient:
    client = None
    if len(client_id) <= 64 and "\x00" not in client_id:
        client = db.session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    if client is None or client.organization_id != organization_id:
        raise NotFound(f"OAuth client {client_id} not found")
    return client


def _new_secret() -> tuple[str, str]:
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, tokens.digest(secret)


def _check_registration(data: dict[str, Any]) -> None:
    grant_types = set(data["grant_types"])
    public = data["token_endpoint_auth_method"] == "none"
    if public and "client_credentials" in grant_types:
        raise ValidationFailed(
            "A public client (no secret) cannot use client_credentials.",
            errors={"grant_types": ["client_credentials needs a confidential client."]},
        )
    if "refresh_token" in grant_types and "authorization_code" not in grant_types:
        raise ValidationFailed(
            "refresh_token is only issued alongside authorization_code.",
            errors={"grant_types": ["refresh_token needs authorization_code."]},
        )
    if "authorization_code" in grant_types and not data["redirect_uris"]:
        raise ValidationFailed(
            "The authorization_code grant needs at least one redirect URI.",
            errors={"redirect_uris": ["Register at least one redirect URI."]},
        )
    if "authorization_code" not in grant_types and data["redirect_uris"]:
        raise ValidationFailed(
            "Redirect URIs are only used by the authorization_code grant.",
            errors={"redirect_uris": ["Only for authorization_code clients."]},
        )


def list_clients(organization_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """The organization's OAuth clients, revoked ones included."""
    _organization(organization_id, Role.MEMBER)
    query = select(OAuthClient).where(OAuthClient.organization_id == organization_id)
    return paginate(query, OAuthClient.id, args)


def register_client(organization_id: int, data: dict[str, Any]) -> IssuedCredentials:
    """Register a labeling tool or service account for the organization (admins and owners)."""
    _organization(organization_id, Role.ADMIN)
    _check_registration(data)
    public = data["token_endpoint_auth_method"] == "none"
    secret, secret_hash = (None, None) if public else _new_secret()
    caller = authenticate()
    client = OAuthClient(
        client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(18),
        client_secret_hash=secret_hash,
        name=data["name"].strip(),
        organization_id=organization_id,
        created_by_user_id=caller.user_id,
        redirect_uris=list(dict.fromkeys(data["redirect_uris"])),
        grant_types=sorted(set(data["grant_types"])),
        scope=scopes.render(scopes.parse(data["scope"])),
        token_endpoint_auth_method=data["token_endpoint_auth_method"],
        created_at=clock.now(),
    )
    db.session.add(client)
    db.session.flush()
    audit.record(
        "oauth_client.created",
        "oauth_client",
        client.client_id,
        organization_id=organization_id,
        detail={
            "name": client.name,
            "grant_types": client.grant_types,
            "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "redirect_uris": client.redirect_uris,
        },
    )
    db.session.commit()
    return IssuedCredentials(client, secret)


def get_client(organization_id: int, client_id: str) -> OAuthClient:
    """One of the organization's clients (404 for other tenants)."""
    _organization(organization_id, Role.MEMBER)
    return _client(organization_id, client_id)


def revoke_client(organization_id: int, client_id: str) -> None:
    """Revoke the client and every token it holds; revoking twice changes nothing."""
    _organization(organization_id, Role.ADMIN)
    client = _client(organization_id, client_id)
    if client.revoked_at is not None:
        return
    now = clock.now()
    client.revoked_at = now
    revoked = db.session.execute(
        update(OAuthToken)
        .where(OAuthToken.client_id == client.client_id, OAuthToken.access_revoked_at.is_(None))
        .values(access_revoked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.execute(
        update(OAuthToken)
        .where(
            OAuthToken.client_id == client.client_id,
            OAuthToken.refresh_token_hash.is_not(None),
            OAuthToken.refresh_revoked_at.is_(None),
        )
        .values(refresh_revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        "oauth_client.revoked",
        "oauth_client",
        client.client_id,
        organization_id=organization_id,
        detail={"tokens_revoked": revoked or 0},
    )
    db.session.commit()


def rotate_client_secret(organization_id: int, client_id: str) -> IssuedCredentials:
    """Give a confidential client a new secret; the old one stops working at once."""
    _organization(organization_id, Role.ADMIN)
    client = _client(organization_id, client_id)
    if client.revoked_at is not None:
        raise Conflict("This client has been revoked.")
    if client.token_endpoint_auth_method == "none":
        raise Conflict("A public client has no secret to rotate.")
    secret, client.client_secret_hash = _new_secret()
    audit.record(
        "oauth_client.secret_rotated",
        "oauth_client",
        client.client_id,
        organization_id=organization_id,
    )
    db.session.commit()
    return IssuedCredentials(client, secret)
