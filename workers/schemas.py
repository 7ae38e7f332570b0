"""Request and response schemas for worker profiles, the funnel and crowds."""

from __future__ import annotations

import re
from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate, validates

from marketplace.pagination import PageArgsSchema
from workers.models import InvitationStatus, JoinRequestStatus, WorkerStatus

_COUNTRY = validate.Regexp(r"^[A-Z]{2}$", error="Use an ISO 3166-1 alpha-2 code, e.g. US.")
_LANGUAGE = validate.Regexp(
    r"^[a-z]{2,3}(-[A-Z]{2})?$", error="Use a BCP 47 language code, e.g. es or pt-BR."
)
PROFICIENCIES = ("native", "fluent", "advanced", "intermediate", "basic")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class LanguageSchema(Schema):
    code = fields.String(required=True, validate=_LANGUAGE)
    proficiency = fields.String(required=True, validate=validate.OneOf(PROFICIENCIES))


class WorkerProfileSchema(Schema):
    """What a worker sees of themselves, and what their vendors and admins see."""

    id = fields.Integer()
    pseudonym = fields.String()
    email = fields.String(attribute="user.email")
    display_name = fields.String()
    status = fields.Enum(WorkerStatus, by_value=True)
    status_reason = fields.String(allow_none=True)
    status_changed_at = fields.DateTime(format="iso", allow_none=True)
    country = fields.String(allow_none=True)
    timezone = fields.String(allow_none=True)
    languages = fields.List(fields.Nested(LanguageSchema))
    weekly_availability_hours = fields.Integer(allow_none=True)
    availability = fields.Dict()
    claimed_skills = fields.List(fields.String())
    payout_country = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")


class PseudonymousWorkerSchema(Schema):
    """All a client ever sees of a worker."""

    pseudonym = fields.String()


class WorkerProfileUpdateSchema(Schema):
    display_name = fields.String(validate=validate.Length(min=1, max=200))
    country = fields.String(validate=_COUNTRY, allow_none=True)
    timezone = fields.String(allow_none=True)
    languages = fields.List(fields.Nested(LanguageSchema), validate=validate.Length(max=20))
    weekly_availability_hours = fields.Integer(
        validate=validate.Range(min=0, max=168), allow_none=True
    )
    availability = fields.Dict(
        keys=fields.String(validate=validate.OneOf(_DAYS)),
        values=fields.List(fields.List(fields.String(), validate=validate.Length(equal=2))),
        metadata={"description": 'windows per weekday, e.g. {"mon": [["09:00", "17:00"]]}'},
    )
    claimed_skills = fields.List(
        fields.String(validate=validate.Length(min=1, max=80)), validate=validate.Length(max=50)
    )
    payout_country = fields.String(validate=_COUNTRY, allow_none=True)

    @validates("timezone")
    def _timezone(self, value, **_kwargs):
        if value is not None and value not in available_timezones():
            raise ValidationError("Use an IANA time zone name, e.g. Europe/Madrid.")

    @validates("availability")
    def _windows(self, value, **_kwargs):
        for day, windows in value.items():
            for start, end in windows:
                if not (_HHMM.match(start) and _HHMM.match(end)) or start >= end:
                    raise ValidationError(
                        f"{day}: each window is [start, end] as HH:MM, start first."
                    )

    @validates("languages")
    def _unique_languages(self, value, **_kwargs):
        codes = [entry["code"] for entry in value]
        if len(set(codes)) != len(codes):
            raise ValidationError("Each language once.")


class WorkerListArgsSchema(PageArgsSchema):
    status = fields.Enum(WorkerStatus, by_value=True)
    crowd_id = fields.Integer(validate=validate.Range(min=1, max=2**62))


class StatusChangeSchema(Schema):
    to = fields.Enum(WorkerStatus, by_value=True, required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class CrowdSchema(Schema):
    id = fields.Integer()
    organization_id = fields.Integer()
    name = fields.String()
    description = fields.String()
    created_at = fields.DateTime(format="iso")


class CrowdCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))


class CrowdUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=5000))


class CrowdMemberSchema(Schema):
    id = fields.Integer()
    crowd_id = fields.Integer()
    worker = fields.Nested(WorkerProfileSchema)
    joined_at = fields.DateTime(format="iso")
    source = fields.String()


class MyCrowdSchema(Schema):
    crowd_id = fields.Integer()
    joined_at = fields.DateTime(format="iso")
    source = fields.String()


class InvitationCreateSchema(Schema):
    emails = fields.List(fields.Email(), load_default=list)
    count = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1000))
    expires_in_days = fields.Integer(load_default=14, validate=validate.Range(min=1, max=365))


class InvitationSchema(Schema):
    id = fields.Integer()
    code = fields.String(metadata={"description": "shown once, in the create response"})
    email = fields.String(allow_none=True)
    expires_at = fields.DateTime(format="iso")
    status = fields.Enum(InvitationStatus, by_value=True)


class InvitationCreatedSchema(Schema):
    invitations = fields.List(fields.Nested(InvitationSchema))


class InvitationListItemSchema(Schema):
    id = fields.Integer()
    email = fields.String(attribute="email_normalized", allow_none=True)
    status = fields.Enum(InvitationStatus, by_value=True)
    expires_at = fields.DateTime(format="iso")
    created_at = fields.DateTime(format="iso")
    accepted_at = fields.DateTime(format="iso", allow_none=True)
    accepted_by_worker_id = fields.Integer(allow_none=True)


class InvitationListArgsSchema(PageArgsSchema):
    status = fields.Enum(InvitationStatus, by_value=True)


class InvitationAcceptSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=200))


class JoinRequestCreateSchema(Schema):
    message = fields.String(load_default="", validate=validate.Length(max=2000))


class JoinRequestSchema(Schema):
    id = fields.Integer()
    crowd_id = fields.Integer()
    worker = fields.Nested(WorkerProfileSchema)
    message = fields.String()
    status = fields.Enum(JoinRequestStatus, by_value=True)
    created_at = fields.DateTime(format="iso")
    decided_at = fields.DateTime(format="iso", allow_none=True)
    decision_reason = fields.String(allow_none=True)


class JoinRequestArgsSchema(PageArgsSchema):
    status = fields.Enum(JoinRequestStatus, by_value=True)


class JoinDecisionSchema(Schema):
    reason = fields.String(validate=validate.Length(max=1000))


class MemberRemoveSchema(Schema):
    reason = fields.String(validate=validate.Length(max=1000))
