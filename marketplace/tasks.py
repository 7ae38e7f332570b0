"""Platform housekeeping jobs (RQ). Each takes ids or nothing and calls a service."""

from __future__ import annotations

from marketplace import idempotency


def purge_expired_idempotency_records() -> int:
    """Forget idempotency keys past their retention window."""
    return idempotency.purge_expired_records()
