"""partition the history tables by time (PostgreSQL): readings by UTC day, bay_runs by month

Revision ID: 9b2d1e3f4a50
Revises: 8a1c0d2e3f40
Create Date: 2026-12-01 15:00:00

On PostgreSQL `readings` becomes a table partitioned BY RANGE (ts) with one partition per UTC
day (`readings_pYYYYMMDD`, bounds in Unix seconds) and `readings_default` for the rest, and
`bay_runs` the same by month (`bay_runs_pYYYYMM`, `bay_runs_default`): so that retention drops a
day's partition instead of deleting its rows (parking.partitions, parking.compaction). The data
stays: each table is renamed aside, its partitioned successor made LIKE it (same columns, types
and defaults, so the id sequence keeps counting), partitions made for every day (month) that holds
rows and for the days just ahead, the rows copied with their ids, then the keys and indexes built
(once, after the copy: faster than keeping them up to date row by row) and the old table dropped.
The primary keys become (id, ts): a partitioned table's unique keys must hold the partition key.
Downgrade copies the rows back into plain tables. SQLite has no partitioning: both are no-ops.

This migration is frozen code: it carries its own copy of the naming rules rather than importing
parking.partitions, which may change after it.
"""
import datetime as dt
import time

from alembic import op
from sqlalchemy import text


# revision identifiers, used by Alembic.
revision = '9b2d1e3f4a50'
down_revision = '8a1c0d2e3f40'
branch_labels = None
depends_on = None

DAY = 86400
AHEAD_DAYS = 7  # partitions made beyond the data: today and the next week, as parking.partitions keeps them

# Per table: the period of its partitions, its keys and indexes as the models declare them
# (constraint and index names as the earlier migrations gave them).
TABLES = {
    'readings': {
        'period': 'day',
        'constraints': [('uq_readings_bay_ts_state', 'UNIQUE (bay_id, ts, occupied)'),
                        ('readings_bay_id_fkey', 'FOREIGN KEY (bay_id) REFERENCES bays (id)')],
        'indexes': [],
    },
    'bay_runs': {
        'period': 'month',
        'constraints': [('bay_runs_bay_id_fkey', 'FOREIGN KEY (bay_id) REFERENCES bays (id)')],
        'indexes': [('ix_bay_runs_bay_ts', '(bay_id, ts)')],
    },
}


def _q(name):
    """The identifier quoted for PostgreSQL (names here are the migration's own)."""
    return op.get_bind().dialect.identifier_preparer.quote(name)


def _utc(day_number):
    """The UTC date of a day number (Unix seconds // 86400)."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=day_number)


def _epoch(date):
    """Unix seconds of a UTC date's midnight."""
    return (date - dt.date(1970, 1, 1)).days * DAY


def _partitions(table, period, day_numbers):
    """(name, lo, hi) of the partitions covering the given UTC days, oldest first."""
    found = {}
    for n in day_numbers:
        day = _utc(n)
        if period == 'day':
            found[day] = (f'{table}_p{day:%Y%m%d}', _epoch(day), _epoch(day) + DAY)
        else:
            first = day.replace(day=1)
            after = (first + dt.timedelta(days=32)).replace(day=1)
            found[first] = (f'{table}_p{first:%Y%m}', _epoch(first), _epoch(after))
    return [found[k] for k in sorted(found)]


def _partition(table, spec):
    """Replace `table` by a partitioned table holding the same rows, ids and keys."""
    bind = op.get_bind()
    old = f'{table}_unpartitioned'
    op.execute(f'ALTER TABLE {_q(table)} RENAME TO {_q(old)}')
    # Free the names for the successor; the old table is dropped at the end anyway.
    for name, _ in [(f'{table}_pkey', None)] + spec['constraints']:
        op.execute(f'ALTER TABLE {_q(old)} DROP CONSTRAINT {_q(name)}')
    for name, _ in spec['indexes']:
        op.execute(f'DROP INDEX {_q(name)}')
    op.execute(f'CREATE TABLE {_q(table)} (LIKE {_q(old)} INCLUDING DEFAULTS) PARTITION BY RANGE (ts)')
    # The id default (nextval of the sequence) came along with LIKE; the sequence must now belong
    # to the new column, or dropping the old table would drop it.
    op.execute(f'ALTER SEQUENCE {_q(table + "_id_seq")} OWNED BY {_q(table)}.id')
    days = [n for (n,) in bind.execute(text(f'SELECT DISTINCT floor(ts / {DAY})::bigint FROM {_q(old)}'))]
    today = int(time.time() // DAY)
    days += range(today, today + AHEAD_DAYS + 1)
    for name, lo, hi in _partitions(table, spec['period'], days):
        op.execute(f'CREATE TABLE {_q(name)} PARTITION OF {_q(table)} FOR VALUES FROM ({lo}) TO ({hi})')
    op.execute(f'CREATE TABLE {_q(table + "_default")} PARTITION OF {_q(table)} DEFAULT')
    op.execute(f'INSERT INTO {_q(table)} SELECT * FROM {_q(old)}')
    op.execute(f'ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(table + "_pkey")} PRIMARY KEY (id, ts)')
    for name, definition in spec['constraints']:
        op.execute(f'ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition}')
    for name, columns in spec['indexes']:
        op.execute(f'CREATE INDEX {_q(name)} ON {_q(table)} {columns}')
    op.execute(f'DROP TABLE {_q(old)}')
    op.execute(f'ANALYZE {_q(table)}')


def _unpartition(table, spec):
    """Replace the partitioned `table` by a plain table holding the same rows, ids and keys."""
    old = f'{table}_partitioned'
    op.execute(f'ALTER TABLE {_q(table)} RENAME TO {_q(old)}')
    # Dropping the parent's constraints and indexes drops those of its partitions with them.
    for name, _ in [(f'{table}_pkey', None)] + spec['constraints']:
        op.execute(f'ALTER TABLE {_q(old)} DROP CONSTRAINT {_q(name)}')
    for name, _ in spec['indexes']:
        op.execute(f'DROP INDEX {_q(name)}')
    op.execute(f'CREATE TABLE {_q(table)} (LIKE {_q(old)} INCLUDING DEFAULTS)')
    op.execute(f'ALTER SEQUENCE {_q(table + "_id_seq")} OWNED BY {_q(table)}.id')
    op.execute(f'INSERT INTO {_q(table)} SELECT * FROM {_q(old)}')
    op.execute(f'ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(table + "_pkey")} PRIMARY KEY (id)')
    for name, definition in spec['constraints']:
        op.execute(f'ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition}')
    for name, columns in spec['indexes']:
        op.execute(f'CREATE INDEX {_q(name)} ON {_q(table)} {columns}')
    op.execute(f'DROP TABLE {_q(old)}')  # its partitions with it
    op.execute(f'ANALYZE {_q(table)}')


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, spec in TABLES.items():
        _partition(table, spec)


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, spec in TABLES.items():
        _unpartition(table, spec)
