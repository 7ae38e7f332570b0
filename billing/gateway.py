"""Every call to the payment processor goes through one interface with two implementations:
`StripeGateway` (the real `stripe` SDK; in tests aimed at localstripe and our Connect stub)
and `OfflineGateway` (the default without a Stripe key: payments succeed at once, transfers
are recorded locally, so `make run` moves the same ledger without any network).

Every call that creates something takes an idempotency key. A `GatewayError` with
`retryable=True` means the outcome is unknown (a timeout, a dropped connection, a 5xx): the
processor may or may not have acted, so the caller must retry with the *same* key, never a
new one, and must not record anything as done until a retry answers. `retryable=False` means
the processor refused (a declined card, an invalid request) and nothing was done.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Protocol

from flask import current_app


class GatewayError(Exception):
    """The processor refused (`retryable=False`: nothing was done) or could not be reached or
    answered 5xx (`retryable=True`: the outcome is unknown; retry with the same idempotency
    key). `code` is the processor's error code when it gave one (`card_declined`…)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        code: str | None = None,
        http_status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.http_status = http_status


@dataclass
class PaymentIntentResult:
    id: str
    status: str  # requires_payment_method | requires_confirmation | succeeded | …
    client_secret: str | None = None
    amount: int = 0
    currency: str = "usd"


@dataclass
class TransferResult:
    id: str
    amount: int
    currency: str
    destination: str


@dataclass
class ConnectedAccount:
    id: str
    payouts_enabled: bool


@dataclass
class ProcessorRecords:
    """What the processor says happened, for reconciliation: id → amount in minor units."""

    succeeded_payment_intents: dict[str, int] = field(default_factory=dict)
    transfers: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)  # succeeded refunds only
    transfers_reversed: dict[str, int] = field(default_factory=dict)  # transfer id → reversed
    currencies: dict[str, str] = field(default_factory=dict)  # any id above → "USD"


class PaymentGateway(Protocol):
    name: str
    # Whether records() outlives the process, so reconciliation can compare against it.
    keeps_records: bool

    def create_payment_intent(
        self, amount: int, currency: str, metadata: dict[str, str], idempotency_key: str
    ) -> PaymentIntentResult: ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntentResult: ...

    def refund(self, payment_intent_id: str, amount: int, idempotency_key: str) -> str: ...

    def create_connected_account(
        self, email: str, country: str, idempotency_key: str
    ) -> ConnectedAccount: ...

    def account_link(self, account_id: str, return_url: str, refresh_url: str) -> str: ...

    def retrieve_account(self, account_id: str) -> ConnectedAccount: ...

    def create_transfer(
        self, amount: int, currency: str, destination: str, idempotency_key: str
    ) -> TransferResult: ...

    def find_transfer(self, idempotency_key: str) -> TransferResult | None:
        """The transfer made for `idempotency_key`, if the processor made one (asked before a
        payout whose requests all failed is given up: one of them may have gone through)."""
        ...

    def records(self) -> ProcessorRecords: ...


class OfflineGateway:
    """No processor at all: everything succeeds immediately and is remembered in-process and
    in the ledger (whose `reference` columns carry these ids)."""

    name = "offline"
    keeps_records = False  # in-process memory only; gone after a restart

    def __init__(self) -> None:
        self._by_key: dict[str, object] = {}
        self._intents: dict[str, PaymentIntentResult] = {}
        self._records = ProcessorRecords()
        self._lock = threading.Lock()

    def _once(self, key: str, make):
        with self._lock:
            if key not in self._by_key:
                self._by_key[key] = make()
            return self._by_key[key]

    @staticmethod
    def _check(amount: int, currency: str) -> None:
        # The same refusals Stripe makes, so callers see one behaviour.
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise GatewayError("The amount must be a positive integer.", retryable=False)
        if not isinstance(currency, str) or len(currency) != 3:
            raise GatewayError("The currency must be a three-letter code.", retryable=False)

    def create_payment_intent(self, amount, currency, metadata, idempotency_key):
        self._check(amount, currency)

        def make():
            result = PaymentIntentResult(
                id="pi_offline_" + secrets.token_hex(10),
                status="succeeded",
                amount=amount,
                currency=currency.lower(),
            )
            self._intents[result.id] = result
            self._records.succeeded_payment_intents[result.id] = amount
            self._records.currencies[result.id] = currency.upper()
            return result

        return self._once(idempotency_key, make)

    def retrieve_payment_intent(self, payment_intent_id):
        found = self._intents.get(payment_intent_id)
        if found is None:
            raise GatewayError(f"No such PaymentIntent: {payment_intent_id}", retryable=False)
        return found

    def refund(self, payment_intent_id, amount, idempotency_key):
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise GatewayError("The amount must be a positive integer.", retryable=False)

        def make():
            refund_id = "re_offline_" + secrets.token_hex(10)
            self._records.refunds[refund_id] = amount
            intent = self._intents.get(payment_intent_id)
            if intent is not None:
                self._records.currencies[refund_id] = intent.currency.upper()
            return refund_id

        return self._once(idempotency_key, make)

    def create_connected_account(self, email, country, idempotency_key):
        return self._once(
            idempotency_key,
            lambda: ConnectedAccount(
                id="acct_offline_" + secrets.token_hex(8), payouts_enabled=True
            ),
        )

    def account_link(self, account_id, return_url, refresh_url):
        return f"{return_url}?account={account_id}&offline=1"

    def retrieve_account(self, account_id):
        return ConnectedAccount(id=account_id, payouts_enabled=True)

    def create_transfer(self, amount, currency, destination, idempotency_key):
        self._check(amount, currency)

        def make():
            result = TransferResult(
                id="tr_offline_" + secrets.token_hex(10),
                amount=amount,
                currency=currency.lower(),
                destination=destination,
            )
            self._records.transfers[result.id] = amount
            self._records.currencies[result.id] = currency.upper()
            return result

        return self._once(idempotency_key, make)

    def find_transfer(self, idempotency_key):
        with self._lock:
            found = self._by_key.get(idempotency_key)
        return found if isinstance(found, TransferResult) else None

    def records(self):
        return self._records


def gateway() -> PaymentGateway:
    """The app's gateway: Stripe when a key is configured, the offline one otherwise."""
    app = current_app
    if "crowdline.gateway" not in app.extensions:
        settings = app.config["CROWDLINE"]
        if settings.stripe_secret_key:
            from billing.stripe_gateway import StripeGateway

            app.extensions["crowdline.gateway"] = StripeGateway(
                settings.stripe_secret_key, api_base=settings.stripe_api_base
            )
        else:
            app.extensions["crowdline.gateway"] = OfflineGateway()
    return app.extensions["crowdline.gateway"]


def install(app, implementation: PaymentGateway) -> None:
    """Use a specific gateway (tests)."""
    app.extensions["crowdline.gateway"] = implementation
