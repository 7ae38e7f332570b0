"""Billing routes outside the job and worker APIs: Stripe's webhook, and the platform admins'
reconciliation and revenue reports."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from billing import reconciliation, webhooks
from billing.schemas import MoneyOutSchema
from marketplace.auth import principal, require
from marketplace.errors import NotFound

blp = Blueprint(
    "billing",
    __name__,
    url_prefix="/api/v1",
    description="Stripe webhooks, reconciliation and platform revenue",
)


class WebhookReceiptSchema(Schema):
    received = fields.Constant(True)
    event_id = fields.String()
    type = fields.String()
    duplicate = fields.Boolean(metadata={"description": "already received; nothing changed"})


class ReconciliationArgsSchema(Schema):
    processor = fields.Boolean(
        load_default=True, metadata={"description": "also compare with the processor's records"}
    )


class ReconciliationFindingSchema(Schema):
    check = fields.String()
    subject = fields.String()
    detail = fields.String()


class ReconciliationSchema(Schema):
    ok = fields.Boolean()
    checked_at = fields.DateTime(format="iso")
    gateway = fields.String()
    processor_compared = fields.Boolean()
    processor_note = fields.String()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    findings = fields.List(fields.Nested(ReconciliationFindingSchema))


class VendorMarginSchema(MoneyOutSchema):
    organization_id = fields.Integer()
    organization = fields.String(allow_none=True)


class RevenueSchema(Schema):
    platform_fees = fields.List(fields.Nested(MoneyOutSchema))
    vendor_margins = fields.List(fields.Nested(VendorMarginSchema))
    vendor_margin_totals = fields.List(fields.Nested(MoneyOutSchema))


@blp.route("/billing/stripe/webhook")
class StripeWebhook(MethodView):
    @blp.doc(security=[])
    @blp.response(200, WebhookReceiptSchema)
    @blp.alt_response(400, description="Missing or bad Stripe-Signature; nothing was stored")
    def post(self):
        """Stripe's events. No bearer token: the `Stripe-Signature` header authenticates the
        body. Each event is stored once and applied in the background."""
        return webhooks.receive_stripe_event(
            request.get_data(cache=True), request.headers.get("Stripe-Signature")
        )


@blp.route("/admin/billing/reconciliation")
class Reconciliation(MethodView):
    @require()
    @blp.arguments(ReconciliationArgsSchema, location="query")
    @blp.response(200, ReconciliationSchema)
    def get(self, args):
        """The ledger checked against itself and the processor (platform admins)"""
        _platform_admin_only()
        return reconciliation.reconcile(processor=args["processor"])


@blp.route("/admin/billing/revenue")
class Revenue(MethodView):
    @require()
    @blp.response(200, RevenueSchema)
    def get(self):
        """Platform fees per currency and vendor margins (platform admins)"""
        _platform_admin_only()
        return reconciliation.platform_revenue()


def _platform_admin_only() -> None:
    if not principal().is_platform_admin:
        raise NotFound("not found")
