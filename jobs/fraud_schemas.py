"""Schemas for fraud review: cases with their evidence, decisions, appeals, scans."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from jobs.fraud_models import AppealStatus, CaseStatus, FraudAction
from marketplace.pagination import PageArgsSchema
from workers.models import WorkerStatus

_ID = validate.Range(min=1, max=2**62)
DECISIONS = ("dismiss", "restrict", "suspend", "confirm", "ban", "lift")


class CaseListArgsSchema(PageArgsSchema):
    status = fields.Enum(CaseStatus, by_value=True)
    action = fields.Enum(FraudAction, by_value=True)


class AppealListArgsSchema(PageArgsSchema):
    status = fields.Enum(AppealStatus, by_value=True)


class CaseWorkerSchema(Schema):
    id = fields.Integer()
    pseudonym = fields.String()
    status = fields.Enum(WorkerStatus, by_value=True)


class SignalSchema(Schema):
    kind = fields.String()
    key = fields.String()
    job_id = fields.Integer(allow_none=True)
    weight = fields.Float(metadata={"description": "the signal's strength, 0..1"})
    unreviewed_weight = fields.Float(
        metadata={"description": "the part of the weight no reviewer has seen yet"}
    )
    evidence = fields.Dict()
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")


class AppealSchema(Schema):
    id = fields.Integer()
    case_id = fields.Integer()
    worker_id = fields.Integer()
    message = fields.String()
    status = fields.Enum(AppealStatus, by_value=True)
    action_appealed = fields.String()
    created_at = fields.DateTime(format="iso")
    decided_at = fields.DateTime(format="iso", allow_none=True)
    note = fields.String(allow_none=True)


class CaseSchema(Schema):
    id = fields.Integer()
    worker = fields.Nested(CaseWorkerSchema)
    status = fields.Enum(CaseStatus, by_value=True)
    action = fields.Enum(FraudAction, by_value=True)
    risk_score = fields.Float(
        metadata={"description": "1 − ∏(1 − w) over evidence not yet reviewed, 0..1"}
    )
    total_risk_score = fields.Float(metadata={"description": "the same over all evidence"})
    signals = fields.List(fields.Nested(SignalSchema))
    opened_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")
    reviewed_at = fields.DateTime(format="iso", allow_none=True)
    confirmed_at = fields.DateTime(format="iso", allow_none=True)
    note = fields.String(allow_none=True)
    voiding = fields.Dict(allow_none=True)
    open_appeal = fields.Nested(AppealSchema, allow_none=True)


class WorkerRiskSchema(Schema):
    worker = fields.Nested(CaseWorkerSchema)
    risk_score = fields.Float()
    total_risk_score = fields.Float()
    action = fields.Enum(FraudAction, by_value=True)
    case_id = fields.Integer(allow_none=True)
    signals = fields.List(fields.Nested(SignalSchema))


class DecisionSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(DECISIONS))
    note = fields.String(load_default="", validate=validate.Length(max=2000))
    job_id = fields.Integer(
        strict=True,
        validate=_ID,
        metadata={"description": "confirm/ban: void judgments in this job only (default all)"},
    )


class CaseCreateSchema(Schema):
    worker_id = fields.Integer(required=True, strict=True, validate=_ID)
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class AppealCreateSchema(Schema):
    message = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class AppealDecisionSchema(Schema):
    outcome = fields.String(required=True, validate=validate.OneOf(("upheld", "overturned")))
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class StandingSchema(Schema):
    worker_status = fields.Enum(WorkerStatus, by_value=True)
    action = fields.Enum(FraudAction, by_value=True)
    under_review = fields.Boolean()
    pay_on_hold = fields.Boolean(
        metadata={"description": "pending pay does not become available until a review"}
    )
    confirmed = fields.Boolean()
    reasons = fields.List(fields.String())
    latest_appeal = fields.Nested(AppealSchema, allow_none=True)


class ScanRequestSchema(Schema):
    job_id = fields.Integer(strict=True, validate=_ID)


class ScanResultSchema(Schema):
    jobs_scanned = fields.Integer()
    signals_changed = fields.Dict(keys=fields.String(), values=fields.Integer())
    workers_escalated = fields.Integer()
