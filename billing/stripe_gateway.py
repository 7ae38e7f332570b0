"""The PaymentGateway on the real `stripe` SDK: PaymentIntents for funding, refunds, Connect
(Express accounts and onboarding links) and transfers for payouts, and the lists that
reconciliation compares the ledger with.

One `StripeClient` per gateway carries the key, the API base (localstripe and our Connect
stub in tests; Stripe's own only when none is configured), a short timeout and few network
retries. Nothing here touches the SDK's module-level globals.

Errors become `GatewayError`:

- no answer (connection refused, timeout), 409 lock conflicts, 429 and 5xx → `retryable=True`.
  The outcome is *unknown*: Stripe may have created the object before the connection broke.
  Callers retry with the same idempotency key (Stripe then replays the first result instead
  of acting twice) and record nothing as done until an answer comes back.
- declined cards, invalid requests, a reused idempotency key with other parameters,
  authentication and permission errors → `retryable=False`: Stripe did nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import stripe

from billing.gateway import (
    ConnectedAccount,
    GatewayError,
    PaymentIntentResult,
    ProcessorRecords,
    TransferResult,
)

# Stripe accepts idempotency keys of up to 255 characters; longer ones are hashed (stably).
_MAX_KEY = 255


def stripe_idempotency_key(key: str) -> str:
    if len(key) <= _MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _calling(action: str) -> Iterator[None]:
    """Translate the SDK's errors for one call into GatewayError."""
    try:
        yield
    except stripe.APIConnectionError as error:
        raise GatewayError(
            f"{action}: no answer from Stripe ({error.user_message or error}); the outcome "
            "is unknown, retry with the same idempotency key",
            retryable=True,
        ) from error
    except (stripe.CardError, stripe.InvalidRequestError, stripe.IdempotencyError) as error:
        raise GatewayError(
            f"{action}: {error.user_message or error}",
            retryable=False,
            code=getattr(error, "code", None),
            http_status=error.http_status,
        ) from error
    except (stripe.AuthenticationError, stripe.PermissionError) as error:
        raise GatewayError(
            f"{action}: Stripe refused our credentials ({error.user_message or error})",
            retryable=False,
            http_status=error.http_status,
        ) from error
    except stripe.StripeError as error:
        # RateLimitError, APIError (5xx and anything unexpected): Stripe may try again later.
        status = error.http_status
        raise GatewayError(
            f"{action}: Stripe answered {status or 'an error'} ({error.user_message or error})",
            retryable=status is None or status == 409 or status == 429 or status >= 500,
            code=getattr(error, "code", None),
            http_status=status,
        ) from error


def _intent(found: stripe.PaymentIntent) -> PaymentIntentResult:
    data = found.to_dict()
    return PaymentIntentResult(
        id=data["id"],
        status=data["status"],
        client_secret=data.get("client_secret"),
        amount=int(data["amount"]),
        currency=data["currency"],
    )


def _transfer(data: dict) -> TransferResult:
    return TransferResult(
        id=data["id"],
        amount=int(data["amount"]),
        currency=data["currency"],
        destination=data["destination"],
    )


def _account(found: stripe.Account) -> ConnectedAccount:
    data = found.to_dict()
    return ConnectedAccount(id=data["id"], payouts_enabled=bool(data.get("payouts_enabled")))


class StripeGateway:
    """Stripe through one configured StripeClient (see the module docstring for errors)."""

    name = "stripe"
    keeps_records = True

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        max_network_retries: int = 1,
    ) -> None:
        base = (api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self.api_base = base
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": base, "connect": base, "files": base},
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=(connect_timeout, timeout)),
        )

    # --- funding ----------------------------------------------------------------------------

    def create_payment_intent(self, amount, currency, metadata, idempotency_key):
        with _calling("creating a PaymentIntent"):
            created = self.client.v1.payment_intents.create(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "metadata": {k: str(v) for k, v in metadata.items()},
                },
                options={"idempotency_key": stripe_idempotency_key(idempotency_key)},
            )
        return _intent(created)

    def retrieve_payment_intent(self, payment_intent_id):
        with _calling("reading a PaymentIntent"):
            return _intent(self.client.v1.payment_intents.retrieve(payment_intent_id))

    def refund(self, payment_intent_id, amount, idempotency_key):
        with _calling("refunding"):
            created = self.client.v1.refunds.create(
                params={"payment_intent": payment_intent_id, "amount": amount},
                options={"idempotency_key": stripe_idempotency_key(idempotency_key)},
            )
        return created["id"]

    # --- Connect ----------------------------------------------------------------------------

    def create_connected_account(self, email, country, idempotency_key):
        with _calling("creating a connected account"):
            created = self.client.v1.accounts.create(
                params={
                    "type": "express",
                    "email": email,
                    "country": country,
                    "capabilities": {"transfers": {"requested": True}},
                },
                options={"idempotency_key": stripe_idempotency_key(idempotency_key)},
            )
        return _account(created)

    def account_link(self, account_id, return_url, refresh_url):
        with _calling("creating an onboarding link"):
            link = self.client.v1.account_links.create(
                params={
                    "account": account_id,
                    "return_url": return_url,
                    "refresh_url": refresh_url,
                    "type": "account_onboarding",
                }
            )
        return link["url"]

    def retrieve_account(self, account_id):
        with _calling("reading a connected account"):
            return _account(self.client.v1.accounts.retrieve(account_id))

    # --- payouts ----------------------------------------------------------------------------

    def create_transfer(self, amount, currency, destination, idempotency_key):
        """Move money to a connected account. On a retryable GatewayError the transfer may
        exist: retry with the same key (Stripe replays it) before recording anything."""
        with _calling("creating a transfer"):
            created = self.client.v1.transfers.create(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "destination": destination,
                    # Tagged with our key so that find_transfer can ask what became of it.
                    "transfer_group": idempotency_key,
                },
                options={"idempotency_key": stripe_idempotency_key(idempotency_key)},
            )
        return _transfer(created.to_dict())

    def find_transfer(self, idempotency_key):
        with _calling("looking a transfer up"):
            found = self.client.v1.transfers.list(
                params={"transfer_group": idempotency_key, "limit": 1}
            )
        return _transfer(found.data[0].to_dict()) if found.data else None

    # --- reconciliation ---------------------------------------------------------------------

    def records(self):
        """Every succeeded PaymentIntent, succeeded refund and transfer on the account."""
        found = ProcessorRecords()
        with _calling("listing PaymentIntents"):
            for found_intent in self.client.v1.payment_intents.list(
                params={"limit": 100}
            ).auto_paging_iter():
                intent = found_intent.to_dict()
                if intent["status"] == "succeeded":
                    found.succeeded_payment_intents[intent["id"]] = int(intent["amount"])
                    found.currencies[intent["id"]] = intent["currency"].upper()
        with _calling("listing refunds"):
            for found_refund in self.client.v1.refunds.list(
                params={"limit": 100}
            ).auto_paging_iter():
                refund = found_refund.to_dict()
                if refund["status"] in ("succeeded", "pending"):
                    found.refunds[refund["id"]] = int(refund["amount"])
                    found.currencies[refund["id"]] = refund["currency"].upper()
        with _calling("listing transfers"):
            for found_transfer in self.client.v1.transfers.list(
                params={"limit": 100}
            ).auto_paging_iter():
                transfer = found_transfer.to_dict()
                found.transfers[transfer["id"]] = int(transfer["amount"])
                found.currencies[transfer["id"]] = transfer["currency"].upper()
                if reversed_ := int(transfer.get("amount_reversed") or 0):
                    found.transfers_reversed[transfer["id"]] = reversed_
        return found
