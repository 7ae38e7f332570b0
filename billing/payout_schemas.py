"""Schemas of payout accounts, payouts and statements (what workers and admins see)."""

from __future__ import annotations

from datetime import UTC

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from billing.models import PayoutStatus
from billing.schemas import CURRENCIES, MoneyOutSchema
from marketplace.pagination import PageArgsSchema

# ISO 3166-1 alpha-2 (the processor decides which of them it can pay out to).
_ISO_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
"""
ISO_COUNTRIES = frozenset(_ISO_CODES.split())


def _iso_country(value: str) -> None:
    if value not in ISO_COUNTRIES:
        raise ValidationError("Use an ISO 3166-1 alpha-2 country code in capitals, e.g. US.")


def _url(description: str) -> fields.Url:
    return fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2000),
        metadata={"description": description},
    )


class PayoutAccountCreateSchema(Schema):
    country = fields.String(required=True, validate=_iso_country)
    return_url = _url("where onboarding sends the worker back (default: this API)")
    refresh_url = _url("where an expired onboarding link sends the worker (default: this API)")


class PayoutAccountSchema(Schema):
    id = fields.Integer()
    status = fields.String(attribute="status.value")
    country = fields.String()
    processor_account_id = fields.String()
    onboarding_url = fields.Method(
        "_onboarding_url",
        metadata={"description": "shown after connecting; finish onboarding there"},
    )
    created_at = fields.DateTime(format="iso")
    updated_at = fields.DateTime(format="iso")

    def _onboarding_url(self, account):
        return getattr(account, "onboarding_url", None)


class PayoutSchema(Schema):
    """A payout as its worker sees it."""

    id = fields.Integer()
    amount = fields.Method("_amount")
    status = fields.String(attribute="status.value")
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(format="iso", allow_none=True)
    created_at = fields.DateTime(format="iso")
    paid_at = fields.DateTime(format="iso", allow_none=True)

    def _amount(self, payout):
        return {"amount": payout.amount, "currency": payout.currency}


class PayoutAdminSchema(PayoutSchema):
    """A payout as platform admins see it: whose, the processor's ids, what went wrong."""

    worker_id = fields.Integer()
    idempotency_key = fields.String()
    processor_transfer_id = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)


_STATUS = validate.OneOf([s.value for s in PayoutStatus])


class PayoutListArgsSchema(PageArgsSchema):
    status = fields.String(validate=_STATUS)


class PayoutAdminListArgsSchema(PayoutListArgsSchema):
    worker_id = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1))


class PayoutRunQueuedSchema(Schema):
    queued = fields.Boolean()


class StatementArgsSchema(Schema):
    start = fields.AwareDateTime(
        data_key="from",
        format="iso",
        default_timezone=UTC,
        metadata={"description": "start of the period (inclusive); default 30 days before `to`"},
    )
    end = fields.AwareDateTime(
        data_key="to",
        format="iso",
        default_timezone=UTC,
        metadata={"description": "end of the period (exclusive); default now"},
    )
    currency = fields.String(load_default="USD", validate=validate.OneOf(CURRENCIES))

    @validates_schema
    def _ordered(self, data, **kwargs):
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise ValidationError("`to` must be after `from`.", "to")


class BalancesSchema(Schema):
    pending = fields.Nested(MoneyOutSchema)
    available = fields.Nested(MoneyOutSchema)
    in_payout = fields.Nested(MoneyOutSchema)
    total = fields.Nested(MoneyOutSchema)


class CountedMoneySchema(MoneyOutSchema):
    count = fields.Integer()


class StatementSchema(Schema):
    currency = fields.String()
    start = fields.DateTime(data_key="from", attribute="from", format="iso")
    end = fields.DateTime(data_key="to", attribute="to", format="iso")
    opening = fields.Nested(BalancesSchema)
    closing = fields.Nested(BalancesSchema)
    earnings = fields.Nested(CountedMoneySchema)
    bonuses = fields.Nested(CountedMoneySchema)
    reversals = fields.Nested(CountedMoneySchema)
    payouts = fields.Nested(CountedMoneySchema, metadata={"description": "confirmed paid out"})
    payouts_returned = fields.Nested(
        CountedMoneySchema, metadata={"description": "paid out, then reversed by the processor"}
    )
    other = fields.Nested(MoneyOutSchema)
