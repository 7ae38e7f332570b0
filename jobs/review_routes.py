"""The review queue of a job, for its organisation's admins and owners."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from jobs import review
from jobs.models import ReviewStatus
from marketplace.auth import require
from marketplace.pagination import PageArgsSchema, next_link, page_schema

review_blp = Blueprint(
    "reviews", __name__, url_prefix="/api/v1", description="Reviewing closed tasks"
)


class ReviewListArgsSchema(PageArgsSchema):
    status = fields.Enum(ReviewStatus, by_value=True)


class ReviewDecisionSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(sorted(review.ACTIONS)))
    answer = fields.Raw(allow_none=False, metadata={"description": "required to correct"})
    extra = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=2),
        metadata={"description": "send_back: how many more judgments (default 1)"},
    )

    @validates_schema
    def _answer_with_correct(self, data, **_kwargs):
        if data.get("action") == "correct" and "answer" not in data:
            raise ValidationError("An answer is required to correct.", "answer")
        if data.get("action") != "correct" and "answer" in data:
            raise ValidationError("Only a correction takes an answer.", "answer")
        if data.get("action") != "send_back" and "extra" in data:
            raise ValidationError("Only send_back takes extra.", "extra")


class ReviewTaskSchema(Schema):
    external_id = fields.String(allow_none=True)
    payload = fields.Dict()
    status = fields.String()
    final_answer = fields.Raw(allow_none=True)
    confidence = fields.Float(allow_none=True)
    method = fields.String(allow_none=True)
    judgments = fields.List(fields.Raw())


class ReviewSchema(Schema):
    id = fields.Integer()
    job_id = fields.Integer()
    task_id = fields.Integer()
    reason = fields.String()
    status = fields.String()
    answer = fields.Raw(allow_none=True)
    created_at = fields.DateTime(format="iso")
    decided_at = fields.DateTime(format="iso", allow_none=True)
    task = fields.Nested(ReviewTaskSchema)


ReviewPage = page_schema(ReviewSchema, "ReviewPage")


@review_blp.route("/jobs/<int:job_id>/reviews")
class JobReviews(MethodView):
    @require("jobs:read")
    @review_blp.arguments(ReviewListArgsSchema, location="query")
    @review_blp.response(200, ReviewPage)
    def get(self, args, job_id):
        """The job's review queue (admins and owners of its organisation)"""
        page = review.list_reviews(job_id, args)
        page["items"] = [review.review_view(item) for item in page["items"]]
        return page, next_link(page["next_cursor"])


@review_blp.route("/reviews/<int:review_id>/decision")
class ReviewDecision(MethodView):
    @require("jobs:write")
    @review_blp.arguments(ReviewDecisionSchema)
    @review_blp.response(200, ReviewSchema)
    def post(self, data, review_id):
        """Accept the label, correct it, or send the task back for more judgments"""
        return review.review_view(review.decide(review_id, data))
