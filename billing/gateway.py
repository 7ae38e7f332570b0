"""Every call to the payment processor goes through one interface with two implementations:
`StripeGateway` (the real `stripe` SDK; in tests aimed at localstripe and our Connect stub)
and `OfflineGateway` (the default without a Stripe key: payments succeed at once, transfers
are recorded locally, so `make run` moves the same ledger without any network)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

from flask import current_app


class GatewayError(Exception):
    """The processor refused or could not be reached; nothing was done (or it is unknown)."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


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
    """What the processor says happened, for reconciliation."""

    succeeded_payment_intents: dict[str, int] = field(default_factory=dict)
    transfers: dict[str, int] = field(default_factory=dict)


class PaymentGateway(Protocol):
    name: str

    def create_payment_intent(
        self, amount: int, currency: str, metadata: dict[str, str], idempotency_key: str
    ) -> PaymentIntentResult: ...

    def refund(self, payment_intent_id: str, amount: int, idempotency_key: str) -> str: ...

    def create_connected_account(
        self, email: str, country: str, idempotency_key: str
    ) -> ConnectedAccount: ...

    def account_link(self, account_id: str, return_url: str, refresh_url: str) -> str: ...

    def retrieve_account(self, account_id: str) -> ConnectedAccount: ...

    def create_transfer(
        self, amount: int, currency: str, destination: str, idempotency_key: str
    ) -> TransferResult: ...

    def records(self) -> ProcessorRecords: ...


class OfflineGateway:
    """No processor at all: everything succeeds immediately and is remembered in-process and
    in the ledger (whose `reference` columns carry these ids)."""

    name = "offline"

    def __init__(self) -> None:
        self._by_key: dict[str, object] = {}
        self._records = ProcessorRecords()

    def _once(self, key: str, make):
        if key not in self._by_key:
            self._by_key[key] = make()
        return self._by_key[key]

    def create_payment_intent(self, amount, currency, metadata, idempotency_key):
        def make():
            result = PaymentIntentResult(
                id="pi_offline_" + secrets.token_hex(10),
                status="succeeded",
                amount=amount,
                currency=currency.lower(),
            )
            self._records.succeeded_payment_intents[result.id] = amount
            return result

        return self._once(idempotency_key, make)

    def refund(self, payment_intent_id, amount, idempotency_key):
        return self._once(idempotency_key, lambda: "re_offline_" + secrets.token_hex(10))

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
        def make():
            result = TransferResult(
                id="tr_offline_" + secrets.token_hex(10),
                amount=amount,
                currency=currency.lower(),
                destination=destination,
            )
            self._records.transfers[result.id] = amount
            return result

        return self._once(idempotency_key, make)

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
