"""Row locks that work whatever a model eagerly joins (PostgreSQL refuses FOR UPDATE on the
nullable side of an outer join, and eager `joined` relationships add one)."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import inspect, select

from marketplace.database import db

M = TypeVar("M")


def get_for_update(model: type[M], row_id: int) -> M | None:
    """Lock the row (SELECT … FOR UPDATE; a no-op on SQLite) and return it freshly loaded."""
    key = inspect(model).primary_key[0]
    locked = db.session.scalar(select(key).where(key == row_id).with_for_update())
    if locked is None:
        return None
    return db.session.get(model, row_id, populate_existing=True)


def lock(instance: M) -> M:
    """Lock an already loaded row and refresh it from the database."""
    return get_for_update(type(instance), inspect(instance).identity[0])
