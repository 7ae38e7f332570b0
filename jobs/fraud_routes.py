"""Fraud review: the case queue, decisions, appeals, risk scores and on-demand scans.

- `GET  /api/v1/fraud/cases?status=open&action=…` — the review queue (platform admins: every
  case; organizations: workers in their crowds), cursor-paged, with evidence.
- `POST /api/v1/fraud/cases` `{worker_id, note?}` — flag a worker for review by hand.
- `GET  /api/v1/fraud/cases/{id}` — one case.
- `POST /api/v1/fraud/cases/{id}/decision` `{action: dismiss|restrict|suspend|confirm|ban|lift,
  note?, job_id?}` — needs the admin role in a crowd's organization (or platform admin);
  confirm and ban void the worker's judgments (in `job_id` only, when given).
- `GET  /api/v1/workers/{id}/risk` — a worker's risk score and its evidence.
- `POST /api/v1/fraud/scans` `{job_id?}` — run the periodic scans now (platform admins).
- `GET  /api/v1/workers/me/fraud-standing` — the worker's own standing.
- `POST /api/v1/workers/me/appeals` `{message}` — appeal the action in force (one open at a
  time); `GET /api/v1/fraud/appeals?status=open`; `POST /api/v1/fraud/appeals/{id}/decision`
  `{outcome: upheld|overturned, note?}`.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from jobs import fraud_actions, fraud_scan
from jobs.fraud_schemas import (
    AppealCreateSchema,
    AppealDecisionSchema,
    AppealListArgsSchema,
    AppealSchema,
    CaseCreateSchema,
    CaseListArgsSchema,
    CaseSchema,
    DecisionSchema,
    ScanRequestSchema,
    ScanResultSchema,
    StandingSchema,
    WorkerRiskSchema,
)
from marketplace.auth import principal, require
from marketplace.errors import Forbidden
from marketplace.pagination import next_link, page_schema

fraud_blp = Blueprint(
    "fraud", __name__, url_prefix="/api/v1", description="Fraud review, actions and appeals"
)

CasePage = page_schema(CaseSchema, "FraudCasePage")
AppealPage = page_schema(AppealSchema, "FraudAppealPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


@fraud_blp.route("/fraud/cases")
class Cases(MethodView):
    @require("workforce:read")
    @fraud_blp.arguments(CaseListArgsSchema, location="query")
    @fraud_blp.response(200, CasePage)
    def get(self, args):
        """The fraud review queue: workers, risk scores, evidence and the action in force"""
        return _paged(fraud_actions.list_cases(args))

    @require("workforce:write")
    @fraud_blp.arguments(CaseCreateSchema)
    @fraud_blp.response(201, CaseSchema)
    def post(self, data):
        """Flag a worker for review by hand"""
        return fraud_actions.open_case(data["worker_id"], data["note"])


@fraud_blp.route("/fraud/cases/<int:case_id>")
class CaseDetail(MethodView):
    @require("workforce:read")
    @fraud_blp.response(200, CaseSchema)
    def get(self, case_id):
        """One fraud case with its evidence"""
        return fraud_actions.get_case(case_id)


@fraud_blp.route("/fraud/cases/<int:case_id>/decision")
class CaseDecision(MethodView):
    @require("workforce:write")
    @fraud_blp.arguments(DecisionSchema)
    @fraud_blp.response(200, CaseSchema)
    def post(self, data, case_id):
        """Decide a case: dismiss, restrict, suspend, confirm (suspend + void judgments),
        ban (+ void), or lift the action in force"""
        return fraud_actions.decide_case(case_id, data)


@fraud_blp.route("/workers/<int:worker_id>/risk")
class WorkerRisk(MethodView):
    @require("workforce:read")
    @fraud_blp.response(200, WorkerRiskSchema)
    def get(self, worker_id):
        """A worker's fraud risk score (0..1) and the evidence behind it"""
        return fraud_actions.worker_risk(worker_id)


@fraud_blp.route("/fraud/scans")
class Scans(MethodView):
    @require("admin")
    @fraud_blp.arguments(ScanRequestSchema)
    @fraud_blp.response(200, ScanResultSchema)
    def post(self, data):
        """Run the fraud scans now (one job, or the recently active ones); platform admins"""
        if not principal().is_platform_admin:
            raise Forbidden("Only platform admins can run fraud scans.")
        return fraud_scan.run_scan(data.get("job_id"))


@fraud_blp.route("/workers/me/fraud-standing")
class MyStanding(MethodView):
    @require("workforce:read")
    @fraud_blp.response(200, StandingSchema)
    def get(self):
        """Your standing: any fraud action in force on your account, and your latest appeal"""
        return fraud_actions.my_standing()


@fraud_blp.route("/workers/me/appeals")
class MyAppeals(MethodView):
    @require("workforce:write")
    @fraud_blp.arguments(AppealCreateSchema)
    @fraud_blp.response(201, AppealSchema)
    def post(self, data):
        """Appeal the fraud action in force on your account (one open appeal at a time)"""
        return fraud_actions.appeal(data["message"])


@fraud_blp.route("/fraud/appeals")
class Appeals(MethodView):
    @require("workforce:read")
    @fraud_blp.arguments(AppealListArgsSchema, location="query")
    @fraud_blp.response(200, AppealPage)
    def get(self, args):
        """Appeals of workers you review"""
        return _paged(fraud_actions.list_appeals(args))


@fraud_blp.route("/fraud/appeals/<int:appeal_id>/decision")
class AppealDecision(MethodView):
    @require("workforce:write")
    @fraud_blp.arguments(AppealDecisionSchema)
    @fraud_blp.response(200, AppealSchema)
    def post(self, data, appeal_id):
        """Decide an appeal: upheld, or overturned (the action is lifted, the worker
        reinstated; voided judgments stay voided)"""
        return fraud_actions.decide_appeal(appeal_id, data["outcome"], data["note"])
