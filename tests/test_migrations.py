"""Migrations walk both ways: every revision's upgrade, then its downgrade, then its upgrade again,
on SQLite and PostgreSQL, from an empty database; the schema after the walk is the one a plain
upgrade gives. A PostgreSQL partition is compared through its parent (which ones exist depends on
the day and the data: tests/test_partitions.py)."""
from __future__ import annotations


import pytest
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from parking import MIGRATIONS_DIR, create_app
from parking.extensions import db

from .conftest import empty_postgres_database


@pytest.fixture
def empty_url(backend, tmp_path):
    """An empty database of the backend (no schema at all), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with empty_postgres_database("parking_migrations") as url:
        yield url


def partitions() -> set[str]:
    """Tables that are partitions of another (PostgreSQL's declarative partitioning)."""
    if db.engine.dialect.name != "postgresql":
        return set()
    with db.engine.connect() as conn:
        return set(conn.scalars(text("SELECT relname FROM pg_class WHERE relispartition AND relkind IN ('r', 'p')")))


def schema() -> dict:
    """Tables (not partitions) with their columns, primary keys and indexes, as the database reports them."""
    inspector = inspect(db.engine)
    parts = partitions()
    return {
        table: (sorted(c["name"] for c in inspector.get_columns(table)),
                inspector.get_pk_constraint(table)["constrained_columns"],
                sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)))
        for table in sorted(inspector.get_table_names()) if table not in parts
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
