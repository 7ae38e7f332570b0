"""Reactions to account events: a worker sign-up opens a worker profile."""

from __future__ import annotations

from marketplace import clock
from marketplace.accounts.models import AccountType, User
from marketplace.accounts.signals import user_signed_up
from marketplace.database import db
from workers.models import WorkerProfile, WorkerStatus


@user_signed_up.connect
def open_worker_profile(user: User, *, account_type: AccountType, **_kwargs) -> None:
    if account_type != AccountType.WORKER:
        return
    db.session.add(
        WorkerProfile(
            user_id=user.id,
            display_name=user.name,
            status=WorkerStatus.APPLIED,
            created_at=clock.now(),
        )
    )
