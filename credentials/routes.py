"""Skills, assessments, clearances, attestations and eligibility."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from credentials import assessments, clearances, eligibility, evidence, skills
from credentials.schemas import (
    AssessmentCreateSchema,
    AssessmentListArgsSchema,
    AssessmentSchema,
    AssessmentUpdateSchema,
    AttemptSchema,
    AttemptStartSchema,
    AttemptSubmitSchema,
    AttemptSummarySchema,
    AttestationCreateSchema,
    AttestationFilesSchema,
    AttestationListArgsSchema,
    AttestationSchema,
    AttestationUploadSchema,
    ClearanceTypeCreateSchema,
    ClearanceTypeSchema,
    EligibilityCheckSchema,
    EligibilityQuerySchema,
    EligibilityResultSchema,
    GradedAnswerSchema,
    GradeSchema,
    GradingItemSchema,
    PracticeFeedbackSchema,
    QuestionAuthorSchema,
    QuestionBatchResultSchema,
    QuestionBatchSchema,
    ReasonSchema,
    SkillCreateSchema,
    SkillGrantSchema,
    SkillListArgsSchema,
    SkillSchema,
    SubmittedAnswerSchema,
    SupplySchema,
    VerifySchema,
    WorkerSkillListSchema,
)
from marketplace.auth import principal, require
from marketplace.errors import NotFound
from marketplace.http import accepts
from marketplace.idempotency import idempotent
from marketplace.pagination import PageArgsSchema, next_link, page_schema
from workers.access import get_visible_worker, my_worker_profile, my_worker_profile_or_none
from workers.schemas import WorkerProfileSchema

blp = Blueprint(
    "credentials",
    __name__,
    url_prefix="/api/v1",
    description="Skills, qualification tests, clearances, attestations and eligibility",
)

SkillPage = page_schema(SkillSchema, "SkillPage")
AssessmentPage = page_schema(AssessmentSchema, "AssessmentPage")
QuestionPage = page_schema(QuestionAuthorSchema, "QuestionPage")
AttemptPage = page_schema(AttemptSummarySchema, "AttemptPage")
GradingPage = page_schema(GradingItemSchema, "GradingPage")
ClearanceTypePage = page_schema(ClearanceTypeSchema, "ClearanceTypePage")
AttestationPage = page_schema(AttestationSchema, "AttestationPage")
EligibleWorkerPage = page_schema(WorkerProfileSchema, "EligibleWorkerPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


def _with_questions(attempt):
    return assessments.AttemptWithQuestions(attempt, assessments.attempt_questions(attempt))


# --- skills ------------------------------------------------------------------------------


@blp.route("/skills")
class Skills(MethodView):
    @require()
    @blp.arguments(SkillListArgsSchema, location="query")
    @blp.response(200, SkillPage)
    def get(self, args):
        """The skills catalog"""
        return _paged(skills.list_skills(args))

    @require("admin")
    @blp.arguments(SkillCreateSchema)
    @blp.response(201, SkillSchema)
    def post(self, data):
        """Add a skill to the catalog (platform admins)"""
        return skills.create_skill(data)


@blp.route("/workers/me/skills")
class MySkills(MethodView):
    @require("workforce:read")
    @blp.response(200, WorkerSkillListSchema)
    def get(self):
        """Your skill levels, where they came from and when they expire"""
        return {"items": skills.worker_skills(my_worker_profile())}


@blp.route("/workers/<int:worker_id>/skills")
class WorkerSkills(MethodView):
    @require("workforce:read")
    @blp.response(200, WorkerSkillListSchema)
    def get(self, worker_id):
        """A managed worker's skill levels"""
        return {"items": skills.worker_skills(get_visible_worker(worker_id))}

    @require("admin")
    @blp.arguments(SkillGrantSchema)
    @blp.response(200, WorkerSkillListSchema)
    def post(self, data, worker_id):
        """Set a worker's level in a skill directly (platform admins; audited with a reason)"""
        worker = get_visible_worker(worker_id)
        skills.grant_skill_by_admin(
            worker, data["skill_id"], data["level"], data.get("expires_at"), data["reason"]
        )
        return {"items": skills.worker_skills(worker)}


# --- assessments -------------------------------------------------------------------------


@blp.route("/assessments")
class Assessments(MethodView):
    @require("workforce:read")
    @blp.arguments(AssessmentListArgsSchema, location="query")
    @blp.response(200, AssessmentPage)
    def get(self, args):
        """Open assessments (qualification tests)"""
        return _paged(assessments.list_assessments(args))


@blp.route("/organizations/<int:organization_id>/assessments")
class OrgAssessments(MethodView):
    @require("workforce:write")
    @idempotent
    @blp.arguments(AssessmentCreateSchema)
    @blp.response(201, AssessmentSchema)
    def post(self, data, organization_id):
        """Publish an assessment for a skill (organization admins)"""
        return assessments.create_assessment(organization_id, data)


