"""Reactions to account events: a worker sign-up opens a worker profile."""

from __future__ import annotations

import secrets

from marketplace import clock
from marketplace.accounts.models import AccountType, User
from marketplace.accounts.signals import user_signed_up
from marketplace.database import db
from workers.models import WorkerProfile, WorkerStatus


def new_pseudonym() -> str:
    return "w_" + secrets.token_hex(8)


@user_signed_up.connect
def open_worker_profile(user: User, *, account_type: AccountType, **_kwargs) -> None:
    if account_type != AccountType.WORKER:
        return
    now = clock.now()
    db.session.add(
        WorkerProfile(
            user_id=user.id,
            pseudonym=new_pseudonym(),
            display_name=user.name,
            status=WorkerStatus.APPLIED,
            status_changed_at=now,
            languages=[],
            availability={},
            claimed_skills=[],
            created_at=now,
        )
    )
