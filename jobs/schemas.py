"""Schemas for jobs, tasks, assignments (the task API) and webhooks.

Worker-facing task views never carry `is_gold` or `gold_answer`: gold tasks must be
indistinguishable from real ones in every field a worker sees.
"""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from credentials.schemas import RequirementsSchema
from jobs import answers
from jobs.gold import visible_status
from jobs.models import AssignmentStatus, JobStatus, TaskStatus
from marketplace.pagination import PageArgsSchema

_ID = validate.Range(min=1, max=2**62)
CURRENCIES = ("USD", "EUR", "GBP")


class MoneySchema(Schema):
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10**9))
    currency = fields.String(load_default="USD", validate=validate.OneOf(CURRENCIES))


class EscalationSchema(Schema):
    """More judgments from better qualified workers before review: a skill at a minimum
    level, or a credential (clearance slug)."""

    extra = fields.Integer(load_default=2, strict=True, validate=validate.Range(min=1, max=10))
    skill = fields.String(validate=validate.Length(min=1, max=80))
    min_skill_level = fields.Integer(strict=True, validate=validate.Range(min=0, max=100))
    credential = fields.String(validate=validate.Length(min=1, max=80))

    @validates_schema
    def _one_requirement(self, data, **_kwargs):
        if "credential" in data:
            if "skill" in data or "min_skill_level" in data:
                raise ValidationError("Give either credential or skill, not both.", "credential")
        elif "skill" not in data or "min_skill_level" not in data:
            raise ValidationError("Give skill with min_skill_level, or credential.", "skill")


class RedundancySchema(Schema):
    min = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=50))
    max = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=100))
    target_confidence = fields.Float(required=True, validate=validate.Range(min=0.5, max=0.9999))
    escalation = fields.Nested(EscalationSchema, allow_none=True)
    agreement_threshold = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0, max=1_000_000),
        metadata={
            "description": "IoU / span overlap (0..1) or numeric tolerance at which two "
            "non-categorical answers agree (default 0.5)"
        },
    )

    @validates_schema
    def _ordered(self, data, **_kwargs):
        if data.get("min", 0) > data.get("max", 0):
            raise ValidationError("min must not exceed max.", "min")


class JobRequirementsSchema(RequirementsSchema):
    min_accuracy = fields.Float(
        validate=validate.Range(min=0, max=1),
        metadata={"description": "workers measured below it (after 4 gold answers) are removed"},
    )


class AnswerSpecField(fields.Dict):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if problem := answers.check_spec(value):
            raise ValidationError(problem)
        return value


class JobCreateSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    instructions = fields.String(load_default="", validate=validate.Length(max=100_000))
    answer_spec = AnswerSpecField(required=True)
    price_per_judgment = fields.Nested(MoneySchema, required=True)
    redundancy = fields.Nested(RedundancySchema, required=True)
    gold_rate = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=0.9))
    requirements = fields.Nested(JobRequirementsSchema, load_default=dict)
    review_rate = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=1))
    deadline = fields.AwareDateTime(format="iso", allow_none=True)
    priority = fields.Integer(
        load_default=0, strict=True, validate=validate.Range(min=-100, max=100)
    )
    lease_seconds = fields.Integer(
        load_default=600, strict=True, validate=validate.Range(min=30, max=86400)
    )
    organization_id = fields.Integer(
        validate=_ID, metadata={"description": "the client organization (if you have several)"}
    )


class JobUpdateSchema(Schema):
    title = fields.String(validate=validate.Length(min=1, max=200))
    instructions = fields.String(validate=validate.Length(max=100_000))
    answer_spec = AnswerSpecField()
    price_per_judgment = fields.Nested(MoneySchema)
    redundancy = fields.Nested(RedundancySchema)
    gold_rate = fields.Float(validate=validate.Range(min=0, max=0.9))
    requirements = fields.Nested(JobRequirementsSchema)
    review_rate = fields.Float(validate=validate.Range(min=0, max=1))
    deadline = fields.AwareDateTime(format="iso", allow_none=True)
    priority = fields.Integer(strict=True, validate=validate.Range(min=-100, max=100))
    lease_seconds = fields.Integer(strict=True, validate=validate.Range(min=30, max=86400))


class JobSchema(Schema):
    id = fields.Integer()
    organization_id = fields.Integer()
    title = fields.String()
    instructions = fields.String()
    answer_spec = fields.Dict()
    price_per_judgment = fields.Method("_price")
    redundancy = fields.Method("_redundancy")
    gold_rate = fields.Float()
    requirements = fields.Dict()
    review_rate = fields.Float()
    deadline = fields.DateTime(format="iso", allow_none=True)
    priority = fields.Integer()
    lease_seconds = fields.Integer()
    status = fields.Enum(JobStatus, by_value=True)
    created_at = fields.DateTime(format="iso")
    activated_at = fields.DateTime(format="iso", allow_none=True)
    completed_at = fields.DateTime(format="iso", allow_none=True)

    def _price(self, job):
        return {"amount": job.price_amount, "currency": job.currency}

    def _redundancy(self, job):
        return {
            "min": job.redundancy_min,
            "max": job.redundancy_max,
            "target_confidence": job.target_confidence,
            "escalation": job.escalation,
            "agreement_threshold": job.agreement_threshold,
        }


