"""Stripe's signed webhooks: verified, stored once, applied once, in the background.

Receiving (`receive_stripe_event`, behind `POST /api/v1/billing/stripe/webhook`): the
`Stripe-Signature` header is checked against STRIPE_WEBHOOK_SECRET (HMAC-SHA256 over
`"<t>.<raw body>"`, the timestamp at most TOLERANCE_SECONDS old) before anything is stored;
a bad or missing signature is a 400 and leaves no trace. A verified event is stored in
`processor_events` under its id — a second delivery of the same id finds the row and changes
nothing — and `billing.tasks.apply_processor_event` is enqueued after the commit.

Applying (`apply_event`): each event is applied in one database transaction with its row
locked, and marked processed in that same transaction, so it takes effect at most once
however often it is delivered or retried. The rules make any arrival order safe:

- `payment_intent.succeeded` credits the payment (the ledger key is the PaymentIntent id, so
  a replay changes nothing); a success after a failure still counts (another card worked).
- `payment_intent.payment_failed` / `.canceled` mark the payment failed or canceled, unless
  it already succeeded: a late failure never undoes a success.
- `account.updated` reads the account's current state from the processor, so an old
  snapshot that arrives late cannot overwrite a newer one.
- `transfer.reversed` (whole) and `transfer.failed` fail the payout, whose money returns to
  the worker's available balance (`on_transfer_failed`).
- `charge.refunded` is checked against the refunds Crowdline recorded.
- Other types are stored and ignored.

The waiting rule: an event about something not in our database yet (the Payment of a
PaymentIntent, a payout account, the payout that owns a transfer) is neither dropped nor
guessed at. It stays unprocessed (`processed_at` NULL, outcome `waiting: …`) and
`retry_waiting_events` (periodic, every RETRY_EVERY_SECONDS) applies it once the row exists.
So does an event whose processing failed (the processor could not be asked, the database
went away). Events still waiting after RETRY_WINDOW are no longer retried; the
reconciliation report lists every event waiting longer than STALE_AFTER for a human.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import stripe
from flask import current_app
from sqlalchemy import select, update

from billing import payouts, services
from billing.gateway import GatewayError, gateway
from billing.models import Payment, PaymentStatus, PayoutAccount, ProcessorEvent
from marketplace import audit, clock
from marketplace.background import enqueue
from marketplace.database import db, insert_or_skip
from marketplace.errors import BadRequest, Conflict, CrowdlineError, ServiceUnavailable

TOLERANCE_SECONDS = 300  # Stripe's own default: a replayed old delivery is refused
RETRY_EVERY_SECONDS = 300
RETRY_GRACE = timedelta(seconds=30)  # leave a fresh event to the job enqueued with it
RETRY_WINDOW = timedelta(days=3)  # Stripe itself stops redelivering after three days
STALE_AFTER = timedelta(hours=1)
WAITING = "waiting: "

log = logging.getLogger(__name__)


class InvalidSignature(BadRequest):
    slug, title = "invalid-signature", "Invalid signature"


class NotYet(Exception):
    """The event is about a row we do not have yet: leave it waiting and retry later."""


@dataclass
class Receipt:
    event_id: str
    type: str
    duplicate: bool


# --- receiving -----------------------------------------------------------------------------


def receive_stripe_event(payload: bytes, signature: str | None) -> Receipt:
    """Verify a webhook delivery, store its event once, and queue it to be applied. Commits."""
    secret = current_app.config["CROWDLINE"].stripe_webhook_secret
    if not secret:
        raise ServiceUnavailable(
            "Stripe webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET)."
        )
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        raise InvalidSignature(
            "The Stripe-Signature header is missing, malformed, too old, or does not match "
            "this payload.",
            errors={"Stripe-Signature": ["Does not verify against the webhook secret."]},
        ) from None
    event = _parse(payload)
    stored = db.session.scalar(
        insert_or_skip(ProcessorEvent)
        .values(id=event["id"], type=event["type"], payload=event, received_at=clock.now())
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(ProcessorEvent.id)
    )
    duplicate = stored is None  # a concurrent twin delivery may have stored it first
    if not duplicate:
        enqueue("billing.tasks.apply_processor_event", event["id"])
    db.session.commit()
    return Receipt(event["id"], event["type"], duplicate)


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError:
        raise BadRequest("The event is not JSON.") from None
    valid = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 100
        and isinstance(event.get("type"), str)
        and 0 < len(event["type"]) <= 100
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
    if not valid:
        raise BadRequest("The event needs an id, a type and data.object.")
    return event


# --- applying ------------------------------------------------------------------------------


def apply_event(event_id: str) -> str | None:
    """Apply one stored event at most once and return its outcome (None if unknown). Commits."""
    event = db.session.scalar(
        select(ProcessorEvent)
        .where(ProcessorEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if event is None or event.processed_at is not None:
        outcome = event.outcome if event is not None else None
        db.session.rollback()
        return outcome
    handler = HANDLERS.get(event.type)
    savepoint = db.session.begin_nested()
    done = True
    try:
        if handler is None:
            outcome = f"ignored: Crowdline does not act on {event.type}"
        else:
            outcome = handler(event.payload["data"]["object"], event.type)
    except NotYet as waiting:
        savepoint.rollback()
        outcome, done = f"{WAITING}{waiting}", False
    except GatewayError as error:
        savepoint.rollback()
        outcome, done = f"{WAITING}the processor could not be asked ({error})", False
    except CrowdlineError as error:
        # Permanent (an amount that does not match…): recorded, and reconciliation shows it.
        savepoint.rollback()
        outcome = f"rejected: {error.detail}"
    except Exception as error:
        log.exception("processor event %s (%s) failed; it will be retried", event_id, event.type)
        db.session.rollback()
        outcome = f"{WAITING}{type(error).__name__} while applying it"
        db.session.execute(
            update(ProcessorEvent)
            .where(ProcessorEvent.id == event_id, ProcessorEvent.processed_at.is_(None))
            .values(outcome=outcome)
        )
        db.session.commit()
        return outcome
    else:
        savepoint.commit()
    event.outcome = outcome[:2000]
    if done:
        event.processed_at = clock.now()
    db.session.commit()
    return outcome[:2000]


def retry_waiting_events(limit: int = 500, grace: timedelta = RETRY_GRACE) -> int:
    """Apply the events still waiting (received within RETRY_WINDOW, older than `grace`);
    returns how many got applied this time. Periodic job."""
    now = clock.now()
    ids = list(
        db.session.scalars(
            select(ProcessorEvent.id)
            .where(
                ProcessorEvent.processed_at.is_(None),
                ProcessorEvent.received_at <= now - grace,
                ProcessorEvent.received_at >= now - RETRY_WINDOW,
            )
            .order_by(ProcessorEvent.received_at, ProcessorEvent.id)
            .limit(limit)
        )
    )
    db.session.rollback()
    applied = 0
    for event_id in ids:
        outcome = apply_event(event_id)
        applied += outcome is not None and not outcome.startswith(WAITING)
    return applied


def waiting_events(older_than: timedelta = STALE_AFTER) -> list[ProcessorEvent]:
    """Events not applied although received more than `older_than` ago (for reconciliation)."""
    return list(
        db.session.scalars(
            select(ProcessorEvent)
            .where(
                ProcessorEvent.processed_at.is_(None),
                ProcessorEvent.received_at < clock.now() - older_than,
            )
            .order_by(ProcessorEvent.received_at)
        )
    )


# --- the handlers: (data.object, event type) → outcome; NotYet to wait ----------------------


def _ours(intent: dict[str, Any]) -> bool:
    # start_job_funding tags every PaymentIntent it opens; others on the account are not ours.
    return "organization_id" in (intent.get("metadata") or {})


def _payment(payment_intent_id: str | None) -> Payment | None:
    if not payment_intent_id:
        return None
    return db.session.scalar(
        select(Payment).where(Payment.payment_intent_id == payment_intent_id).with_for_update()
    )


def _payment_succeeded(intent: dict[str, Any], _type: str) -> str:
    payment = _payment(intent.get("id"))
    if payment is None:
        if not _ours(intent):
            return "ignored: not a Crowdline payment"
        raise NotYet(f"no payment for {intent['id']} yet")
    currency = str(intent.get("currency", "")).upper()
    if currency != payment.currency:
        raise Conflict(f"The processor's currency {currency} differs from {payment.currency}.")
    already = payment.status == PaymentStatus.SUCCEEDED
    amount = int(intent.get("amount_received") or intent.get("amount") or 0)
    txn = services.apply_payment_succeeded_in_txn(payment.payment_intent_id, amount)
    if already:
        return f"already applied: payment {payment.id}"
    return f"applied: payment {payment.id}, funding transaction {txn.id if txn else None}"


def _payment_not_completed(intent: dict[str, Any], type_: str) -> str:
    status = PaymentStatus.CANCELED if type_.endswith("canceled") else PaymentStatus.FAILED
    payment = _payment(intent.get("id"))
    if payment is None:
        if not _ours(intent):
            return "ignored: not a Crowdline payment"
        raise NotYet(f"no payment for {intent['id']} yet")
    if payment.status == PaymentStatus.SUCCEEDED:
        return f"ignored: payment {payment.id} already succeeded"
    if payment.status == status:
        return f"already recorded: payment {payment.id} {status.value}"
    payment.status = status
    reason = (intent.get("last_payment_error") or {}).get("message") or intent.get(
        "cancellation_reason"
    )
    audit.record(
        f"billing.payment_{status.value}",
        "payment",
        payment.id,
        organization_id=payment.organization_id,
        detail={"payment_intent": payment.payment_intent_id, "reason": reason},
    )
    return f"recorded: payment {payment.id} {status.value}"


def _charge_refunded(charge: dict[str, Any], _type: str) -> str:
    payment = _payment(charge.get("payment_intent"))
    if payment is None:
        return "ignored: not a Crowdline payment"
    refunded = int(charge.get("amount_refunded") or 0)
    if refunded <= payment.refunded_amount:
        return f"recorded: {refunded} {payment.currency} refunded, as Crowdline recorded"
    # Our own refund commits right after Stripe answers, so wait a little for it; what never
    # catches up was refunded outside Crowdline, and reconciliation lists that refund.
    raise NotYet(
        f"the processor has refunded {refunded} {payment.currency} of payment {payment.id} "
        f"but Crowdline recorded {payment.refunded_amount}"
    )


def _account_updated(account: dict[str, Any], _type: str) -> str:
    account_id = account.get("id")
    known = db.session.scalar(
        select(PayoutAccount.id).where(PayoutAccount.processor_account_id == account_id)
    )
    if known is None:
        raise NotYet(f"no payout account {account_id} yet")
    current = gateway().retrieve_account(account_id)  # the state now, whatever the order
    found = payouts.mark_payout_account_in_txn(account_id, current.payouts_enabled)
    return f"payout account {found.id}: {found.status.value}"


def _transfer_reversed(transfer: dict[str, Any], type_: str) -> str:
    reversed_ = int(transfer.get("amount_reversed") or 0)
    if type_ == "transfer.reversed" and reversed_ < int(transfer.get("amount") or 0):
        audit.record(
            "billing.transfer_partly_reversed",
            "transfer",
            transfer.get("id"),
            detail={"amount": transfer.get("amount"), "amount_reversed": reversed_},
        )
        return f"recorded: {reversed_} of transfer {transfer.get('id')} reversed (for a human)"
    return on_transfer_failed(str(transfer.get("id")), type_.replace(".", " "))


def _recorded(obj: dict[str, Any], type_: str) -> str:
    return f"recorded: {type_} {obj.get('id')}"


def on_transfer_failed(transfer_id: str, reason: str = "transfer reversed") -> str:
    """A transfer failed or was reversed at the processor: fail the payout that owns it, once,
    so its money returns to the worker's available balance (billing.payouts does the ledger).
    Raises NotYet while no payout carries this transfer id. Does not commit."""
    payout = payouts.on_transfer_failed_in_txn(transfer_id, reason)
    if payout is None:
        raise NotYet(f"no payout has transfer {transfer_id} yet")
    return f"payout {payout.id}: {payout.status.value}"


HANDLERS = {
    "payment_intent.succeeded": _payment_succeeded,
    "payment_intent.payment_failed": _payment_not_completed,
    "payment_intent.canceled": _payment_not_completed,
    "charge.refunded": _charge_refunded,
    "account.updated": _account_updated,
    "transfer.created": _recorded,
    "transfer.updated": _recorded,
    "transfer.reversed": _transfer_reversed,
    "transfer.failed": _transfer_reversed,
}
