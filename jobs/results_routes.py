"""Job progress, streamed results and client webhooks.

The schemas of these routes live here rather than in jobs/schemas.py: they describe only
these responses.
"""

from __future__ import annotations

from flask import Response, request, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from billing.schemas import MoneyOutSchema
from jobs import events, results, webhooks
from jobs.models import AssignmentStatus, DeliveryStatus, TaskStatus
from jobs.schemas import WebhookCreateSchema
from marketplace.auth import require
from marketplace.errors import CrowdlineError
from marketplace.idempotency import idempotent
from marketplace.pagination import PageArgsSchema, next_link, page_schema

results_blp = Blueprint(
    "job_results", __name__, url_prefix="/api/v1", description="Progress, results and webhooks"
)


class NotAcceptable(CrowdlineError):
    status, slug, title = 406, "not-acceptable", "Not acceptable"


# --- schemas -----------------------------------------------------------------------------


def _counts(names, name):
    return Schema.from_dict({n: fields.Integer() for n in names}, name=name)


TaskCountsSchema = _counts([s.value for s in TaskStatus] + ["total"], "TaskCounts")


class EtaSchema(Schema):
    seconds = fields.Integer(metadata={"description": "seconds until the last judgment"})
    at = fields.String(metadata={"description": "when, at the recent pace (RFC 3339)"})


class ProgressSchema(Schema):
    job_id = fields.Integer()
    status = fields.String()
    as_of = fields.String()
    tasks = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(TaskCountsSchema),
        metadata={"description": "`real` and `gold` tasks by status"},
    )
    judgments = fields.Nested(
        _counts([s.value for s in AssignmentStatus], "AssignmentCounts"),
        metadata={"description": "the job's assignments by status"},
    )
    live_leases = fields.Integer()
    spend = fields.Nested(MoneyOutSchema, metadata={"description": "accepted judgments × price"})
    throughput = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "judgments on real tasks in the `last_hour` and `last_24h`"},
    )
    remaining_judgments = fields.Integer(
        metadata={"description": "judgments open real tasks still need"}
    )
    eta = fields.Nested(
        EtaSchema,
        allow_none=True,
        metadata={"description": "null while nothing has been judged in the last 24 h"},
    )


class ResultsArgsSchema(Schema):
    status = fields.Enum(TaskStatus, by_value=True, metadata={"description": "task status"})
    since = fields.AwareDateTime(
        format="iso", metadata={"description": "completed at or after this instant"}
    )
    until = fields.AwareDateTime(format="iso", metadata={"description": "completed before this"})
    include_gold = fields.Boolean(load_default=False)
    detail = fields.Boolean(
        load_default=False, metadata={"description": "add each task's judgments"}
    )


class JudgmentDetailSchema(Schema):
    worker = fields.String(metadata={"description": "pseudonymous worker id"})
    answer = fields.Raw()
    submitted_at = fields.String()
    server_seconds = fields.Float(allow_none=True)
    active_seconds = fields.Float(allow_none=True)
    status = fields.String()


class ResultLineSchema(Schema):
    task_id = fields.Integer()
    external_id = fields.String(allow_none=True)
    is_gold = fields.Boolean()
    status = fields.String()
    answer = fields.Raw(allow_none=True, metadata={"description": "the final answer"})
    confidence = fields.Float(allow_none=True)
    judgments = fields.Integer()
    method = fields.String(allow_none=True)
    completed_at = fields.String(allow_none=True)
    detail = fields.List(
        fields.Nested(JudgmentDetailSchema), metadata={"description": "with ?detail=true"}
    )


class WebhookSchema(Schema):
    id = fields.Integer()
    organization_id = fields.Integer()
    url = fields.String()
    events = fields.List(fields.String())
    active = fields.Boolean()
    created_at = fields.DateTime(format="iso")


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(
        metadata={"description": "signing secret: shown only in this response; keep it"}
    )


