"""Test wiring: one database per run, built by the migrations; tables emptied after each test.

TEST_DATABASE_URL names the database (PostgreSQL in CI); without it a SQLite file in a
temporary folder is used. REDIS_URL, when set, is used for rate limits and readiness; jobs
still run inline unless a test asks for RQ (see tests/marketplace/test_background.py).

Tests use real commits (services commit, background jobs run after commit, concurrency tests
run threads), so isolation is by emptying every table after each test rather than by
rolling back one outer transaction.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from marketplace import clock, create_app, passwords, ratelimit
from marketplace.database import db
from tests.helpers import Api

_TMP = tempfile.mkdtemp(prefix="crowdline-tests-")

passwords.use_cheap_hashing()


# Under pytest-xdist (`make test` runs two workers) each worker gets a database and a Redis
# database of its own, so truncation, rate limits and queues never cross between them.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(_WORKER[2:]) if _WORKER.startswith("gw") else None


def _per_worker_urls() -> None:
    if _WORKER_INDEX is None:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = os.environ.get("TEST_DATABASE_URL")
    if url and url.startswith("postgresql"):
        parsed = make_url(url)
        mine = parsed.set(database=f"{parsed.database}_{_WORKER}")
        server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {mine.database} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {mine.database}"))
        server.dispose()
        os.environ["TEST_DATABASE_URL"] = mine.render_as_string(hide_password=False)
    redis = os.environ.get("REDIS_URL")
    if redis:
        base, _, _index = redis.rstrip("/").rpartition("/")
        os.environ["REDIS_URL"] = f"{base}/{_WORKER_INDEX + 1}"


_per_worker_urls()


def database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{Path(_TMP) / 'test.db'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, so that a worker starts on them while the other takes the rest."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def app_settings(**overrides) -> dict:
    """The settings of the tests' apps (create_app), with `overrides`."""
    settings = {
        "database_url": database_url(),
        "redis_url": os.environ.get("REDIS_URL") or None,
        "jobs_inline": True,
        "testing": True,
        "secret_key": "test-secret",
    }
    settings.update(overrides)
    return settings


def build_app(**overrides) -> Flask:
    app = create_app(app_settings(**overrides))
    app.config["JOBS_RAISE_INLINE"] = True
    return app


def _reset_schema(app: Flask) -> None:
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            db.drop_all()
            with db.engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    from flask_migrate import upgrade

    app = build_app()
    _reset_schema(app)
    with app.app_context():
        upgrade()  # the migrations build the schema, so they are tested on every run
        db.engine.dispose()
    yield app


def truncate_all(app: Flask) -> None:
    from billing import ledger

    ledger.forget_known_accounts()  # their ids start again at 1
    with app.app_context():
        db.session.remove()
        tables = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            if db.engine.dialect.name == "postgresql":
                # TRUNCATE costs the same on an empty table as on a full one; a test touches
                # a few tables, so find those first (one query) and truncate only them.
                probes = ", ".join(
                    f"CASE WHEN EXISTS (SELECT 1 FROM {name}) THEN '{name}' END" for name in tables
                )
                used = [n for n in conn.execute(text(f"SELECT {probes}")).one() if n]
                if used:
                    conn.execute(text(f"TRUNCATE {', '.join(used)} RESTART IDENTITY CASCADE"))
            else:
                for name in reversed(tables):
                    conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(autouse=True)
def _clean(app: Flask) -> Iterator[None]:
    yield
    truncate_all(app)
    ratelimit.reset()
    if app.config["CROWDLINE"].redis_url:
        from marketplace.background import redis_connection

        with app.app_context():
            redis = redis_connection()
            for key in redis.scan_iter("crowdline:rl:*"):
                redis.delete(key)


@pytest.fixture
def manual_clock(app: Flask) -> Iterator[clock.ManualClock]:
    """A clock the test moves by hand; installed for the duration of the test."""
    previous = clock.current.__wrapped__(app) if hasattr(clock.current, "__wrapped__") else None
    fake = clock.ManualClock()
    saved = app.extensions["crowdline.clock"]
    clock.install(app, fake)
    yield fake
    clock.install(app, saved)
    del previous


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
def db_session(app: Flask):
    """A session of the test's own, for arranging rows and asserting on what was committed.

    It is not the app's scoped session and holds no app context open, so requests made by
    the test client run exactly as they would in production. Every query re-reads rows
    (populate_existing), so objects never show stale values after a request changed them.
    """
    with app.app_context():
        engine = db.engine
    # Autocommit: the test's own reads never hold a transaction (or SQLite's write lock)
    # open while the app serves its requests.
    session = Session(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=True)

    @event.listens_for(session, "do_orm_execute")
    def _always_fresh(state):
        if state.is_select:
            state.update_execution_options(populate_existing=True)

    yield session
    session.rollback()
    session.close()