class JobWorkerSchema(Schema):
    """A worker as a client sees them: a pseudonym and figures from this job alone."""

    worker = fields.String(metadata={"description": "pseudonymous worker id"})
    leases = fields.Integer()
    judgments = fields.Integer()
    accepted = fields.Integer()
    released = fields.Integer()
    gold_judged = fields.Integer()
    gold_accuracy = fields.Float(allow_none=True)
    mean_seconds_on_task = fields.Float(allow_none=True)


class JobListArgsSchema(PageArgsSchema):
    status = fields.Enum(JobStatus, by_value=True)


class WorkerTaskSchema(Schema):
    """What a worker's tool sees of a task: nothing that tells gold apart."""

    id = fields.Integer()
    job_id = fields.Integer()
    payload = fields.Dict()
    prelabel = fields.Method("_prelabel")

    def _prelabel(self, task):
        if task.prelabel is None:
            return None
        return {"answer": task.prelabel, "confidence": task.prelabel_confidence}


class WorkerJobSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    instructions = fields.String()
    answer_spec = fields.Dict()


class AssignmentSchema(Schema):
    id = fields.Integer()
    status = fields.Function(visible_status, metadata={"enum": [s.value for s in AssignmentStatus]})
    leased_at = fields.DateTime(format="iso")
    lease_expires_at = fields.DateTime(format="iso")
    submitted_at = fields.DateTime(format="iso", allow_none=True)
    answer = fields.Raw(allow_none=True)
    active_seconds = fields.Float(allow_none=True)
    server_seconds = fields.Float(allow_none=True)
    release_reason = fields.String(allow_none=True)
    task = fields.Nested(WorkerTaskSchema)
    job = fields.Nested(WorkerJobSchema)


class AssignmentSummarySchema(Schema):
    id = fields.Integer()
    task_id = fields.Integer()
    job_id = fields.Integer()
    status = fields.Function(visible_status, metadata={"enum": [s.value for s in AssignmentStatus]})
    leased_at = fields.DateTime(format="iso")
    lease_expires_at = fields.DateTime(format="iso")
    submitted_at = fields.DateTime(format="iso", allow_none=True)
    answer = fields.Raw(allow_none=True)


class LeaseRequestSchema(Schema):
    job_id = fields.Integer(validate=_ID)


class HeartbeatSchema(Schema):
    lease_expires_at = fields.DateTime(format="iso")


class ReleaseSchema(Schema):
    reason = fields.String(validate=validate.Length(max=500))


class SubmitSchema(Schema):
    answer = fields.Raw(required=True, allow_none=False)
    active_seconds = fields.Float(validate=validate.Range(min=0, max=7 * 86400))


class AssignmentListArgsSchema(PageArgsSchema):
    status = fields.Enum(AssignmentStatus, by_value=True)
    job_id = fields.Integer(validate=_ID)


class TaskSchema(Schema):
    """The client's view of a task (its own data, gold included)."""

    id = fields.Integer()
    job_id = fields.Integer()
    external_id = fields.String(allow_none=True)
    payload = fields.Dict()
    is_gold = fields.Boolean()
    gold_answer = fields.Raw(allow_none=True)
    prelabel = fields.Raw(allow_none=True)
    prelabel_confidence = fields.Float(allow_none=True)
    status = fields.Enum(TaskStatus, by_value=True)
    priority = fields.Integer()
    redundancy_target = fields.Integer()
    live_count = fields.Integer()
    submitted_count = fields.Integer()
    final_answer = fields.Raw(allow_none=True)
    confidence = fields.Float(allow_none=True)
    method = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")
    completed_at = fields.DateTime(format="iso", allow_none=True)


class TaskListArgsSchema(PageArgsSchema):
    status = fields.Enum(TaskStatus, by_value=True)
    gold = fields.Boolean()


class WebhookCreateSchema(Schema):
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    events = fields.List(
        fields.String(
            validate=validate.OneOf(
                ("job.completed", "task.completed", "job.budget_low", "job.labels_changed")
            )
        ),
        required=True,
        validate=validate.Length(min=1),
    )

    @validates("url")
    def _length(self, value, **_kwargs):
        if len(value) > 2000:
            raise ValidationError("At most 2000 characters.")
