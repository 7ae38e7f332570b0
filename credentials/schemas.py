"""Schemas for skills, assessments, clearances, attestations and eligibility.

Question schemas come in two views: the author's (with the hidden answer key) and the
worker's (without it). Worker-facing responses only ever use the worker's view.
"""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from credentials.models import (
    AttemptMode,
    AttemptStatus,
    AttestationStatus,
    EvidenceKind,
    QuestionKind,
    SkillSource,
    Verifier,
)
from marketplace.pagination import PageArgsSchema

_SLUG = validate.Regexp(
    r"^[a-z0-9]+([._-][a-z0-9]+)*$", error="Lower-case words separated by '.', '_' or '-'."
)
_ID = validate.Range(min=1, max=2**62)


class SkillSchema(Schema):
    id = fields.Integer()
    slug = fields.String()
    name = fields.String()
    description = fields.String()


class SkillCreateSchema(Schema):
    slug = fields.String(required=True, validate=[validate.Length(min=1, max=80), _SLUG])
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))


class SkillListArgsSchema(PageArgsSchema):
    prefix = fields.String(validate=validate.Length(max=80))


class WorkerSkillSchema(Schema):
    skill = fields.Nested(SkillSchema)
    level = fields.Integer()
    source = fields.Enum(SkillSource, by_value=True)
    granted_at = fields.DateTime(format="iso")
    expires_at = fields.DateTime(format="iso", allow_none=True)


class WorkerSkillListSchema(Schema):
    items = fields.List(fields.Nested(WorkerSkillSchema))


class SkillGrantSchema(Schema):
    skill_id = fields.Integer(required=True, validate=_ID)
    level = fields.Integer(required=True, validate=validate.Range(min=0, max=100))
    expires_at = fields.AwareDateTime(format="iso", allow_none=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class AssessmentSchema(Schema):
    id = fields.Integer()
    skill = fields.Nested(SkillSchema)
    organization_id = fields.Integer()
    title = fields.String()
    instructions = fields.String()
    questions_per_attempt = fields.Integer()
    time_limit_seconds = fields.Integer()
    pass_mark = fields.Float()
    retake_cooldown_seconds = fields.Integer()
    max_attempts = fields.Integer()
    grant_level = fields.Integer()
    grant_validity_days = fields.Integer(allow_none=True)
    active = fields.Boolean()


class AssessmentCreateSchema(Schema):
    skill_id = fields.Integer(required=True, validate=_ID)
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    instructions = fields.String(load_default="", validate=validate.Length(max=20000))
    questions_per_attempt = fields.Integer(required=True, validate=validate.Range(min=1, max=200))
    time_limit_seconds = fields.Integer(required=True, validate=validate.Range(min=10, max=86400))
    pass_mark = fields.Float(required=True, validate=validate.Range(min=0, max=100))
    retake_cooldown_seconds = fields.Integer(
        load_default=0, validate=validate.Range(min=0, max=365 * 86400)
    )
    max_attempts = fields.Integer(required=True, validate=validate.Range(min=1, max=100))
    grant_level = fields.Integer(required=True, validate=validate.Range(min=0, max=100))
    grant_validity_days = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=3650))


class AssessmentUpdateSchema(Schema):
    title = fields.String(validate=validate.Length(min=1, max=200))
    instructions = fields.String(validate=validate.Length(max=20000))
    questions_per_attempt = fields.Integer(validate=validate.Range(min=1, max=200))
    time_limit_seconds = fields.Integer(validate=validate.Range(min=10, max=86400))
    pass_mark = fields.Float(validate=validate.Range(min=0, max=100))
    retake_cooldown_seconds = fields.Integer(validate=validate.Range(min=0, max=365 * 86400))
    max_attempts = fields.Integer(validate=validate.Range(min=1, max=100))
    grant_level = fields.Integer(validate=validate.Range(min=0, max=100))
    grant_validity_days = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=3650))
    active = fields.Boolean()


class AssessmentListArgsSchema(PageArgsSchema):
    skill_id = fields.Integer(validate=_ID)


