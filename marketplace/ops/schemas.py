from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from marketplace.accounts.models import UserStatus


class ClockSchema(Schema):
    now = fields.DateTime(format="iso")
    offset_seconds = fields.Float()
    frozen = fields.Boolean()
    sandbox = fields.Boolean()


class ClockChangeSchema(Schema):
    advance_seconds = fields.Float(
        validate=validate.Range(min=0, max=10 * 365 * 24 * 3600),
        metadata={"description": "move the clock forward by this many seconds"},
    )
    set = fields.AwareDateTime(
        format="iso", metadata={"description": "move the clock to this instant (RFC 3339)"}
    )
    frozen = fields.Boolean(
        metadata={"description": "stop the clock between moves (true) or let it run (false)"}
    )

    @validates_schema
    def _one_move(self, data, **_kwargs):
        if "advance_seconds" in data and "set" in data:
            raise ValidationError("Give advance_seconds or set, not both.", "_schema")
        if not data:
            raise ValidationError("Give advance_seconds, set or frozen.", "_schema")


class UserAdminSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    account_type = fields.String(attribute="account_type.value")
    status = fields.String(attribute="status.value")
    created_at = fields.DateTime(format="iso")


class UserStatusChangeSchema(Schema):
    status = fields.Enum(UserStatus, by_value=True, required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class UserListArgsSchema(Schema):
    cursor = fields.String()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    email = fields.String(metadata={"description": "exact e-mail address (any case)"})
