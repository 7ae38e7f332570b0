"""Batch aggregation runs of a job (clients): queue a Dawid–Skene pass, read its outcome."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from jobs import batch
from jobs.batch_models import AggregationStatus
from marketplace.auth import require
from marketplace.pagination import PageArgsSchema, next_link, page_schema

batch_blp = Blueprint(
    "job_aggregations",
    __name__,
    url_prefix="/api/v1",
    description="Batch aggregation (Dawid–Skene) of a job's judgments",
)


class AggregationRunSchema(Schema):
    id = fields.Integer()
    job_id = fields.Integer()
    status = fields.Enum(AggregationStatus, by_value=True)
    method = fields.String()
    trigger = fields.String(metadata={"description": "`job_completed` or `request`"})
    tasks = fields.Integer(allow_none=True, metadata={"description": "tasks in the model"})
    gold_tasks = fields.Integer(allow_none=True)
    workers = fields.Integer(allow_none=True)
    judgments = fields.Integer(allow_none=True)
    labels = fields.Integer(allow_none=True, metadata={"description": "classes in the model"})
    labels_written = fields.Integer(
        allow_none=True, metadata={"description": "consensus labels rewritten (review kept)"}
    )
    labels_changed = fields.Integer(
        allow_none=True, metadata={"description": "of those, labels whose answer changed"}
    )
    iterations = fields.Integer(allow_none=True)
    converged = fields.Boolean(allow_none=True)
    log_likelihood = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")
    started_at = fields.DateTime(format="iso", allow_none=True)
    finished_at = fields.DateTime(format="iso", allow_none=True)


class LabelChangeSchema(Schema):
    task_id = fields.Integer()
    previous_answer = fields.Raw(allow_none=True)
    previous_confidence = fields.Float(allow_none=True)
    previous_method = fields.String(allow_none=True)
    answer = fields.Raw()
    confidence = fields.Float()


class AggregationRunDetailSchema(AggregationRunSchema):
    changes = fields.List(
        fields.Nested(LabelChangeSchema),
        allow_none=True,
        metadata={"description": "each label the pass changed, with the online label before"},
    )


AggregationRunPage = page_schema(AggregationRunSchema, "AggregationRunPage")


@batch_blp.route("/jobs/<int:job_id>/aggregations")
class Aggregations(MethodView):
    @require("jobs:read")
    @batch_blp.arguments(PageArgsSchema, location="query")
    @batch_blp.response(200, AggregationRunPage)
    def get(self, args, job_id):
        """The job's aggregation runs, oldest first"""
        page = batch.list_runs(job_id, args)
        return page, next_link(page["next_cursor"])

    @require("jobs:write")
    @batch_blp.response(202, AggregationRunSchema)
    def post(self, job_id):
        """Queue a Dawid–Skene pass over the job's judgments (single_choice or multi_choice
        jobs); while one is queued or running, that one is returned"""
        return batch.request_run(job_id)


@batch_blp.route("/jobs/<int:job_id>/aggregations/<int:run_id>")
class AggregationDetail(MethodView):
    @require("jobs:read")
    @batch_blp.response(200, AggregationRunDetailSchema)
    def get(self, job_id, run_id):
        """One aggregation run, with the labels it changed"""
        return batch.get_run(job_id, run_id)
