"""The scopes a bearer token can carry, and who may hold which."""

from __future__ import annotations

SCOPES: dict[str, str] = {
    "account": "Read and change your own account",
    "org:read": "Read your organizations, members and API clients",
    "org:write": "Manage your organizations, members and API clients",
    "tasks": "Lease, heartbeat, release and submit tasks as a worker (the task API)",
    "workforce:read": "Read worker profiles, crowds, skills and clearances you may see",
    "workforce:write": "Manage worker profiles, crowds, assessments and clearances",
    "jobs:read": "Read jobs, progress and results",
    "jobs:write": "Create and manage jobs and their tasks",
    "billing:read": "Read balances, budgets, earnings and statements",
    "billing:write": "Fund jobs, pay bonuses and manage payout accounts",
    "admin": "Platform administration",
}

# What a signed-in person of each account type may hold (a first-party token gets all of it
# unless it asks for less); an OAuth client is further limited to the scopes it registered.
ACCOUNT_SCOPES: dict[str, frozenset[str]] = {
    "worker": frozenset(
        {"account", "tasks", "workforce:read", "workforce:write", "billing:read", "billing:write"}
    ),
    "client": frozenset(
        {
            "account",
            "org:read",
            "org:write",
            "jobs:read",
            "jobs:write",
            "workforce:read",
            "workforce:write",
            "billing:read",
            "billing:write",
        }
    ),
    "vendor": frozenset(
        {
            "account",
            "org:read",
            "org:write",
            "jobs:read",
            "workforce:read",
            "workforce:write",
            "billing:read",
        }
    ),
    "admin": frozenset(SCOPES),
}

# What an organization's service account (client_credentials) may hold, by organization kind.
SERVICE_SCOPES: dict[str, frozenset[str]] = {
    "client": ACCOUNT_SCOPES["client"] - {"account"},
    "vendor": ACCOUNT_SCOPES["vendor"] - {"account"},
    "platform": frozenset(SCOPES) - {"account", "tasks"},
}


def parse(scope: str | None) -> frozenset[str]:
    return frozenset((scope or "").split())


def render(scopes: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(scopes))


def unknown(scopes: frozenset[str]) -> list[str]:
    return sorted(s for s in scopes if s not in SCOPES)
