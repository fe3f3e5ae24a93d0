"""The time partitions of the history tables on PostgreSQL (migration 9b2d1e3f4a50).

This module owns the partitions' names, their ranges and their life: `readings` has one partition
per UTC day (`readings_pYYYYMMDD`, [midnight, next midnight) in Unix seconds) and `bay_runs` one
per UTC month (`bay_runs_pYYYYMM`), each table a `_default` partition for rows outside those
(late readings for a day whose partition is gone or not made yet). It makes the partitions a time
range needs (`ensure_partitions`; the scheduler keeps today and the next week made, `ensure_ahead`),
moving whatever the default partition holds for a new one into it, lists the raw partitions wholly
older than a cutoff, and locks and drops one (what parking.compaction does to a day it has folded).

SQLite has no partitioning: `is_partitioned` is False there (and on a PostgreSQL database not yet
migrated), `ensure_partitions` does nothing, and compaction deletes rows instead.

Every statement runs in the caller's session and transaction; the caller commits. Identifiers
are this module's own format or come from pg_catalog, and are quoted all the same.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

DAY = 86400
AHEAD_DAYS = 7  # partitions kept made beyond today: a week of missed scheduler runs is harmless
LOCK_TIMEOUT = 5.0  # seconds a partition lock may wait before the transaction gives up
_EPOCH = dt.date(1970, 1, 1)
_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)")
_NAME = re.compile(r"(readings_p\d{8}|bay_runs_p\d{6}|readings_default|bay_runs_default)")


@dataclass(frozen=True)
class _Family:
    """A partitioned history table: its name and the period of its partitions."""

    table: str
    period: str  # "day" or "month"

    @property
    def default(self) -> str:
        """The name of its default partition."""
        return f"{self.table}_default"


RAW = _Family("readings", "day")
RUNS = _Family("bay_runs", "month")
FAMILIES = (RAW, RUNS)


def is_partitioned(session: Session) -> bool:
    """Whether the database is PostgreSQL and `readings` is a partitioned table there."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    kind = session.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass('readings')")).scalar()
    return kind == "p"


def ensure_partitions(session: Session, start: float, end: float) -> list[str]:
    """Create the daily readings and monthly bay_runs partitions covering [start, end) that do not
    exist yet; returns their names. Rows the default partition holds for one are moved into it."""
    if not is_partitioned(session) or end <= start:
        return []
    made = []
    for family in FAMILIES:
        existing = _partitions_of(session, family.table)
        taken = {name for name, _, _ in existing}
        for name, lo, hi in _periods(family, start, end):
            if name in taken or any(lo < h and l < hi for _, l, h in existing):
                continue  # made already (or covered by a partition of another shape)
            if _create(session, family, name, lo, hi):
                made.append(name)
    return made


def ensure_ahead(session: Session, now: float | None = None, days: int = AHEAD_DAYS) -> list[str]:
    """The partitions of today (UTC) to `days` ahead (the scheduler's daily job, init-db)."""
    now = time.time() if now is None else now
    today = now // DAY * DAY
    return ensure_partitions(session, today, today + (days + 1) * DAY)


def raw_partitions_before(session: Session, cutoff: float) -> list[tuple[str, float, float]]:
    """(name, lo, hi) of the readings partitions whose whole range lies before `cutoff`, oldest first."""
    if not is_partitioned(session):
        return []
    return [p for p in _partitions_of(session, RAW.table) if p[2] <= cutoff]


def lock_partition(session: Session, name: str, timeout: float = LOCK_TIMEOUT) -> None:
    """Lock one partition SHARE until the transaction ends, waiting at most `timeout` s.

    No insert (a late reading) can then slip in between reading the partition and dropping it,
    while reports over that day go on reading it (the drop takes it whole only at the end); a
    lock that cannot be had in time raises (LockNotAvailable) and the caller rolls back."""
    _check_partition(session, name)
    with _lock_timeout(session, timeout):
        session.execute(text(f"LOCK TABLE {_quote(session, name)} IN SHARE MODE"))


def drop_partition(session: Session, name: str, timeout: float = LOCK_TIMEOUT) -> None:
    """Drop one (non-default) partition and its rows, waiting at most `timeout` s for the locks.

    PostgreSQL also takes its parent ACCESS EXCLUSIVE for this, for the rest of the transaction:
    the caller commits soon after. A reader already holding the parent and waiting for a locked
    partition makes this a deadlock, which PostgreSQL resolves by failing one side; the caller
    rolls back and tries again later, nothing lost."""
    parent = _check_partition(session, name)
    if name == f"{parent}_default":
        raise ValueError(f"{name} is the default partition of {parent}: it is never dropped")
    with _lock_timeout(session, timeout):
        session.execute(text(f"DROP TABLE {_quote(session, name)}"))


