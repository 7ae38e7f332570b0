"""Money schemas shared by every route that takes or shows an amount."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

CURRENCIES = ("USD", "EUR", "GBP")
MAX_AMOUNT = 10**11  # one billion in major units: beyond any sane single movement


class AmountField(fields.Field):
    """`{"amount": 5000, "currency": "USD"}`, or a bare integer in the job's currency."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):
            if set(value) - {"amount", "currency"} or "amount" not in value:
                raise ValidationError('Give {"amount": <minor units>, "currency": "USD"}.')
            amount, currency = value["amount"], value.get("currency")
        else:
            amount, currency = value, None
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError("The amount is an integer number of minor units (cents).")
        if amount <= 0:
            raise ValidationError("The amount must be positive.")
        if amount > MAX_AMOUNT:
            raise ValidationError("The amount is too large.")
        if currency is not None and currency not in CURRENCIES:
            raise ValidationError(f"Currency must be one of {', '.join(CURRENCIES)}.")
        return {"amount": amount, "currency": currency}


class MoneyOutSchema(Schema):
    amount = fields.Integer()
    currency = fields.String()


class FundSchema(Schema):
    amount = AmountField(required=True)


class RefundSchema(Schema):
    amount = AmountField(required=True)


class PaymentSchema(Schema):
    id = fields.Integer()
    job_id = fields.Integer(allow_none=True)
    amount = fields.Method("_amount")
    status = fields.String(attribute="status.value")
    gateway = fields.String()
    payment_intent_id = fields.String()
    client_secret = fields.Method("_secret")
    created_at = fields.DateTime(format="iso")
    succeeded_at = fields.DateTime(format="iso", allow_none=True)

    def _amount(self, payment):
        return {"amount": payment.amount, "currency": payment.currency}

    def _secret(self, payment):
        return getattr(payment, "client_secret", None)


class RefundOutSchema(Schema):
    id = fields.Integer()
    amount = fields.Method("_amount")
    status = fields.String()
    processor_refund_id = fields.String()
    created_at = fields.DateTime(format="iso")

    def _amount(self, refund):
        return {"amount": refund.amount, "currency": refund.currency}


class BonusSchema(Schema):
    worker = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "the worker's pseudonym"},
    )
    amount = AmountField(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class EarningSchema(Schema):
    id = fields.Integer()
    kind = fields.String(attribute="kind.value")
    job_id = fields.Integer(allow_none=True)
    amount = fields.Method("_amount")
    status = fields.String(attribute="status.value")
    reason = fields.String(allow_none=True)
    created_at = fields.DateTime(format="iso")
    available_at = fields.DateTime(format="iso")

    def _amount(self, earning):
        return {"amount": earning.amount, "currency": earning.currency}


class BalanceSchema(Schema):
    currency = fields.String()
    pending = fields.Nested(MoneyOutSchema)
    available = fields.Nested(MoneyOutSchema)
    in_payout = fields.Nested(MoneyOutSchema)
    paid = fields.Nested(MoneyOutSchema)


class SpendSchema(Schema):
    funded = fields.Nested(MoneyOutSchema)
    refunded = fields.Nested(MoneyOutSchema)
    free = fields.Nested(MoneyOutSchema)
    held = fields.Nested(MoneyOutSchema)
    settled = fields.Nested(MoneyOutSchema)
    bonuses = fields.Nested(MoneyOutSchema)
    transactions = fields.Dict(keys=fields.String(), values=fields.Integer())
