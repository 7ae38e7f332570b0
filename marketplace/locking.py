"""Row locks that work whatever a model eagerly joins (PostgreSQL refuses FOR UPDATE on the
nullable side of an outer join, and eager `joined` relationships add one: the lock names
the model's own table only)."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import inspect, select

from marketplace.database import db

M = TypeVar("M")


def get_for_update(model: type[M], row_id: int) -> M | None:
    """Lock the row (SELECT … FOR UPDATE OF its table; a no-op on SQLite) and return it
    freshly loaded, in one statement."""
    key = inspect(model).primary_key[0]
    return db.session.scalar(
        select(model)
        .where(key == row_id)
        .with_for_update(of=model)
        .execution_options(populate_existing=True)
    )


def lock(instance: M) -> M:
    """Lock an already loaded row and refresh it from the database."""
    return get_for_update(type(instance), inspect(instance).identity[0])
