"""The SQLAlchemy base, column types and naming conventions shared by every package."""

from __future__ import annotations

import functools
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, BigInteger, DateTime, Engine, Integer, MetaData, TypeDecorator, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names let Alembic alter tables on SQLite (batch mode) and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use marketplace.clock.now()")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL, JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

# BIGINT primary keys on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


# Expression indexes (e.g. `priority DESC`) that Alembic's autogenerate cannot compare
# faithfully; the migrations create them by hand.
HAND_WRITTEN_INDEXES = {"ix_tasks_leasable"}


def include_in_autogenerate(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "index" and name in HAND_WRITTEN_INDEXES)


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: let SQLAlchemy drive transactions, enforce foreign keys, and use WAL."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Any) -> None:
    # Take the write lock up front: SQLite has no row locks, so a transaction that reads and
    # then writes (leasing, idempotency claims, owner checks) must not interleave with another.
    if conn.dialect.name != "sqlite":
        return
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# PostgreSQL's answers to two transactions that cannot both go on: "deadlock detected" (it
# broke a lock-order cycle) and "could not serialize access". Either way the transaction
# that got one changed nothing, and running it again from the start is the remedy.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
RETRY_ATTEMPTS = 3
_jitter = random.Random()  # its own: the crowd simulator seeds the global generator


def is_retryable(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL aborting the transaction to let another one go on."""
    orig = getattr(error, "orig", error)
    return getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_on_conflict(view: Callable) -> Callable:
    """Run a view's transaction again (up to RETRY_ATTEMPTS in all, after a short random
    pause) when PostgreSQL aborted it for a deadlock or a serialization failure. Only for views
    whose whole effect is their database transaction (no calls out, no streamed body); after
    the last attempt the error reaches the handler, which answers 503 with Retry-After."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return view(*args, **kwargs)
            except DBAPIError as error:
                if attempt == RETRY_ATTEMPTS or not is_retryable(error):
                    raise
                db.session.rollback()
                time.sleep(_jitter.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    return wrapper


def insert_or_skip(table: Any):
    """The backend's INSERT for `table` (a model or a Table), which can say ON CONFLICT DO
    NOTHING (PostgreSQL and SQLite spell it alike; SQLAlchemy has one construct per dialect)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    dialect = db.session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def commit_and_keep(*instances: Any) -> None:
    """Commit without expiring what the session has loaded, and keep `instances` in it: a
    request that answers from these objects right after its commit then needs no second
    round of look-ups. Only as a request's last write: its objects are not reloaded."""
    session = db.session()
    session.info.setdefault("kept", []).extend(instances)
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True
