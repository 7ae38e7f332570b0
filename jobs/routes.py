"""Jobs for clients, and the task API for labeling tools (see ../shared/API.md)."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from billing.schemas import (
    BonusSchema,
    EarningSchema,
    FundSchema,
    PaymentSchema,
    RefundOutSchema,
    RefundSchema,
    SpendSchema,
)
from jobs import funding, leasing, services, worker_stats
from jobs.models import Job, Task
from jobs.schemas import (
    AssignmentListArgsSchema,
    AssignmentSchema,
    AssignmentSummarySchema,
    HeartbeatSchema,
    JobCreateSchema,
    JobListArgsSchema,
    JobSchema,
    JobUpdateSchema,
    JobWorkerSchema,
    LeaseRequestSchema,
    ReleaseSchema,
    SubmitSchema,
    TaskListArgsSchema,
    TaskSchema,
)
from marketplace.auth import require
from marketplace.database import db, retry_on_conflict
from marketplace.idempotency import idempotent
from marketplace.pagination import PageArgsSchema, next_link, page_schema

blp = Blueprint("jobs", __name__, url_prefix="/api/v1", description="Jobs and tasks (clients)")
task_api = Blueprint(
    "assignments",
    __name__,
    url_prefix="/api/v1",
    description="The task API for labeling tools, acting for a worker",
)

JobPage = page_schema(JobSchema, "JobPage")
TaskPage = page_schema(TaskSchema, "TaskPage")
AssignmentPage = page_schema(AssignmentSummarySchema, "AssignmentPage")
JobWorkerPage = page_schema(JobWorkerSchema, "JobWorkerPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


class AssignmentView:
    """An assignment with its task and job, for the worker-facing schema."""

    def __init__(self, assignment):
        self._assignment = assignment
        self.task = db.session.get(Task, assignment.task_id)
        self.job = db.session.get(Job, assignment.job_id)

    def __getattr__(self, name):
        return getattr(self._assignment, name)


# --- jobs --------------------------------------------------------------------------------


@blp.route("/jobs")
class Jobs(MethodView):
    @require("jobs:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobPage)
    def get(self, args):
        """Your organizations' jobs"""
        return _paged(services.list_jobs(args))

    @require("jobs:write")
    @idempotent
    @blp.arguments(JobCreateSchema)
    @blp.response(201, JobSchema)
    def post(self, data):
        """Post a job (it starts as a draft)"""
        return services.create_job(data)


@blp.route("/jobs/<int:job_id>")
class JobDetail(MethodView):
    @require("jobs:read")
    @blp.response(200, JobSchema)
    def get(self, job_id):
        """One of your jobs"""
        return services.get_job(job_id)

    @require("jobs:write")
    @blp.arguments(JobUpdateSchema)
    @blp.response(200, JobSchema)
    def patch(self, changes, job_id):
        """Change a job: anything while a draft; then only title, instructions, deadline,
        priority, lease_seconds, gold_rate, review_rate and redundancy max/target"""
        return services.update_job(job_id, changes)


def _lifecycle(name, doc, action):
    class Lifecycle(MethodView):
        @require("jobs:write")
        @blp.response(200, JobSchema)
        @retry_on_conflict
        def post(self, job_id):
            return action(job_id)

    Lifecycle.post.__doc__ = doc
    Lifecycle.__name__ = name
    return Lifecycle


blp.route("/jobs/<int:job_id>/activate")(
    _lifecycle(
        "JobActivate", "Start handing out tasks (draft or paused jobs)", services.activate_job
    )
)
blp.route("/jobs/<int:job_id>/pause")(
    _lifecycle("JobPause", "Stop handing out tasks; live leases may finish", services.pause_job)
)
blp.route("/jobs/<int:job_id>/cancel")(
    _lifecycle(
        "JobCancel", "Cancel the job: open tasks cancelled, leases given back", services.cancel_job
    )
)


