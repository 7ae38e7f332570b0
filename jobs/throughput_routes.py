"""Throughput reports (clients for their jobs, workers for themselves) and task flags."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from jobs import throughput
from marketplace.auth import require
from marketplace.pagination import PageArgsSchema, next_link, page_schema

throughput_blp = Blueprint(
    "throughput", __name__, url_prefix="/api/v1", description="Throughput and task flags"
)


class TrendArgsSchema(Schema):
    bucket = fields.String(
        load_default="hour",
        validate=validate.OneOf(list(throughput.BUCKETS)),
        metadata={"description": "trend buckets: `hour` or `day` (UTC)"},
    )


class JobThroughputArgsSchema(PageArgsSchema, TrendArgsSchema):
    pass


class FlagArgsSchema(PageArgsSchema):
    kind = fields.String(validate=validate.Length(max=40))


class SpreadSchema(Schema):
    n = fields.Integer()
    median = fields.Float()
    q1 = fields.Float()
    q3 = fields.Float()
    iqr = fields.Float()


class GoldSchema(Schema):
    judged = fields.Integer()
    correct = fields.Integer()
    accuracy = fields.Float(allow_none=True)


class SummarySchema(Schema):
    judgments = fields.Integer()
    active_seconds = fields.Float(
        metadata={"description": "union of lease→submit spans, gaps ≤ 5 min included"}
    )
    judgments_per_hour = fields.Float(allow_none=True, metadata={"description": "per active hour"})
    server_seconds = fields.Nested(
        SpreadSchema, allow_none=True, metadata={"description": "lease → submit"}
    )
    active_seconds_reported = fields.Nested(
        SpreadSchema, allow_none=True, metadata={"description": "as the tool reported it"}
    )
    gold = fields.Nested(GoldSchema)


class WorkerRowSchema(SummarySchema):
    worker = fields.String(metadata={"description": "pseudonymous worker id"})


class JobTotalsSchema(SummarySchema):
    workers = fields.Integer()


class BucketSchema(Schema):
    start = fields.String()
    judgments = fields.Integer()
    workers = fields.Integer()
    median_server_seconds = fields.Float(allow_none=True)


class TaskFlagSchema(Schema):
    task_id = fields.Integer()
    kind = fields.String(metadata={"description": "`slow_task`: possibly ambiguous or hard"})
    evidence = fields.Dict()
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")


class JobThroughputSchema(Schema):
    job_id = fields.Integer()
    as_of = fields.DateTime(format="iso")
    bucket = fields.String()
    totals = fields.Nested(JobTotalsSchema)
    trend = fields.List(fields.Nested(BucketSchema))
    flags = fields.List(fields.Nested(TaskFlagSchema), metadata={"description": "first 100"})
    workers = fields.Nested(page_schema(WorkerRowSchema, "WorkerThroughputPage"))


class JobRowSchema(SummarySchema):
    job_id = fields.Integer()


class MyThroughputSchema(Schema):
    as_of = fields.DateTime(format="iso")
    bucket = fields.String()
    totals = fields.Nested(SummarySchema)
    trend = fields.List(fields.Nested(BucketSchema))
    jobs = fields.List(fields.Nested(JobRowSchema))


TaskFlagPage = page_schema(TaskFlagSchema, "TaskFlagPage")


@throughput_blp.route("/jobs/<int:job_id>/throughput")
class JobThroughput(MethodView):
    @require("jobs:read")
    @throughput_blp.arguments(JobThroughputArgsSchema, location="query")
    @throughput_blp.response(200, JobThroughputSchema)
    def get(self, args, job_id):
        """Judgments per hour, time on task and trends for the job, per worker (paged by
        worker), with the job's flagged tasks"""
        report = throughput.job_throughput(job_id, args)
        return report, next_link(report["workers"]["next_cursor"])


@throughput_blp.route("/jobs/<int:job_id>/flags")
class JobFlags(MethodView):
    @require("jobs:read")
    @throughput_blp.arguments(FlagArgsSchema, location="query")
    @throughput_blp.response(200, TaskFlagPage)
    def get(self, args, job_id):
        """Tasks flagged by throughput analysis (e.g. `slow_task`: possibly ambiguous)"""
        page = throughput.list_flags(job_id, args)
        return page, next_link(page["next_cursor"])


@throughput_blp.route("/workers/me/throughput")
class MyThroughput(MethodView):
    @require("workforce:read")
    @throughput_blp.arguments(TrendArgsSchema, location="query")
    @throughput_blp.response(200, MyThroughputSchema)
    def get(self, args):
        """Your own judgments per hour, time on task and trend, overall and by job"""
        return throughput.my_throughput(args)
