"""Payouts: a worker's payout account, payouts and statement; the admins' payout desk."""

from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from billing import payout_accounts, payouts, statements
from billing.payout_schemas import (
    PayoutAccountCreateSchema,
    PayoutAccountSchema,
    PayoutAdminListArgsSchema,
    PayoutAdminSchema,
    PayoutListArgsSchema,
    PayoutRunQueuedSchema,
    PayoutSchema,
    StatementArgsSchema,
    StatementSchema,
)
from marketplace.auth import principal, require
from marketplace.errors import NotFound
from marketplace.pagination import next_link, page_schema
from workers.access import my_worker_profile

blp = Blueprint(
    "payouts", __name__, url_prefix="/api/v1", description="Payout accounts, payouts, statements"
)

PayoutPage = page_schema(PayoutSchema, "PayoutPage")
PayoutAdminPage = page_schema(PayoutAdminSchema, "PayoutAdminPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


def _platform_admin_only() -> None:
    if not principal().is_platform_admin:
        raise NotFound("not found")


@blp.route("/workers/me/payout-account")
class MyPayoutAccount(MethodView):
    @require("billing:read")
    @blp.response(200, PayoutAccountSchema)
    def get(self):
        """Your payout account and whether it can receive payouts yet"""
        return payout_accounts.get_payout_account(my_worker_profile().id)

    @require("billing:write")
    @blp.arguments(PayoutAccountCreateSchema)
    @blp.response(201, PayoutAccountSchema)
    @blp.alt_response(200, schema=PayoutAccountSchema, description="Already connected")
    def post(self, data):
        """Connect a payout account (workers): returns an onboarding link to finish at the
        processor; calling again returns a fresh link for the same account"""
        worker = my_worker_profile()
        here = url_for("payouts.MyPayoutAccount", _external=True)
        account, created = payout_accounts.open_payout_account(
            worker.id,
            worker.user.email,
            data["country"],
            return_url=data.get("return_url") or here,
            refresh_url=data.get("refresh_url") or here,
        )
        return account, 201 if created else 200


@blp.route("/workers/me/payouts")
class MyPayouts(MethodView):
    @require("billing:read")
    @blp.arguments(PayoutListArgsSchema, location="query")
    @blp.response(200, PayoutPage)
    def get(self, args):
        """Your payouts, oldest first"""
        return _paged(payouts.list_payouts(args, worker_id=my_worker_profile().id))


@blp.route("/workers/me/statement")
class MyStatement(MethodView):
    @require("billing:read")
    @blp.arguments(StatementArgsSchema, location="query")
    @blp.response(200, StatementSchema)
    def get(self, args):
        """Your statement for a period: opening and closing balances, earnings, bonuses,
        reversals and payouts (`from` inclusive, `to` exclusive; default the last 30 days)"""
        return statements.worker_statement(
            my_worker_profile().id, args.get("start"), args.get("end"), args["currency"]
        )


@blp.route("/admin/payouts")
class AdminPayouts(MethodView):
    @require()
    @blp.arguments(PayoutAdminListArgsSchema, location="query")
    @blp.response(200, PayoutAdminPage)
    def get(self, args):
        """Every payout, filtered by status or worker — `?status=failed` is the work queue
        (platform admins)"""
        _platform_admin_only()
        return _paged(payouts.list_payouts(args))


@blp.route("/admin/payouts/run")
class AdminPayoutRun(MethodView):
    @require()
    @blp.response(202, PayoutRunQueuedSchema)
    def post(self):
        """Start a payout run now instead of waiting for the hourly one (platform admins)"""
        _platform_admin_only()
        payouts.request_payout_run()
        return {"queued": True}
