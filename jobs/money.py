"""Where the task loop meets the ledger. Leasing calls `place_hold`, giving a task back or
losing a lease calls `release_hold`, and an accepted judgment calls `settle_judgment` — each
inside the same transaction as the change that causes it.

Until the billing issue lands these record nothing; the call sites are final.
"""

from __future__ import annotations

from jobs.models import Assignment, Job


def place_hold(job: Job, assignment: Assignment) -> None:
    """Reserve one judgment's price on the job's escrow for a new lease."""


def release_hold(assignment: Assignment) -> None:
    """Free the hold of a lease that was released, expired or lost eligibility."""


def settle_judgment(assignment: Assignment) -> None:
    """Turn an accepted judgment's hold into the worker's pending earnings."""
