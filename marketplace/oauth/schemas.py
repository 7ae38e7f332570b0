"""Request and response schemas for OAuth client registration and the consent step."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from marketplace import scopes

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
_NO_CONTROL_CHARACTERS = validate.Regexp(
    r"^[^\x00-\x1f\x7f]*$", error="Must not contain control characters."
)


def validate_redirect_uri(value: str) -> None:
    """https anywhere; plain http only to the loopback interface (RFC 8252 §7.3)."""
    if not _PRINTABLE_ASCII.match(value):
        raise ValidationError("Must be an absolute URI of printable ASCII without spaces.")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise ValidationError("Not a valid URI.") from None
    if "#" in value:
        raise ValidationError("Must not contain a fragment.")
    if not hostname:
        raise ValidationError("Must be an absolute URI with a host.")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and hostname in LOOPBACK_HOSTS:
        return
    raise ValidationError("Must use https (http is allowed only for 127.0.0.1 or localhost).")


def validate_scope(value: str) -> None:
    wanted = scopes.parse(value)
    if not wanted:
        raise ValidationError("Name at least one scope.")
    if bad := scopes.unknown(wanted):
        raise ValidationError(f"Unknown scope: {' '.join(bad)}.")


class OAuthClientCreateSchema(Schema):
    name = fields.String(
        required=True, validate=[validate.Length(min=1, max=200), _NO_CONTROL_CHARACTERS]
    )
    grant_types = fields.List(
        fields.String(validate=validate.OneOf(GRANT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(GRANT_TYPES)),
        metadata={"description": "a subset of " + ", ".join(GRANT_TYPES)},
    )
    redirect_uris = fields.List(
        fields.String(validate=[validate.Length(max=2000), validate_redirect_uri]),
        load_default=list,
        validate=validate.Length(max=20),
        metadata={"description": "exact-match callback URLs (authorization_code clients)"},
    )
    scope = fields.String(
        required=True,
        validate=[validate.Length(max=500), validate_scope],
        metadata={"description": "space-separated scopes the client may ever request"},
    )
    token_endpoint_auth_method = fields.String(
        load_default="client_secret_basic",
        validate=validate.OneOf(AUTH_METHODS),
        metadata={"description": "none makes a public client (no secret; PKCE protects it)"},
    )


class OAuthClientSchema(Schema):
    client_id = fields.String()
    name = fields.String()
    organization_id = fields.Integer()
    grant_types = fields.List(fields.String())
    redirect_uris = fields.List(fields.String())
    scope = fields.String()
    token_endpoint_auth_method = fields.String()
    created_by_user_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime(format="iso")
    revoked_at = fields.DateTime(format="iso", allow_none=True)


class OAuthClientCredentialsSchema(OAuthClientSchema):
    client_secret = fields.String(
        allow_none=True,
        metadata={"description": "shown only now; null for public clients"},
    )


class ConsentClientSchema(Schema):
    client_id = fields.String()
    name = fields.String()


class ScopeSchema(Schema):
    name = fields.String()
    description = fields.String()


class ConsentSchema(Schema):
    client = fields.Nested(ConsentClientSchema)
    scope = fields.String()
    scopes = fields.List(fields.Nested(ScopeSchema))
    redirect_uri = fields.String()
    state = fields.String(allow_none=True)
