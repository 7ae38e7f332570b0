"""Request and response schemas for accounts, organizations and memberships."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from marketplace.accounts.models import AccountType, OrgKind, Role, UserStatus
from marketplace.passwords import MAX_LENGTH, MIN_LENGTH

_password = fields.String(
    required=True,
    load_only=True,
    validate=validate.Length(min=MIN_LENGTH, max=MAX_LENGTH),
    metadata={"description": f"{MIN_LENGTH} to {MAX_LENGTH} characters"},
)


class SignupSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = _password
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    account_type = fields.Enum(
        AccountType,
        by_value=True,
        required=True,
        metadata={"description": "worker, client or vendor"},
    )
    organization = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "name of the new organization (client and vendor accounts)"},
    )

    @validates_schema
    def _no_self_made_admins(self, data, **_kwargs):
        if data.get("account_type") == AccountType.ADMIN:
            raise ValidationError("Platform admins are not created by sign-up.", "account_type")


class LoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(max=MAX_LENGTH)
    )
    scope = fields.String(
        validate=validate.Length(max=500),
        metadata={"description": "space-separated scopes to narrow the token to"},
    )


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    refresh_token = fields.String()
    scope = fields.String()


class PasswordChangeSchema(Schema):
    current_password = fields.String(
        required=True, load_only=True, validate=validate.Length(max=MAX_LENGTH)
    )
    new_password = _password


class OrganizationSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String()
    kind = fields.Enum(OrgKind, by_value=True)
    created_at = fields.DateTime(format="iso")


class MembershipOfUserSchema(Schema):
    organization = fields.Nested(OrganizationSchema)
    role = fields.Enum(Role, by_value=True)


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    email = fields.String()
    name = fields.String()
    account_type = fields.Enum(AccountType, by_value=True)
    status = fields.Enum(UserStatus, by_value=True)
    created_at = fields.DateTime(format="iso")
    memberships = fields.List(fields.Nested(MembershipOfUserSchema))


class SignupResultSchema(Schema):
    user = fields.Nested(UserSchema)
    organization = fields.Nested(OrganizationSchema, allow_none=True)


class AccountUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))


class OrganizationCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.Enum(
        OrgKind, by_value=True, required=True, metadata={"description": "client or vendor"}
    )

    @validates_schema
    def _no_platform_orgs(self, data, **_kwargs):
        if data.get("kind") == OrgKind.PLATFORM:
            raise ValidationError(
                "There is one platform organization; it is not created here.", "kind"
            )


class OrganizationUpdateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class MemberSchema(Schema):
    id = fields.Integer(dump_only=True)
    user_id = fields.Integer()
    email = fields.String(attribute="user.email")
    name = fields.String(attribute="user.name")
    role = fields.Enum(Role, by_value=True)
    created_at = fields.DateTime(format="iso")


class MemberAddSchema(Schema):
    email = fields.Email(required=True)
    role = fields.Enum(Role, by_value=True, load_default=Role.MEMBER)


class MemberUpdateSchema(Schema):
    role = fields.Enum(Role, by_value=True, required=True)


class AuditEventSchema(Schema):
    id = fields.Integer()
    occurred_at = fields.DateTime(format="iso")
    actor_user_id = fields.Integer(allow_none=True)
    actor_client_id = fields.String(allow_none=True)
    organization_id = fields.Integer(allow_none=True)
    action = fields.String()
    object_type = fields.String()
    object_id = fields.String()
    detail = fields.Dict()
    request_id = fields.String(allow_none=True)