class QuestionCreateSchema(Schema):
    kind = fields.Enum(QuestionKind, by_value=True, required=True)
    prompt = fields.String(required=True, validate=validate.Length(min=1, max=10000))
    content = fields.Dict(load_default=dict)
    answer_key = fields.Raw(allow_none=True, metadata={"description": "hidden from workers"})
    tolerance = fields.Float(validate=validate.Range(min=0))
    iou_threshold = fields.Float(validate=validate.Range(min=0.01, max=1))
    explanation = fields.String(load_default="", validate=validate.Length(max=10000))
    points = fields.Float(load_default=1.0, validate=validate.Range(min=0.01, max=1000))


class QuestionBatchSchema(Schema):
    questions = fields.List(
        fields.Nested(QuestionCreateSchema), required=True, validate=validate.Length(min=1, max=500)
    )


class QuestionAuthorSchema(Schema):
    """The author's view: includes the answer key."""

    id = fields.Integer()
    kind = fields.Enum(QuestionKind, by_value=True)
    prompt = fields.String()
    content = fields.Dict()
    answer_key = fields.Raw()
    tolerance = fields.Float(allow_none=True)
    iou_threshold = fields.Float(allow_none=True)
    explanation = fields.String()
    points = fields.Float()


class QuestionBatchResultSchema(Schema):
    questions = fields.List(fields.Nested(QuestionAuthorSchema))


class QuestionWorkerSchema(Schema):
    """The worker's view: never the key, never the explanation (it would give the key away)."""

    id = fields.Integer()
    kind = fields.Enum(QuestionKind, by_value=True)
    prompt = fields.String()
    content = fields.Dict()
    points = fields.Float()


class AttemptStartSchema(Schema):
    mode = fields.Enum(AttemptMode, by_value=True, load_default=AttemptMode.GRADED)


class AttemptSchema(Schema):
    id = fields.Integer()
    assessment_id = fields.Integer()
    mode = fields.Enum(AttemptMode, by_value=True)
    status = fields.Enum(AttemptStatus, by_value=True)
    started_at = fields.DateTime(format="iso")
    deadline_at = fields.DateTime(format="iso")
    submitted_at = fields.DateTime(format="iso", allow_none=True)
    finished_at = fields.DateTime(format="iso", allow_none=True)
    score = fields.Float(allow_none=True)
    passed = fields.Method("_passed")
    questions = fields.List(fields.Nested(QuestionWorkerSchema))

    def _passed(self, attempt):
        if attempt.status in (AttemptStatus.PASSED, AttemptStatus.FAILED, AttemptStatus.EXPIRED):
            return attempt.status == AttemptStatus.PASSED
        return None


class AttemptSummarySchema(AttemptSchema):
    class Meta:
        exclude = ("questions",)


class SubmittedAnswerSchema(Schema):
    question_id = fields.Integer(required=True, validate=_ID)
    answer = fields.Raw(required=True, allow_none=False)


class AttemptSubmitSchema(Schema):
    answers = fields.List(
        fields.Nested(SubmittedAnswerSchema), required=True, validate=validate.Length(max=200)
    )


class PracticeFeedbackSchema(Schema):
    question_id = fields.Integer()
    correct = fields.Boolean(allow_none=True)
    answer_key = fields.Raw()
    explanation = fields.String()


class GradingItemSchema(Schema):
    id = fields.Integer()
    attempt_id = fields.Integer()
    question = fields.Nested(QuestionAuthorSchema)
    answer = fields.Raw()
    answered_at = fields.DateTime(format="iso")


class GradeSchema(Schema):
    points = fields.Float(required=True, validate=validate.Range(min=0))
    feedback = fields.String(validate=validate.Length(max=5000))


class GradedAnswerSchema(Schema):
    id = fields.Integer()
    attempt_id = fields.Integer()
    points_awarded = fields.Float()
    correct = fields.Boolean()
    feedback = fields.String(allow_none=True)
    graded_at = fields.DateTime(format="iso")


class ClearanceTypeSchema(Schema):
    id = fields.Integer()
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    organization_id = fields.Integer(allow_none=True)
    validity_days = fields.Integer(allow_none=True)
    verifier = fields.Enum(Verifier, by_value=True)
    evidence = fields.Enum(EvidenceKind, by_value=True)