@blp.route("/assessments/<int:assessment_id>")
class AssessmentDetail(MethodView):
    @require("workforce:read")
    @blp.response(200, AssessmentSchema)
    def get(self, assessment_id):
        """An assessment (its rules; never its questions or keys)"""
        return assessments.get_assessment(assessment_id)

    @require("workforce:write")
    @blp.arguments(AssessmentUpdateSchema)
    @blp.response(200, AssessmentSchema)
    def patch(self, changes, assessment_id):
        """Change an assessment's rules (its owners)"""
        return assessments.update_assessment(assessment_id, changes)


@blp.route("/assessments/<int:assessment_id>/questions")
class AssessmentQuestions(MethodView):
    @require("workforce:write")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, QuestionPage)
    def get(self, args, assessment_id):
        """The question bank with answer keys (the assessment's owners only)"""
        return _paged(assessments.list_questions(assessment_id, args))

    @require("workforce:write")
    @blp.arguments(QuestionBatchSchema)
    @blp.response(201, QuestionBatchResultSchema)
    def post(self, data, assessment_id):
        """Add questions with hidden answer keys (all or nothing)"""
        return {"questions": assessments.add_questions(assessment_id, data["questions"])}


@blp.route("/assessments/<int:assessment_id>/attempts")
class Attempts(MethodView):
    @require("workforce:write")
    @blp.arguments(AttemptStartSchema)
    @blp.response(201, AttemptSchema)
    def post(self, data, assessment_id):
        """Start an attempt (graded, or practice); the timer starts now"""
        return _with_questions(assessments.start_attempt(assessment_id, data["mode"]))


@blp.route("/workers/me/attempts")
class MyAttempts(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, AttemptPage)
    def get(self, args):
        """Your assessment attempts"""
        return _paged(assessments.my_attempts(args))


@blp.route("/workers/<int:worker_id>/attempts")
class WorkerAttempts(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, AttemptPage)
    def get(self, args, worker_id):
        """A managed worker's assessment attempts: outcomes and scores (vendors, admins)"""
        return _paged(assessments.worker_attempts(worker_id, args))


@blp.route("/attempts/<int:attempt_id>")
class AttemptDetail(MethodView):
    @require("workforce:read")
    @blp.response(200, AttemptSchema)
    def get(self, attempt_id):
        """One of your attempts, with its questions (never the keys)"""
        return _with_questions(assessments.my_attempt(attempt_id))


@blp.route("/attempts/<int:attempt_id>/submit")
class AttemptSubmit(MethodView):
    @require("workforce:write")
    @blp.arguments(AttemptSubmitSchema)
    @blp.response(200, AttemptSchema)
    def post(self, data, attempt_id):
        """Hand in a graded attempt before its deadline; scored at once unless it has
        free-text answers, which wait for a reviewer"""
        return _with_questions(assessments.submit_attempt(attempt_id, data["answers"]))


@blp.route("/attempts/<int:attempt_id>/answers")
class PracticeAnswer(MethodView):
    @require("workforce:write")
    @blp.arguments(SubmittedAnswerSchema)
    @blp.response(200, PracticeFeedbackSchema)
    def post(self, data, attempt_id):
        """Answer one question of a practice attempt and see the right answer and why"""
        return assessments.practice_answer(attempt_id, data["question_id"], data["answer"])


@blp.route("/grading")
class GradingQueue(MethodView):
    @require("workforce:write")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, GradingPage)
    def get(self, args):
        """Free-text answers waiting for a grade in your organizations' assessments"""
        return _paged(assessments.grading_queue(args))


@blp.route("/grading/<int:answer_id>")
class Grade(MethodView):
    @require("workforce:write")
    @blp.arguments(GradeSchema)
    @blp.response(200, GradedAnswerSchema)
    def post(self, data, answer_id):
        """Grade one free-text answer"""
        return assessments.grade_answer(answer_id, data["points"], data.get("feedback"))


# --- clearances and attestations ---------------------------------------------------------


@blp.route("/clearance-types")
class ClearanceTypes(MethodView):
    @require()
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, ClearanceTypePage)
    def get(self, args):
        """Clearance types: the platform's and clients' own"""
        return _paged(clearances.list_clearance_types(args))

    @require("workforce:write")
    @blp.arguments(ClearanceTypeCreateSchema)
    @blp.response(201, ClearanceTypeSchema)
    def post(self, data):
        """Define a clearance (platform admins; or a client's own with organization_id)"""
        return clearances.create_clearance_type(data)


