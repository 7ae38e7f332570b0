"""Measured worker quality: per job for its client, and a worker's own."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from jobs import quality_reports
from marketplace.auth import require
from marketplace.pagination import PageArgsSchema, next_link, page_schema

quality_blp = Blueprint(
    "quality", __name__, url_prefix="/api/v1", description="Measured worker quality"
)


class WorkerQualitySchema(Schema):
    worker = fields.String(metadata={"description": "pseudonymous worker id"})
    accuracy = fields.Float()
    interval = fields.List(fields.Float())
    gold_correct = fields.Integer()
    gold_wrong = fields.Integer()
    agreed = fields.Integer()
    disagreed = fields.Integer()
    agreement_rate = fields.Float(allow_none=True)
    confusion = fields.Dict(metadata={"description": "{true_label: {given_label: n}}"})
    removed = fields.Boolean()


class MyJobQualitySchema(Schema):
    job_id = fields.Integer()
    title = fields.String()
    accuracy = fields.Float()
    interval = fields.List(fields.Float())
    gold_answers = fields.Integer()
    agreed = fields.Integer()
    disagreed = fields.Integer()
    min_accuracy = fields.Float(allow_none=True)
    removed = fields.Boolean()


class MySkillQualitySchema(Schema):
    skill = fields.String()
    jobs = fields.Integer()
    accuracy = fields.Float()
    interval = fields.List(fields.Float())
    judgments_measured = fields.Integer()


class MyQualitySchema(Schema):
    jobs = fields.List(fields.Nested(MyJobQualitySchema))
    skills = fields.List(fields.Nested(MySkillQualitySchema))


WorkerQualityPage = page_schema(WorkerQualitySchema, "WorkerQualityPage")


@quality_blp.route("/jobs/<int:job_id>/workers/quality")
class JobWorkersQuality(MethodView):
    @require("jobs:read")
    @quality_blp.arguments(PageArgsSchema, location="query")
    @quality_blp.response(200, WorkerQualityPage)
    def get(self, args, job_id):
        """Each worker's measured accuracy on this job (pseudonyms), with confusion matrix"""
        page = quality_reports.job_workers_quality(job_id, args)
        return page, next_link(page["next_cursor"])


@quality_blp.route("/workers/me/quality")
class MyQuality(MethodView):
    @require("tasks")
    @quality_blp.response(200, MyQualitySchema)
    def get(self):
        """Your measured accuracy per job and per skill"""
        return quality_reports.my_quality()