class ClearanceTypeCreateSchema(Schema):
    slug = fields.String(required=True, validate=[validate.Length(min=1, max=80), _SLUG])
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    organization_id = fields.Integer(
        validate=_ID, metadata={"description": "omit for a platform-wide clearance"}
    )
    validity_days = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=36500))
    verifier = fields.Enum(Verifier, by_value=True)
    evidence = fields.Enum(EvidenceKind, by_value=True)


class AttestationSchema(Schema):
    id = fields.Integer()
    worker_id = fields.Integer()
    clearance_type = fields.Nested(ClearanceTypeSchema)
    status = fields.Method("_status")
    evidence_reference = fields.String(allow_none=True)
    document = fields.Method("_document")
    note = fields.String()
    submitted_at = fields.DateTime(format="iso")
    decided_at = fields.DateTime(format="iso", allow_none=True)
    decided_by_user_id = fields.Integer(allow_none=True)
    decision_reason = fields.String(allow_none=True)
    expires_at = fields.DateTime(format="iso", allow_none=True)
    revoked_at = fields.DateTime(format="iso", allow_none=True)

    def _status(self, attestation):
        from credentials.clearances import effective_status

        return effective_status(attestation).value

    def _document(self, attestation):
        if not attestation.document_key:
            return None
        return {
            "name": attestation.document_name,
            "content_type": attestation.document_content_type,
            "size": attestation.document_size,
            "sha256": attestation.document_sha256,
        }


class AttestationCreateSchema(Schema):
    clearance_type_id = fields.Integer(required=True, validate=_ID)
    reference = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "an external reference, e.g. a background-check case id"},
    )
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class AttestationUploadSchema(AttestationCreateSchema):
    pass


class AttestationFilesSchema(Schema):
    document = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


class AttestationListArgsSchema(PageArgsSchema):
    status = fields.Enum(AttestationStatus, by_value=True)
    worker_id = fields.Integer(validate=_ID)


class VerifySchema(Schema):
    expires_at = fields.AwareDateTime(format="iso", allow_none=True)
    reason = fields.String(validate=validate.Length(max=1000))


class ReasonSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class SkillRequirementSchema(Schema):
    skill = fields.String(required=True, validate=validate.Length(min=1, max=80))
    min_level = fields.Integer(load_default=0, validate=validate.Range(min=0, max=100))


class CrowdRef(fields.Field):
    """A crowd id, or "public"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "public":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**62:
            return value
        raise ValidationError('A crowd id or "public".')


class RequirementsSchema(Schema):
    skills = fields.List(
        fields.Nested(SkillRequirementSchema), load_default=list, validate=validate.Length(max=20)
    )
    clearances = fields.List(
        fields.String(validate=validate.Length(min=1, max=80)),
        load_default=list,
        validate=validate.Length(max=20),
    )
    crowds = fields.List(CrowdRef(), load_default=list, validate=validate.Length(max=100))
    countries = fields.List(
        fields.String(validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166-1 alpha-2.")),
        load_default=list,
        validate=validate.Length(max=250),
    )
    languages = fields.List(
        fields.String(validate=validate.Length(min=2, max=16)),
        load_default=list,
        validate=validate.Length(max=20),
    )

    @validates_schema
    def _unique_skills(self, data, **_kwargs):
        slugs = [s["skill"] for s in data.get("skills", [])]
        if len(set(slugs)) != len(slugs):
            raise ValidationError("Each skill once.", "skills")


class EligibilityCheckSchema(Schema):
    worker_id = fields.Integer(validate=_ID, metadata={"description": "omit to check yourself"})
    requirements = fields.Nested(RequirementsSchema, required=True)


class ReasonOutSchema(Schema):
    code = fields.String()
    requirement = fields.String()
    detail = fields.String()


class EligibilityResultSchema(Schema):
    worker_id = fields.Integer()
    eligible = fields.Boolean()
    reasons = fields.List(fields.Nested(ReasonOutSchema))


class EligibilityQuerySchema(Schema):
    requirements = fields.Nested(RequirementsSchema, required=True)


class SupplySchema(Schema):
    eligible_workers = fields.Integer()
