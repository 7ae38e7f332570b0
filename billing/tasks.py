"""Billing background jobs (RQ). Each takes ids or nothing and calls a service."""

from __future__ import annotations

from billing import payouts, services, webhooks
from marketplace.background import register_periodic


def mature_earnings() -> int:
    """Make earnings whose QA window has closed available for payout."""
    total = 0
    while (count := services.mature_earnings()) > 0:
        total += count
    return total


def run_payouts() -> dict:
    """Pay out available balances that reached the minimum; retry pending payouts first."""
    return payouts.run_payouts().as_dict()


def apply_processor_event(event_id: str) -> str | None:
    """Apply one stored webhook event (enqueued by the webhook route after it commits)."""
    return webhooks.apply_event(event_id)


def retry_processor_events() -> int:
    """Apply webhook events that arrived before the rows they are about (see billing.webhooks)."""
    return webhooks.retry_waiting_events()


register_periodic("billing.tasks.mature_earnings", 600)
register_periodic("billing.tasks.retry_processor_events", 300)
register_periodic("billing.tasks.run_payouts", 3600)
