"""Migrations walk both ways: every revision's upgrade, then its downgrade, then its upgrade again,
on SQLite and PostgreSQL, from an empty database; the schema after the walk is the one a plain
upgrade gives."""
from __future__ import annotations

import uuid

import pytest
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from parking import MIGRATIONS_DIR, create_app
from parking.extensions import db

from .conftest import POSTGRES_URL, _postgres_reachable


@pytest.fixture
def empty_url(backend, tmp_path):
    """An empty database of the backend (no schema at all), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    skip = _postgres_reachable()
    if skip:
        pytest.skip(skip)
    name = f"parking_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def schema() -> dict:
    """Tables with their columns and indexes, as the database reports them."""
    inspector = inspect(db.engine)
    return {
        table: (sorted(c["name"] for c in inspector.get_columns(table)),
                sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)))
        for table in sorted(inspector.get_table_names())
    }


def test_every_migration_downgrades_and_upgrades_again(empty_url):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": empty_url})
    directory = str(MIGRATIONS_DIR)
    revisions = list(reversed(list(ScriptDirectory(directory).walk_revisions())))  # base first
    assert revisions, "no migrations found"
    with app.app_context():
        assert set(schema()) == set()
        for revision in revisions:
            upgrade(directory=directory, revision=revision.revision)
            after_upgrade = schema()
            downgrade(directory=directory, revision=revision.down_revision or "base")
            if revision.down_revision is None:
                assert set(schema()) <= {"alembic_version"}, schema()
            upgrade(directory=directory, revision=revision.revision)
            assert schema() == after_upgrade, revision.revision
        walked = schema()
        downgrade(directory=directory, revision="base")
        assert set(schema()) <= {"alembic_version"}
        upgrade(directory=directory)
        assert schema() == walked
        assert {"lots", "bays", "readings", "hourly_utilization", "rollup_dirty"} <= set(walked)
        db.engine.dispose()
