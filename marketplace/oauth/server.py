"""The Authlib authorization server: grants, client authentication, revocation, introspection.

Authlib drives the protocol; this module adapts it to our tables (digests only), our clock
(never time.time()) and our problem+json errors. Commits happen in oauth/services.py.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    TokenMixin,
    UnsupportedResponseTypeError,
    UnsupportedTokenTypeError,
    grants,
)
from authlib.oauth2.rfc6749.grants import AuthorizationEndpointMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, Response, current_app
from flask import request as flask_request
from sqlalchemy import select, update
from werkzeug.datastructures import CombinedMultiDict, MultiDict

from marketplace import clock, scopes
from marketplace.accounts.models import Organization, User, UserStatus
from marketplace.accounts.services import allowed_scopes
from marketplace.database import db
from marketplace.errors import CrowdlineError, problem
from marketplace.oauth import tokens
from marketplace.oauth.models import OAuthAuthorizationCode, OAuthClient, OAuthToken

_EXTENSION = "crowdline.oauth_server"
CODE_PREFIX = "clc_"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# --- errors ------------------------------------------------------------------------------

_TITLES = {
    "invalid_request": "Invalid request",
    "invalid_client": "Invalid client",
    "invalid_grant": "Invalid grant",
    "unauthorized_client": "Unauthorized client",
    "unsupported_grant_type": "Unsupported grant type",
    "unsupported_response_type": "Unsupported response type",
    "unsupported_token_type": "Unsupported token type",
    "invalid_scope": "Invalid scope",
    "access_denied": "Access denied",
    "insecure_transport": "Insecure transport",
}
_DESCRIPTIONS = {
    "invalid_grant": "The grant is invalid, expired, revoked or was issued to another client.",
    "invalid_request": "The request is missing a parameter or is malformed.",
    "invalid_scope": "The requested scope is invalid, unknown or exceeds what may be granted.",
    "unsupported_token_type": "The token_type_hint must be access_token or refresh_token.",
}


class OAuthProblem(CrowdlineError):
    """An RFC 6749 §5.2 error ({error, error_description}) inside our problem+json."""

    def __init__(self, status: int, error: str, description: str | None = None, **extra: Any):
        self.status = status
        self.slug = error.replace("_", "-")
        self.title = _TITLES.get(error, "OAuth error")
        description = description or _DESCRIPTIONS.get(error) or self.title
        headers = {"Pragma": "no-cache"}
        if status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="crowdline", error="{error}"'
        super().__init__(
            description, headers=headers, error=error, error_description=description, **extra
        )

    @classmethod
    def from_authlib(cls, error: OAuth2Error, **extra: Any) -> OAuthProblem:
        return cls(error.status_code, error.error, error.description, state=error.state, **extra)

    def response(self) -> Response:
        return problem(
            self.status, self.title, self.detail, slug=self.slug, headers=self.headers, **self.extra
        )


def error_location(error: OAuth2Error) -> str | None:
    """Where an authorization error would send the user agent, when that is safe."""
    if not error.redirect_uri:
        return None
    return add_params_to_uri(error.redirect_uri, error.get_body(), error.redirect_fragment)


# --- the clients, codes and tokens as Authlib sees them ----------------------------------


class RegisteredClient(ClientMixin):
    """An OAuthClient row (a labeling tool or an organization's service account)."""

    def __init__(self, row: OAuthClient):
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def is_public(self) -> bool:
        return self.row.token_endpoint_auth_method == "none"

    @property
    def organization_id(self) -> int | None:
        return self.row.organization_id

    @property
    def scope(self) -> str:
        return self.row.scope

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris or []
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        registered = scopes.parse(self.scope)
        granted = registered if not scope else scopes.parse(scope) & registered
        return scopes.render(granted) if granted else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in (self.row.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.client_secret_hash
        return bool(stored) and secrets.compare_digest(stored, tokens.digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.check_grant_type("authorization_code")

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.row.grant_types or [])


class FirstPartyClient(RegisteredClient):
    """The public client behind /api/v1/auth/login; it may only refresh and revoke."""

    def __init__(self):
        self.row = OAuthClient(
            client_id=tokens.FIRST_PARTY_CLIENT_ID,
            client_secret_hash=None,
            name="Crowdline",
            redirect_uris=[],
            grant_types=["refresh_token"],
            scope=scopes.render(frozenset(scopes.SCOPES)),
            token_endpoint_auth_method="none",
        )

    @property
    def organization_id(self) -> None:
        return None


class AuthorizationCode(AuthorizationCodeMixin):
    def __init__(self, row: OAuthAuthorizationCode):
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class IssuedToken(TokenMixin):
    """A token row seen through one of its two halves (`kind` is which one was presented)."""

    def __init__(self, row: OAuthToken, kind: str):
        self.row = row
        self.kind = kind

    def check_client(self, client: ClientMixin) -> bool:
        return self.row.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return self.row.expires_in

    def is_expired(self) -> bool:
        if self.kind == "refresh_token":
            expires = self.row.refresh_expires_at
            return expires is None or clock.now() >= expires
        return clock.now() >= self.row.expires_at

    def is_revoked(self) -> bool:
        if self.kind == "refresh_token":
            return self.row.refresh_revoked_at is not None
        return self.row.access_revoked_at is not None

    def is_live(self) -> bool:
        if self.kind == "refresh_token":
            return tokens.refresh_is_live(self.row)
        return tokens.access_is_live(self.row)


def query_client(client_id: str | None) -> RegisteredClient | None:
    """The active client with this id; revoked clients do not exist as far as OAuth goes."""
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        return None
    if client_id == tokens.FIRST_PARTY_CLIENT_ID:
        return FirstPartyClient()
    row = db.session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    if row is None or row.revoked_at is not None:
        return None
    return RegisteredClient(row)


def find_token(raw: str, hint: str | None) -> IssuedToken | None:
    """The token row matching `raw`, trying the hinted half first (RFC 7009 §2.1)."""
    order = ["access_token", "refresh_token"]
    if hint == "refresh_token":
        order.reverse()
    for kind in order:
        find = (
            tokens.find_by_refresh_token if kind == "refresh_token" else tokens.find_by_access_token
        )
        if (row := find(raw)) is not None:
            return IssuedToken(row, kind)
    return None


def active_user(user_id: int | None) -> User:
    user = db.session.get(User, user_id) if user_id is not None else None
    if user is None or user.status != UserStatus.ACTIVE:
        raise InvalidGrantError("The account behind this grant is not active.")
    return user


def user_scope(user: User, scope: str | None, *, redirect_uri: str | None = None) -> str:
    """Narrow `scope` to what this person may hold; an empty result is invalid_scope."""
    granted = scopes.parse(scope) & allowed_scopes(user)
    if not granted:
        raise InvalidScopeError(
            "None of the requested scopes may be granted to this account.",
            redirect_uri=redirect_uri,
        )
    return scopes.render(granted)


# --- grants ------------------------------------------------------------------------------


class S256CodeChallenge(CodeChallenge):
    """PKCE for every client, S256 only (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Set 'code_challenge_method' to S256; plain is refused.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        uri = request.payload.redirect_uri
        if uri and not client.check_redirect_uri(uri):
            # Authlib would echo the URI, and refuses to build errors with some characters in it.
            raise InvalidRequestError("The redirect_uri is not registered for this client.")
        return AuthorizationEndpointMixin.validate_authorization_redirect_uri(request, client)

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        if self.request.user is not None:
            self.request.scope = user_scope(
                self.request.user, self.request.scope, redirect_uri=redirect_uri
            )
        return redirect_uri

    def generate_authorization_code(self) -> str:
        return CODE_PREFIX + secrets.token_urlsafe(32)

    def save_authorization_code(self, code, request):
        now = clock.now()
        seconds = current_app.config["CROWDLINE"].authorization_code_seconds
        payload = request.payload
        db.session.add(
            OAuthAuthorizationCode(
                code_hash=tokens.digest(code),
                client_id=request.client.get_client_id(),
                user_id=request.user.id,
                redirect_uri=payload.redirect_uri or "",
                response_type="code",
                scope=request.scope,
                code_challenge=payload.data.get("code_challenge"),
                code_challenge_method=payload.data.get("code_challenge_method"),
                created_at=now,
                expires_at=now + timedelta(seconds=seconds),
            )
        )

    def query_authorization_code(self, code, client):
        row = db.session.scalar(
            select(OAuthAuthorizationCode).where(
                OAuthAuthorizationCode.code_hash == tokens.digest(code)
            )
        )
        if row is None or row.client_id != client.get_client_id():
            return None
        if row.used_at is not None:
            revoke_tokens_from_code(row)
            db.session.commit()  # the revocation stands although this request fails
            raise InvalidGrantError(
                "The authorization code was already used; tokens issued from it are revoked."
            )
        if clock.now() >= row.expires_at:
            raise InvalidGrantError("The authorization code has expired.")
        return AuthorizationCode(row)

    def delete_authorization_code(self, authorization_code):
        # One atomic step, so two concurrent exchanges of one code cannot both succeed.
        result = db.session.execute(
            update(OAuthAuthorizationCode)
            .where(
                OAuthAuthorizationCode.id == authorization_code.row.id,
                OAuthAuthorizationCode.used_at.is_(None),
            )
            .values(used_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise InvalidGrantError("The authorization code was already used.")

    def authenticate_user(self, authorization_code):
        return active_user(authorization_code.row.user_id)


def revoke_tokens_from_code(code: OAuthAuthorizationCode) -> None:
    """RFC 6749 §4.1.2: a replayed code revokes every token issued from it (refreshes too)."""
    rows = db.session.scalars(
        select(OAuthToken).where(
            OAuthToken.client_id == code.client_id, OAuthToken.user_id == code.user_id
        )
    )
    for row in rows:
        if (row.meta or {}).get("authorization_code_id") == code.id:
            tokens.revoke(row)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new pair

    def authenticate_refresh_token(self, refresh_token):
        row = tokens.find_by_refresh_token(refresh_token)
        if row is None or not tokens.refresh_is_live(row):
            return None
        return IssuedToken(row, "refresh_token")

    def authenticate_user(self, refresh_token):
        return active_user(refresh_token.row.user_id)

    def issue_token(self, user, refresh_token):
        scope = self.request.payload.scope or refresh_token.get_scope()
        # Still within what the client registered and what the person may hold today.
        scope = self.request.client.get_allowed_scope(scope) or ""
        return self.generate_token(
            user=user, scope=user_scope(user, scope), include_refresh_token=True
        )

    def revoke_old_credential(self, refresh_token):
        # Atomic, so two concurrent refreshes with one token cannot both succeed.
        now = clock.now()
        row = refresh_token.row
        result = db.session.execute(
            update(OAuthToken)
            .where(OAuthToken.id == row.id, OAuthToken.refresh_revoked_at.is_(None))
            .values(refresh_revoked_at=now, access_revoked_at=row.access_revoked_at or now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise InvalidGrantError("The refresh token was already used.")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def create_token_response(self):
        client = self.request.client
        organization = db.session.get(Organization, client.organization_id)
        if organization is None:
            raise InvalidGrantError("The client's organization no longer exists.")
        service = scopes.SERVICE_SCOPES[organization.kind.value]
        granted = scopes.parse(client.get_allowed_scope(self.request.payload.scope)) & service
        if not granted:
            raise InvalidScopeError(
                "None of the requested scopes may be held by a service account."
            )
        token = self.generate_token(scope=scopes.render(granted), include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


# --- revocation and introspection --------------------------------------------------------


def _check_hint(request) -> None:
    if "token" not in request.form:
        raise InvalidRequestError("Missing 'token' in request.")
    hint = request.form.get("token_type_hint")
    if hint and hint not in ("access_token", "refresh_token"):
        error = UnsupportedTokenTypeError()
        error.status_code = 400  # Authlib makes it a 401 without a challenge; RFC 7009 says 400
        raise error


class TokenRevocation(RevocationEndpoint):
    # Public clients (the first-party app included) revoke their own tokens with client_id alone.
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def check_params(self, request, client):
        _check_hint(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        tokens.revoke(token.row)


class TokenIntrospection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def check_params(self, request, client):
        _check_hint(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        """Its own tokens; a confidential client also its organization's service tokens."""
        if token.check_client(client):
            return True
        org_id = token.row.organization_id
        return not client.is_public and org_id is not None and org_id == client.organization_id

    def introspect_token(self, token):
        row = token.row
        user = db.session.get(User, row.user_id) if row.user_id is not None else None
        if row.user_id is not None and (user is None or user.status != UserStatus.ACTIVE):
            return {"active": False}
        if query_client(row.client_id) is None:
            return {"active": False}
        expires = row.refresh_expires_at if token.kind == "refresh_token" else row.expires_at
        body: dict[str, Any] = {
            "active": True,
            "scope": row.scope,
            "client_id": row.client_id,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "exp": int(expires.timestamp()),
            "iat": int(row.issued_at.timestamp()),
        }
        if user is not None:
            body["username"] = user.email
            body["sub"] = str(user.id)
        if row.organization_id is not None:
            body["org_id"] = row.organization_id
        return body


# --- the server --------------------------------------------------------------------------


class _Payload(FlaskOAuth2Payload):
    """Query, form and (for the consent POST) JSON body parameters alike."""

    @property
    def data(self):
        sources = [self._request.args, self._request.form]
        body = self._request.get_json(silent=True) if self._request.is_json else None
        if isinstance(body, dict):
            scalars = {k: str(v) for k, v in body.items() if isinstance(v, str | int | float)}
            sources.append(MultiDict(scalars))
        return CombinedMultiDict(sources)


class _Request(FlaskOAuth2Request):
    def __init__(self, request):
        super().__init__(request)
        self.payload = _Payload(request)


def _basic_credentials(headers) -> tuple[str | None, str | None]:
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return unquote(client_id), (unquote(secret) if sep else None)


def authenticate_client_secret_basic(query, request):
    """client_secret_basic that tolerates malformed headers (Authlib's raises on bad UTF-8)."""
    client_id, secret = _basic_credentials(request.headers)
    if not client_id or not secret:
        return None
    client = query(client_id)
    if client is None:
        raise InvalidClientError(status_code=401, description="The client is not known.")
    return client if client.check_client_secret(secret) else None


class CrowdlineAuthorizationServer(AuthorizationServer):
    def create_oauth2_request(self, request):
        return _Request(flask_request)

    def authenticate_client(self, request, methods, endpoint="token"):
        try:
            return super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            error.status_code = 401  # RFC 6749 §5.2: failed client authentication
            if error.description.startswith("The client cannot authenticate"):
                error.description = (
                    "Client authentication failed: unknown or revoked client, wrong secret, or a "
                    f"method other than the registered one ({', '.join(methods)} accepted here)."
                )
            raise

    def get_authorization_grant(self, request):
        if invalid_error_characters(request.payload.response_type or ""):
            raise UnsupportedResponseTypeError("", "This response_type is not supported.")
        return super().get_authorization_grant(request)

    def handle_response(self, status_code, payload, headers):
        if isinstance(payload, dict) and "error" in payload and status_code >= 400:
            return OAuthProblem(
                status_code,
                payload["error"],
                payload.get("error_description"),
                state=payload.get("state"),
            ).response()
        return super().handle_response(status_code, payload, headers)

    def save_token(self, token, request):
        grant_type = request.payload.grant_type
        client = request.client
        user_id = request.user.id if request.user is not None else None
        organization_id = None
        meta: dict[str, Any] = {}
        if grant_type == "client_credentials":
            organization_id = client.organization_id
        elif grant_type == "authorization_code":
            meta["authorization_code_id"] = request.authorization_code.row.id
        elif grant_type == "refresh_token":
            old = request.refresh_token.row
            user_id, organization_id = old.user_id, old.organization_id
            meta = {**(old.meta or {}), "rotated_from": old.id}
        tokens.store_token(
            token,
            client_id=client.get_client_id(),
            grant_type=grant_type,
            user_id=user_id,
            organization_id=organization_id,
            meta=meta,
        )


def generate_bearer_token(
    grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True
) -> dict[str, Any]:
    """Our token format and lifetimes; the scope arrives already narrowed by the grant."""
    token: dict[str, Any] = {
        "access_token": tokens.new_access_token(),
        "token_type": "Bearer",
        "expires_in": expires_in or tokens.settings().access_token_seconds,
    }
    if include_refresh_token:
        token["refresh_token"] = tokens.new_refresh_token()
    token["scope"] = scope or ""
    return token


def init_authorization_server(app: Flask) -> None:
    server = CrowdlineAuthorizationServer(query_client=query_client)
    server.register_token_generator("default", generate_bearer_token)
    server.scopes_supported = list(scopes.SCOPES)
    server.register_client_auth_method("client_secret_basic", authenticate_client_secret_basic)
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(TokenRevocation)
    server.register_endpoint(TokenIntrospection)
    app.extensions[_EXTENSION] = server


def authorization_server() -> CrowdlineAuthorizationServer:
    return current_app.extensions[_EXTENSION]
