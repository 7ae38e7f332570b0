"""The migrations are the only way the schema changes: they must go up, down and up again,
and leave exactly the schema the models describe."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, make_url, text

from marketplace.config import _normalise_database_url
from marketplace.database import db
from tests.conftest import build_app, database_url


@pytest.fixture(scope="module")
def scratch_url() -> Iterator[str]:
    """An empty database of its own, on the backend the suite runs on."""
    url = make_url(_normalise_database_url(database_url()))
    if url.get_backend_name() != "postgresql":
        folder = tempfile.mkdtemp(prefix="crowdline-migtest-")
        yield f"sqlite:///{folder}/migrations.db"
        shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"crowdline_migtest_{os.getpid()}"
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


@pytest.fixture(scope="module")
def scratch_app(scratch_url) -> Iterator[Flask]:
    app = build_app(database_url=scratch_url)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _tables(app: Flask) -> set[str]:
    with app.app_context():
        return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def _revision(app: Flask) -> str | None:
    with app.app_context(), db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _head(app: Flask) -> str:
    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config()
        return ScriptDirectory.from_config(config).get_current_head()


def test_there_is_one_head(scratch_app):
    with scratch_app.app_context():
        config = scratch_app.extensions["migrate"].migrate.get_config()
        heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"


def test_upgrade_downgrade_and_upgrade_again(scratch_app):
    model_tables = {t.name for t in db.metadata.sorted_tables}

    with scratch_app.app_context():
        upgrade()
    assert _tables(scratch_app) == model_tables
    assert _revision(scratch_app) == _head(scratch_app)

    with scratch_app.app_context():
        downgrade(revision="base")
    assert _tables(scratch_app) == set()
    assert _revision(scratch_app) is None

    with scratch_app.app_context():
        upgrade()
    assert _tables(scratch_app) == model_tables
    assert _revision(scratch_app) == _head(scratch_app)


def test_the_models_match_the_migrations(scratch_app):
    with scratch_app.app_context():
        upgrade()
        options = dict(scratch_app.extensions["migrate"].configure_args)
        options.pop("process_revision_directives", None)
        options.pop("render_item", None)
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=options)
            differences = compare_metadata(context, db.metadata)
    assert differences == [], (
        "the models and the migrations disagree; write a migration "
        "(`.venv/bin/flask db migrate -m '...'`) for:\n" + "\n".join(repr(d) for d in differences)
    )