@blp.route("/jobs/<int:job_id>/workers")
class JobWorkers(MethodView):
    @require("jobs:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, JobWorkerPage)
    def get(self, args, job_id):
        """The workers on this job, as pseudonyms, with their figures on this job only"""
        return _paged(worker_stats.job_worker_stats(job_id, args))


@blp.route("/jobs/<int:job_id>/tasks/<int:task_id>")
class TaskDetail(MethodView):
    @require("jobs:read")
    @blp.response(200, TaskSchema)
    def get(self, job_id, task_id):
        """One task, with its gold answer and result"""
        return services.get_task(job_id, task_id)


@blp.route("/jobs/<int:job_id>/tasks/<int:task_id>/cancel")
class TaskCancel(MethodView):
    @require("jobs:write")
    @blp.response(200, TaskSchema)
    def post(self, job_id, task_id):
        """Withdraw one task"""
        return services.cancel_task(job_id, task_id)


@blp.route("/jobs/<int:job_id>/tasks")
class Tasks(MethodView):
    @require("jobs:read")
    @blp.arguments(TaskListArgsSchema, location="query")
    @blp.response(200, TaskPage)
    def get(self, args, job_id):
        """The job's tasks"""
        return _paged(services.list_tasks(job_id, args))


# --- the task API ------------------------------------------------------------------------


@task_api.route("/assignments")
class Assignments(MethodView):
    @require("tasks")
    @task_api.arguments(AssignmentListArgsSchema, location="query")
    @task_api.response(200, AssignmentPage)
    def get(self, args):
        """Your assignments, newest last"""
        return _paged(leasing.my_assignments(args))

    @require("tasks")
    @idempotent
    @task_api.arguments(LeaseRequestSchema)
    @task_api.response(201, AssignmentSchema)
    @task_api.alt_response(204, description="Nothing to do right now")
    @retry_on_conflict
    def post(self, data):
        """Lease the next task you may do (optionally within one job)"""
        assignment = leasing.lease_next_task(
            data.get("job_id"), request.headers.get("X-Client-Fingerprint")
        )
        if assignment is None:
            return "", 204
        return AssignmentView(assignment)


@task_api.route("/assignments/<int:assignment_id>")
class AssignmentDetail(MethodView):
    @require("tasks")
    @task_api.response(200, AssignmentSchema)
    def get(self, assignment_id):
        """One of your assignments"""
        return AssignmentView(leasing.my_assignment(assignment_id))


@task_api.route("/assignments/<int:assignment_id>/heartbeat")
class Heartbeat(MethodView):
    @require("tasks")
    @task_api.response(200, HeartbeatSchema)
    @retry_on_conflict
    def post(self, assignment_id):
        """Extend the lease; 409 if it already expired"""
        return leasing.heartbeat(assignment_id)


@task_api.route("/assignments/<int:assignment_id>/release")
class Release(MethodView):
    @require("tasks")
    @task_api.arguments(ReleaseSchema)
    @task_api.response(200, AssignmentSchema)
    @retry_on_conflict
    def post(self, data, assignment_id):
        """Give the task back (skip), with an optional reason"""
        return AssignmentView(leasing.release(assignment_id, data.get("reason")))


@task_api.route("/assignments/<int:assignment_id>/submit")
class Submit(MethodView):
    @require("tasks")
    @idempotent
    @task_api.arguments(SubmitSchema)
    @task_api.response(200, AssignmentSchema)
    @retry_on_conflict
    def post(self, data, assignment_id):
        """Submit your answer (checked against the job's answer_spec); retries are safe"""
        return AssignmentView(
            leasing.submit(assignment_id, data["answer"], data.get("active_seconds"))
        )


# --- money -------------------------------------------------------------------------------


@blp.route("/jobs/<int:job_id>/fund")
class JobFund(MethodView):
    @require("billing:write")
    @idempotent
    @blp.arguments(FundSchema)
    @blp.response(201, PaymentSchema)
    def post(self, data, job_id):
        """Add budget to the job (a Stripe PaymentIntent when configured; the offline gateway
        confirms at once). Needs an Idempotency-Key."""
        return funding.fund_job(job_id, data["amount"])


@blp.route("/jobs/<int:job_id>/refund")
class JobRefund(MethodView):
    @require("billing:write")
    @idempotent
    @blp.arguments(RefundSchema)
    @blp.response(201, RefundOutSchema)
    def post(self, data, job_id):
        """Return unspent budget to the card it came from. Needs an Idempotency-Key."""
        return funding.refund_job(job_id, data["amount"])


@blp.route("/jobs/<int:job_id>/spend")
class JobSpend(MethodView):
    @require("billing:read")
    @blp.response(200, SpendSchema)
    def get(self, job_id):
        """Where the job's budget went: funded, refunded, free, held, settled, bonuses"""
        return funding.job_spend(job_id)


@blp.route("/jobs/<int:job_id>/bonuses")
class JobBonus(MethodView):
    @require("billing:write")
    @idempotent
    @blp.arguments(BonusSchema)
    @blp.response(201, EarningSchema)
    def post(self, data, job_id):
        """Pay a bonus, with a reason, to a worker (by pseudonym) who judged this job's tasks.
        Needs an Idempotency-Key."""
        return funding.pay_bonus(job_id, data)