def partition_name(table: str, instant: float) -> str:
    """The name of the partition of `table` ("readings" or "bay_runs") made for `instant` (Unix seconds)."""
    family = next(f for f in FAMILIES if f.table == table)
    day = _EPOCH + dt.timedelta(days=int(instant // DAY))
    return f"{table}_p{day:%Y%m%d}" if family.period == "day" else f"{table}_p{day:%Y%m}"


def not_a_partition(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's `include_object` for autogenerate: leave out the partitions made here and their
    indexes (the models know only the parents), which it would otherwise propose to drop."""
    table = obj.table.name if type_ == "index" else name
    return not (reflected and compare_to is None and type_ in ("table", "index") and _NAME.fullmatch(table or ""))


def _periods(family: _Family, start: float, end: float) -> list[tuple[str, float, float]]:
    """(name, lo, hi) of the family's periods overlapping [start, end), oldest first."""
    out = []
    day = _EPOCH + dt.timedelta(days=int(start // DAY))
    if family.period == "month":
        day = day.replace(day=1)
    while _seconds(day) < end:
        after = day + dt.timedelta(days=1) if family.period == "day" else (day + dt.timedelta(days=32)).replace(day=1)
        out.append((partition_name(family.table, _seconds(day)), _seconds(day), _seconds(after)))
        day = after
    return out


def _seconds(day: dt.date) -> float:
    """Unix seconds of a UTC date's midnight."""
    return float((day - _EPOCH).days * DAY)


def _create(session: Session, family: _Family, name: str, lo: float, hi: float) -> bool:
    """Make one partition, moving into it what the default partition holds for its range; False
    when another process made it first.

    CREATE ... PARTITION OF would refuse while the default holds such rows, so the table is made
    alone, filled, then attached; the default stays locked meanwhile, so that no insert puts a
    row of the range there before the attach checks it holds none. The lock also makes two
    processes making the same partition (init-db beside the scheduler's job) take turns."""
    table, new, default = (_quote(session, n) for n in (family.table, name, family.default))
    with _lock_timeout(session, LOCK_TIMEOUT):
        session.execute(text(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE"))
    if session.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
        return False  # made by the transaction we waited for
    session.execute(text(f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS)"))
    bounds = f"ts >= {lo!r} AND ts < {hi!r}"
    session.execute(text(f"WITH moved AS (DELETE FROM {default} WHERE {bounds} RETURNING *) "
                         f"INSERT INTO {new} SELECT * FROM moved"))
    session.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {new} FOR VALUES FROM ({lo!r}) TO ({hi!r})"))
    return True


def _partitions_of(session: Session, table: str) -> list[tuple[str, float, float]]:
    """(name, lo, hi) of a table's range partitions (not its default), oldest first, from pg_catalog."""
    rows = session.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:table)"), {"table": table})
    found = []
    for name, bound in rows:
        match = _BOUNDS.match(bound or "")
        if match:  # DEFAULT, or MINVALUE/MAXVALUE bounds (never made here), are left out
            found.append((name, float(match.group(1)), float(match.group(2))))
    return sorted(found, key=lambda p: p[1])


def _check_partition(session: Session, name: str) -> str:
    """The parent history table of partition `name`; ValueError when it is none of theirs."""
    parent = session.execute(text(
        "SELECT p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = :name AND n.nspname = current_schema()"), {"name": name}).scalar()
    if parent not in {f.table for f in FAMILIES}:
        raise ValueError(f"{name!r} is not a partition of a history table")
    return parent


class _lock_timeout:
    """`lock_timeout` set to `seconds` for the statements inside, then back to what it was."""

    def __init__(self, session: Session, seconds: float):
        self.session, self.seconds = session, seconds

    def __enter__(self):
        self.before = self.session.execute(text("SELECT current_setting('lock_timeout')")).scalar()
        self._set(f"{int(self.seconds * 1000)}ms")

    def __exit__(self, kind, *_):
        if kind is None:  # after an error the transaction is aborted: its end resets the setting
            self._set(self.before)
        return False

    def _set(self, value: str) -> None:
        self.session.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": value})


def _quote(session: Session, name: str) -> str:
    """An identifier quoted by the dialect's rules."""
    return session.get_bind().dialect.identifier_preparer.quote(name)
