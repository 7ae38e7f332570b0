"""Credential jobs (RQ). Each takes ids or nothing and calls a service."""

from __future__ import annotations

from credentials import clearances
from marketplace.background import register_periodic


def expire_lapsed_attestations() -> int:
    """Mark attestations past their expiry as expired (eligibility never waits for this)."""
    return clearances.expire_lapsed_attestations()


register_periodic("credentials.tasks.expire_lapsed_attestations", 300)
