"""Job-loop background jobs (RQ). Each takes ids or nothing and calls a service."""

from __future__ import annotations

from jobs import leasing
from marketplace.background import register_periodic


def expire_leases() -> int:
    """Give back the slots of leases nobody heartbeated in time."""
    return leasing.expire_leases_everywhere()


register_periodic("jobs.tasks.expire_leases", 60)
