"""A worker's payout account: the processor's connected account that payouts go to.

Connecting creates it at the processor (once per worker and country, by idempotency key)
and hands back an onboarding link; it is ready when the processor says it can receive
payouts (here, on refresh, or through the account.updated webhook).
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from billing.gateway import GatewayError, gateway
from billing.models import PayoutAccount, PayoutAccountStatus
from marketplace import audit, clock
from marketplace.database import db
from marketplace.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed

log = logging.getLogger(__name__)


def open_payout_account(
    worker_id: int, email: str, country: str, return_url: str, refresh_url: str
) -> tuple[PayoutAccount, bool]:
    """Connect the worker's payout account at the processor (once) and attach a fresh
    onboarding link. Returns (account, created). Commits."""
    found = _account_of(worker_id)
    if found is not None and found.country != country:
        raise ValidationFailed(
            f"Your payout account is already registered in {found.country}.",
            errors={"country": [f"Your payout account's country is {found.country}."]},
        )
    created = False
    if found is None:
        try:
            # One account per worker and country: a retry after a lost answer gets the same
            # one back, and a worker whose first country was refused can choose another.
            connected = gateway().create_connected_account(
                email, country, idempotency_key=f"connect-account-worker-{worker_id}-{country}"
            )
        except GatewayError as error:
            raise _gateway_problem(error) from None
        now = clock.now()
        found = PayoutAccount(
            worker_id=worker_id,
            processor_account_id=connected.id,
            country=country,
            status=PayoutAccountStatus.READY
            if connected.payouts_enabled
            else PayoutAccountStatus.ONBOARDING,
            created_at=now,
            updated_at=now,
        )
        db.session.add(found)
        try:
            db.session.flush()
        except IntegrityError:
            # A concurrent request won; the same idempotency key gave it the same account.
            db.session.rollback()
            found = _account_of(worker_id)
            if found is None:
                raise Conflict("The processor's account is already connected elsewhere.") from None
        else:
            created = True
            audit.record(
                "billing.payout_account_opened",
                "payout_account",
                found.id,
                detail={"worker_id": worker_id, "country": country, "status": found.status.value},
            )
            db.session.commit()
    try:
        found.onboarding_url = gateway().account_link(
            found.processor_account_id, return_url=return_url, refresh_url=refresh_url
        )
    except GatewayError as error:
        raise _gateway_problem(error) from None
    return found, created


def get_payout_account(worker_id: int) -> PayoutAccount:
    """The worker's payout account, its readiness refreshed from the processor while it is
    still onboarding (the stored status stands when the processor cannot be asked)."""
    found = _account_of(worker_id)
    if found is None:
        raise NotFound("You have not connected a payout account yet.")
    if found.status == PayoutAccountStatus.ONBOARDING:
        try:
            remote = gateway().retrieve_account(found.processor_account_id)
        except GatewayError as error:
            log.warning("could not refresh payout account %s: %s", found.id, error)
        else:
            if mark_payout_account_in_txn(found.processor_account_id, remote.payouts_enabled):
                db.session.commit()
    return found


def mark_payout_account_in_txn(
    processor_account_id: str, payouts_enabled: bool
) -> PayoutAccount | None:
    """Record what the processor says about a connected account (account.updated): ready
    when it can receive payouts; a ready account that no longer can becomes restricted.
    None when the account is not ours. Does not commit."""
    found = db.session.scalar(
        select(PayoutAccount)
        .where(PayoutAccount.processor_account_id == processor_account_id)
        .with_for_update()
    )
    if found is None:
        return None
    if payouts_enabled:
        status = PayoutAccountStatus.READY
    elif found.status == PayoutAccountStatus.READY:
        status = PayoutAccountStatus.RESTRICTED
    else:
        status = found.status
    if status != found.status:
        audit.record(
            "billing.payout_account_status",
            "payout_account",
            found.id,
            detail={"worker_id": found.worker_id, "from": found.status.value, "to": status.value},
        )
        found.status = status
        found.updated_at = clock.now()
    return found


def mark_payout_account(processor_account_id: str, payouts_enabled: bool) -> PayoutAccount | None:
    """`mark_payout_account_in_txn`, committed."""
    found = mark_payout_account_in_txn(processor_account_id, payouts_enabled)
    db.session.commit()
    return found


def _account_of(worker_id: int) -> PayoutAccount | None:
    return db.session.scalar(select(PayoutAccount).where(PayoutAccount.worker_id == worker_id))


def _gateway_problem(error: GatewayError):
    if error.retryable:
        return ServiceUnavailable(f"The payment processor is unavailable: {error}")
    return ValidationFailed(
        f"The payment processor refused: {error}", errors={"country": [str(error)]}
    )