@blp.route("/attestations")
class Attestations(MethodView):
    @require("workforce:read")
    @blp.arguments(AttestationListArgsSchema, location="query")
    @blp.response(200, AttestationPage)
    def get(self, args):
        """Attestations you may see: yours (workers), your crowds' (vendors), all (admins)"""
        return _paged(clearances.list_attestations(args))

    @require("workforce:write")
    @blp.arguments(AttestationCreateSchema)
    @blp.response(201, AttestationSchema)
    def post(self, data):
        """Claim a clearance with an external reference (e.g. a background-check case id)"""
        return clearances.submit_attestation(
            data["clearance_type_id"], reference=data.get("reference"), note=data["note"]
        )


@blp.route("/attestations/documents")
class AttestationUpload(MethodView):
    @require("workforce:write")
    @accepts("multipart/form-data", max_bytes=evidence.MAX_DOCUMENT_BYTES + 64 * 1024)
    @blp.arguments(AttestationUploadSchema, location="form")
    @blp.arguments(AttestationFilesSchema, location="files")
    @blp.response(201, AttestationSchema)
    def post(self, data, files):
        """Claim a clearance with a document (PDF, PNG or JPEG, at most 10 MiB)"""
        document = files["document"]
        return clearances.submit_attestation(
            data["clearance_type_id"],
            reference=data.get("reference"),
            document=document.stream,
            document_name=document.filename,
            note=data["note"],
        )


@blp.route("/attestations/<int:attestation_id>")
class AttestationDetail(MethodView):
    @require("workforce:read")
    @blp.response(200, AttestationSchema)
    def get(self, attestation_id):
        """One attestation"""
        return clearances.get_attestation(attestation_id)


@blp.route("/attestations/<int:attestation_id>/document")
class AttestationDocument(MethodView):
    @require("workforce:read")
    def get(self, attestation_id):
        """Download the evidence document (the worker and those who may verify it)"""
        attestation = clearances.get_attestation(attestation_id)
        if not attestation.document_key:
            raise NotFound("This attestation has no document.")
        data = evidence.store().get(attestation.document_key)
        return Response(
            data,
            mimetype=attestation.document_content_type,
            headers={"Content-Disposition": "attachment"},
        )


@blp.route("/attestations/<int:attestation_id>/verify")
class AttestationVerify(MethodView):
    @require("workforce:write")
    @blp.arguments(VerifySchema)
    @blp.response(200, AttestationSchema)
    def post(self, data, attestation_id):
        """Accept the evidence; the clearance holds until expires_at (or its validity)"""
        return clearances.verify_attestation(
            attestation_id, data.get("expires_at"), data.get("reason")
        )


@blp.route("/attestations/<int:attestation_id>/reject")
class AttestationReject(MethodView):
    @require("workforce:write")
    @blp.arguments(ReasonSchema)
    @blp.response(200, AttestationSchema)
    def post(self, data, attestation_id):
        """Reject the evidence, with a reason"""
        return clearances.reject_attestation(attestation_id, data["reason"])


@blp.route("/attestations/<int:attestation_id>/revoke")
class AttestationRevoke(MethodView):
    @require("workforce:write")
    @blp.arguments(ReasonSchema)
    @blp.response(200, AttestationSchema)
    def post(self, data, attestation_id):
        """Revoke a verified clearance; the worker loses eligibility at once"""
        return clearances.revoke_attestation(attestation_id, data["reason"])


# --- eligibility -------------------------------------------------------------------------


@blp.route("/eligibility/check")
class EligibilityCheck(MethodView):
    @require("workforce:read")
    @blp.arguments(EligibilityCheckSchema)
    @blp.response(200, EligibilityResultSchema)
    def post(self, data):
        """Whether a worker (you, if no worker_id) meets requirements, and every reason not"""
        if "worker_id" in data:
            worker = get_visible_worker(data["worker_id"])
        else:
            worker = my_worker_profile()
        requirements = eligibility.Requirements.from_dict(data["requirements"])
        result = eligibility.check(worker, requirements)
        return {"worker_id": worker.id, "eligible": result.eligible, "reasons": result.reasons}


@blp.route("/eligibility/workers")
class EligibleWorkers(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.arguments(EligibilityQuerySchema)
    @blp.response(200, EligibleWorkerPage)
    def post(self, args, data):
        """Workers you manage who meet the requirements (every worker, for platform admins)"""
        return _paged(eligibility.list_visible_eligible(data["requirements"], args))


@blp.route("/eligibility/supply")
class EligibleSupply(MethodView):
    @require()
    @blp.arguments(EligibilityQuerySchema)
    @blp.response(200, SupplySchema)
    def post(self, data):
        """How many workers meet the requirements (a count only, for planning a job)"""
        if my_worker_profile_or_none() is not None and not principal().is_platform_admin:
            raise NotFound("not found")
        return {"eligible_workers": eligibility.count_eligible(data["requirements"])}