class DeliverySchema(Schema):
    id = fields.Integer()
    event_id = fields.String()
    event_type = fields.String()
    status = fields.Enum(DeliveryStatus, by_value=True)
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(format="iso", allow_none=True)
    last_attempt_at = fields.DateTime(format="iso", allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")
    payload = fields.Dict()


class DeliveryListArgsSchema(PageArgsSchema):
    status = fields.Enum(DeliveryStatus, by_value=True)
    event_type = fields.String(validate=validate.OneOf(events.EVENT_TYPES))


WebhookPage = page_schema(WebhookSchema, "WebhookPage")
DeliveryPage = page_schema(DeliverySchema, "DeliveryPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


# --- progress and results ----------------------------------------------------------------


@results_blp.route("/jobs/<int:job_id>/progress")
class JobProgress(MethodView):
    @require("jobs:read")
    @results_blp.response(200, ProgressSchema)
    def get(self, job_id):
        """Tasks by state, judgments, live leases, spend, throughput and ETA"""
        return results.job_progress(job_id)


RESULTS_DOC = """One line per task: `{task_id, external_id, is_gold, status, answer, confidence,
judgments, method, completed_at}`, plus `detail` (each judgment, workers named by pseudonym)
with `?detail=true`. Streamed in task order.

`Accept: application/x-ndjson` (the default) gives JSON Lines; `Accept: text/csv` gives CSV
with a header row, `answer` and `detail` as JSON text. Anything that accepts neither is 406.
`since` and `until` filter on `completed_at` (`since` ≤ completed_at < `until`); gold tasks
are left out unless `include_gold=true`."""


RESULTS_FORMATS = "one result a line: JSON Lines, or CSV with a header row, as negotiated"


def _negotiate() -> str:
    accept = request.accept_mimetypes
    if not accept:
        return results.NDJSON
    best = accept.best_match([results.NDJSON, results.CSV])
    if best is None:
        raise NotAcceptable(
            f"Results come as {results.NDJSON} or {results.CSV}; the Accept header allows neither.",
            available=[results.NDJSON, results.CSV],
        )
    return best


@results_blp.route("/jobs/<int:job_id>/results")
class JobResults(MethodView):
    @require("jobs:read")
    @results_blp.arguments(ResultsArgsSchema, location="query")
    @results_blp.response(
        200,
        ResultLineSchema,
        content_type=results.NDJSON,
        description=RESULTS_FORMATS,
    )
    @results_blp.alt_response(
        200,
        schema={"type": "string"},
        content_type=results.CSV,
        description=RESULTS_FORMATS,
        example="task_id,external_id,is_gold,status,answer,confidence,judgments,method,"
        'completed_at\n7,item-7,false,completed,"""cat""",1.0,3,majority,'
        "2026-01-05T09:00:00+00:00\n",
        success=True,
    )
    @results_blp.alt_response(406, description="The Accept header allows neither format")
    @results_blp.doc(description=RESULTS_DOC)
    def get(self, args, job_id):
        """The job's results, streamed as JSON Lines or CSV"""
        media_type = _negotiate()
        chunks = results.export_results(job_id, args, media_type)
        response = Response(stream_with_context(chunks), mimetype=media_type)
        if media_type == results.CSV:
            response.headers["Content-Disposition"] = (
                f'attachment; filename="job-{job_id}-results.csv"'
            )
        return response


# --- webhooks ----------------------------------------------------------------------------


@results_blp.route("/organizations/<int:organization_id>/webhooks")
class Webhooks(MethodView):
    @require("jobs:read")
    @results_blp.arguments(PageArgsSchema, location="query")
    @results_blp.response(200, WebhookPage)
    def get(self, args, organization_id):
        """The organization's webhook endpoints (admins)"""
        return _paged(webhooks.list_endpoints(organization_id, args))

    @require("jobs:write")
    @idempotent
    @results_blp.arguments(WebhookCreateSchema)
    @results_blp.response(201, WebhookCreatedSchema)
    def post(self, data, organization_id):
        """Register a webhook endpoint for job.completed, task.completed and/or job.budget_low
        (admins). The response carries the signing secret, once. Each request is signed:
        `Crowdline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`; the
        `Crowdline-Event-Id` header (the body's `id`) stays the same across retries."""
        return webhooks.create_endpoint(organization_id, data)


@results_blp.route("/organizations/<int:organization_id>/webhooks/<int:webhook_id>")
class WebhookDetail(MethodView):
    @require("jobs:write")
    @results_blp.response(204)
    def delete(self, organization_id, webhook_id):
        """Delete a webhook endpoint; deliveries it has not received are abandoned (admins)"""
        webhooks.delete_endpoint(organization_id, webhook_id)


@results_blp.route("/organizations/<int:organization_id>/webhooks/<int:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @require("jobs:read")
    @results_blp.arguments(DeliveryListArgsSchema, location="query")
    @results_blp.response(200, DeliveryPage)
    def get(self, args, organization_id, webhook_id):
        """The endpoint's delivery log: attempts, last status code and error, next attempt"""
        return _paged(webhooks.list_deliveries(organization_id, webhook_id, args))
