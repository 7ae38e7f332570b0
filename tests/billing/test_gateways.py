"""One contract for both gateways (offline, and Stripe through localstripe + the Connect stub),
then the Stripe gateway's failure modes: what is retryable, and what a timeout means."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from billing.gateway import GatewayError, OfflineGateway, PaymentGateway
from billing.stripe_gateway import StripeGateway
from tests.billing import stripe_servers
from tests.billing.stripe_servers import SECRET_KEY, StripeFake, free_port

localstripe_server = stripe_servers.localstripe_server
stripe_stub = stripe_servers.stripe_stub
stripe_fake = stripe_servers.stripe_fake


@dataclass
class Contract:
    gateway: PaymentGateway
    confirm: Callable[[str], object]  # what the payer's browser does with the client secret


@pytest.fixture(params=["offline", "stripe"])
def contract(request) -> Contract:
    if request.param == "offline":
        return Contract(OfflineGateway(), confirm=lambda _pi: None)
    fake: StripeFake = request.getfixturevalue("stripe_fake")
    return Contract(fake.gateway(), confirm=fake.localstripe.confirm)


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


# --- the contract --------------------------------------------------------------------------


def test_payment_intent_is_created_once_per_key(contract):
    gateway, first_key = contract.gateway, key()
    first = gateway.create_payment_intent(1500, "USD", {"job_id": "7"}, first_key)
    again = gateway.create_payment_intent(1500, "USD", {"job_id": "7"}, first_key)
    other = gateway.create_payment_intent(1500, "USD", {"job_id": "7"}, key())
    assert first.id.startswith("pi_") and again.id == first.id and other.id != first.id
    assert (first.amount, first.currency) == (1500, "usd")
    assert first.status in ("requires_payment_method", "succeeded")


def test_a_confirmed_payment_intent_reads_back_succeeded_and_is_listed(contract):
    gateway = contract.gateway
    intent = gateway.create_payment_intent(2500, "USD", {}, key())
    contract.confirm(intent.id)
    assert gateway.retrieve_payment_intent(intent.id).status == "succeeded"
    records = gateway.records()
    assert records.succeeded_payment_intents[intent.id] == 2500
    assert records.currencies[intent.id] == "USD"


def test_refunds_are_made_once_per_key_and_listed(contract):
    gateway = contract.gateway
    intent = gateway.create_payment_intent(3000, "USD", {}, key())
    contract.confirm(intent.id)
    refund_key = key()
    refund = gateway.refund(intent.id, 1000, refund_key)
    assert refund.startswith("re_")
    assert gateway.refund(intent.id, 1000, refund_key) == refund
    second = gateway.refund(intent.id, 500, key())
    assert second != refund
    assert {refund: 1000, second: 500}.items() <= gateway.records().refunds.items()


def test_connected_account_onboarding_link_and_retrieval(contract):
    gateway, account_key = contract.gateway, key()
    account = gateway.create_connected_account("worker@example.org", "US", account_key)
    assert account.id.startswith("acct_")
    assert gateway.create_connected_account("worker@example.org", "US", account_key) == account
    link = gateway.account_link(account.id, "https://app.example/return", "https://app.example/r")
    assert link.startswith("http")
    found = gateway.retrieve_account(account.id)
    assert found.id == account.id and isinstance(found.payouts_enabled, bool)


def test_a_transfer_is_made_once_per_key(contract):
    gateway = contract.gateway
    account = gateway.create_connected_account("w@example.org", "US", key())
    transfer_key = key()
    first = gateway.create_transfer(700, "USD", account.id, transfer_key)
    again = gateway.create_transfer(700, "USD", account.id, transfer_key)
    assert first.id.startswith("tr_") and again.id == first.id
    assert (first.amount, first.currency, first.destination) == (700, "usd", account.id)
    other = gateway.create_transfer(700, "USD", account.id, key())
    transfers = gateway.records().transfers
    assert transfers[first.id] == 700 and transfers[other.id] == 700
    assert len([t for t in transfers if t in (first.id, other.id)]) == 2


def test_amounts_the_processor_refuses_are_not_retryable(contract):
    gateway = contract.gateway
    account = gateway.create_connected_account("w@example.org", "US", key())
    for call in (
        lambda: gateway.create_payment_intent(0, "USD", {}, key()),
        lambda: gateway.create_payment_intent(-5, "USD", {}, key()),
        lambda: gateway.create_transfer(0, "USD", account.id, key()),
    ):
        with pytest.raises(GatewayError) as refused:
            call()
        assert refused.value.retryable is False


# --- Stripe's failure modes ----------------------------------------------------------------


def test_a_5xx_is_retryable_and_nothing_was_made(stripe_fake):
    gateway = stripe_fake.gateway()
    account = gateway.create_connected_account("w@example.org", "US", key())
    stripe_fake.stub.fail_next("POST", "/v1/transfers", "500")
    with pytest.raises(GatewayError) as failed:
        gateway.create_transfer(900, "USD", account.id, key())
    assert failed.value.retryable is True and failed.value.http_status == 500
    assert stripe_fake.stub.transfers == {}


def test_the_sdk_retries_one_5xx_with_the_same_key(stripe_fake):
    gateway = stripe_fake.gateway(max_network_retries=1)
    account = gateway.create_connected_account("w@example.org", "US", key())
    stripe_fake.stub.fail_next("POST", "/v1/transfers", "500")
    made = gateway.create_transfer(900, "USD", account.id, key())
    assert list(stripe_fake.stub.transfers) == [made.id]
    assert stripe_fake.stub.calls.count(("POST", "/v1/transfers")) == 2


def test_a_timeout_is_retryable_and_the_same_key_never_pays_twice(stripe_fake):
    """The transfer was made but the answer was lost: the outcome is unknown, so the caller
    retries with the same key and Stripe replays the transfer it already made."""
    gateway = stripe_fake.gateway(timeout=0.3)
    account = gateway.create_connected_account("w@example.org", "US", key())
    transfer_key = key()
    stripe_fake.stub.fail_next("POST", "/v1/transfers", "hang_after")
    started = time.monotonic()
    with pytest.raises(GatewayError) as lost:
        gateway.create_transfer(1200, "USD", account.id, transfer_key)
    assert lost.value.retryable is True and "unknown" in str(lost.value)
    assert time.monotonic() - started < 2
    assert len(stripe_fake.stub.transfers) == 1  # it did happen
    retried = gateway.create_transfer(1200, "USD", account.id, transfer_key)
    assert list(stripe_fake.stub.transfers) == [retried.id]
    assert gateway.records().transfers == {retried.id: 1200}


def test_a_hang_before_the_call_ran_is_retryable_and_nothing_was_made(stripe_fake):
    gateway = stripe_fake.gateway(timeout=0.3)
    account = gateway.create_connected_account("w@example.org", "US", key())
    stripe_fake.stub.fail_next("POST", "/v1/transfers", "hang")
    with pytest.raises(GatewayError) as lost:
        gateway.create_transfer(1200, "USD", account.id, key())
    assert lost.value.retryable is True
    assert stripe_fake.stub.transfers == {}


def test_an_unreachable_processor_is_retryable():
    gateway = StripeGateway(
        SECRET_KEY,
        api_base=f"http://127.0.0.1:{free_port()}",
        timeout=0.5,
        connect_timeout=0.5,
        max_network_retries=0,
    )
    with pytest.raises(GatewayError) as failed:
        gateway.create_payment_intent(100, "USD", {}, key())
    assert failed.value.retryable is True


def test_refusals_are_not_retryable(stripe_fake):
    gateway = stripe_fake.gateway()
    stripe_fake.stub.fail_next(
        "POST",
        "/v1/payment_intents",
        "error",
        status=402,
        error={"type": "card_error", "code": "card_declined", "message": "Declined."},
    )
    with pytest.raises(GatewayError) as declined:
        gateway.create_payment_intent(100, "USD", {}, key())
    assert (declined.value.retryable, declined.value.code) == (False, "card_declined")

    with pytest.raises(GatewayError) as unknown:
        gateway.retrieve_account("acct_nobody")
    assert unknown.value.retryable is False and unknown.value.http_status == 404

    with pytest.raises(GatewayError) as bad_key:
        StripeGateway("rk_wrong", api_base=stripe_fake.base).retrieve_account("acct_x")
    assert bad_key.value.retryable is False and bad_key.value.http_status == 401


def test_a_key_reused_with_other_parameters_is_refused(stripe_fake):
    gateway = stripe_fake.gateway()
    account = gateway.create_connected_account("w@example.org", "US", key())
    transfer_key = key()
    gateway.create_transfer(100, "USD", account.id, transfer_key)
    with pytest.raises(GatewayError) as refused:
        gateway.create_transfer(999, "USD", account.id, transfer_key)
    assert refused.value.retryable is False
    assert len(stripe_fake.stub.transfers) == 1


def test_a_rate_limit_is_retryable(stripe_fake):
    gateway = stripe_fake.gateway()
    stripe_fake.stub.fail_next("GET", "/v1/accounts/", "error", status=429, error={})
    with pytest.raises(GatewayError) as limited:
        gateway.retrieve_account("acct_any")
    assert limited.value.retryable is True


def test_keys_longer_than_stripe_allows_are_hashed_stably(stripe_fake):
    gateway = stripe_fake.gateway()
    long_key = "fund:" + "k" * 400
    first = gateway.create_payment_intent(100, "USD", {}, long_key)
    assert gateway.create_payment_intent(100, "USD", {}, long_key).id == first.id


def test_the_stripe_client_never_aims_at_stripe_itself(stripe_fake):
    gateway = stripe_fake.gateway()
    import stripe

    assert gateway.client._requestor._options.base_addresses["api"] == stripe_fake.base
    assert stripe.api_base == stripe.DEFAULT_API_BASE  # the SDK's globals are left alone
