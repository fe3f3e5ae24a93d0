"""The history tables' time partitions on PostgreSQL (parking/partitions.py, migration 9b2d1e3f4a50):
which partitions exist and hold which rows, what moves out of the default partition, what a
retention drop takes, that the app reads the same answers from partitioned and plain tables, and
that a database with data is migrated both ways with every row. SQLite has no partitions."""
from __future__ import annotations

import datetime as dt
import random
import time

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from parking import MIGRATIONS_DIR, create_app
from parking.dbutil import Statements
from parking.extensions import db
from parking.ingest import SensorReading, _insert_readings, ingest
from parking.partitions import (
    drop_partition,
    ensure_ahead,
    ensure_partitions,
    is_partitioned,
    lock_partition,
    partition_name,
    raw_partitions_before,
)

from .conftest import CITY_FILE, empty_postgres_database

DAY = 86400
BEFORE = "8a1c0d2e3f40"  # the last revision with plain history tables


def utc(*args) -> float:
    """Unix seconds of a UTC date and time."""
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture
def pg_app():
    """The app on a PostgreSQL database of its own, migrated to head, with the test city."""
    with empty_postgres_database("partitions") as url:
        app = _app(url)
        with app.app_context():
            from parking.cli import init_db
            from parking.lots import import_lot_file

            init_db()
            import_lot_file(CITY_FILE, "Europe/Berlin")
            yield app
            db.session.remove()
            db.engine.dispose()


def _app(url: str):
    """The app on `url`, as the test suite configures it."""
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "STALE_AFTER": 1800,
                       "SENSOR_AUTH": "none", "LOTS_SNAPSHOT_SECONDS": 0, "ADMIN_TOKEN": None})


def _partitions(table: str) -> dict[str, str]:
    """Each partition of `table` and its bound, from pg_catalog."""
    rows = db.session.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c"
        " ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)"), {"t": table})
    return dict(rows.all())


def _where(table: str) -> dict[float, str]:
    """Each row's ts and the partition it is stored in."""
    return dict(db.session.execute(text(f"SELECT ts, tableoid::regclass::text FROM {table}")).all())


def _raw(rows: list[tuple[str, float, bool]]) -> None:
    """Insert readings (bay, ts, occupied) the way ingest does, received at their ts."""
    writes = Statements(db.session)
    _insert_readings(writes, [(bay, ts, occ, None, ts) for bay, ts, occ in rows])
    writes.run()


def _run(bay: str, ts: float, last_ts: float, occupied: bool = True, readings: int = 3) -> None:
    """Insert one bay_runs row."""
    db.session.execute(text("INSERT INTO bay_runs (bay_id, ts, last_ts, occupied, readings)"
                            " VALUES (:b, :ts, :last, :o, :n)"),
                       {"b": bay, "ts": ts, "last": last_ts, "o": occupied, "n": readings})


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_has_no_partitions(app):
    assert not is_partitioned(db.session)
    assert ensure_partitions(db.session, utc(2026, 1, 1), utc(2026, 2, 1)) == []
    assert raw_partitions_before(db.session, time.time()) == []


def test_ensure_partitions_makes_days_and_months_once(pg_app):
    assert is_partitioned(db.session)
    made = ensure_partitions(db.session, utc(2026, 1, 30, 12), utc(2026, 2, 2))
    db.session.commit()
    assert made == ["readings_p20260130", "readings_p20260131", "readings_p20260201",
                    "bay_runs_p202601", "bay_runs_p202602"]
    raw = _partitions("readings")
    assert raw["readings_p20260131"] == f"FOR VALUES FROM ('{utc(2026, 1, 31):.0f}') TO ('{utc(2026, 2, 1):.0f}')"
    assert raw["readings_default"] == "DEFAULT"
    assert _partitions("bay_runs")["bay_runs_p202602"] == (
        f"FOR VALUES FROM ('{utc(2026, 2, 1):.0f}') TO ('{utc(2026, 3, 1):.0f}')")
    assert ensure_partitions(db.session, utc(2026, 1, 30, 12), utc(2026, 2, 2)) == []
    # init-db made today and the next week already; so does the scheduler's job, once.
    today = time.time() // DAY * DAY
    assert {partition_name("readings", today + d * DAY) for d in range(8)} <= set(raw)
    assert ensure_ahead(db.session) == []


def test_rows_in_the_default_partition_move_into_their_new_partition(pg_app):
    day = utc(2026, 3, 10)
    _raw([("GAR-001", day + 60, True), ("GAR-001", day + 7200, False), ("GAR-002", day + DAY - 1, True),
          ("GAR-001", day + DAY, True), ("GAR-003", day - 1, False)])  # the next day's and the day before's
    _run("GAR-001", day + 60, day + 3000)
    _run("GAR-002", utc(2026, 4, 1), utc(2026, 4, 1, 2))
    db.session.commit()
    assert set(_where("readings").values()) == {"readings_default"}

    assert ensure_partitions(db.session, day, day + DAY) == ["readings_p20260310", "bay_runs_p202603"]
    db.session.commit()
    assert _where("readings") == {day + 60: "readings_p20260310", day + 7200: "readings_p20260310",
                                  day + DAY - 1: "readings_p20260310", day + DAY: "readings_default",
                                  day - 1: "readings_default"}
    assert _where("bay_runs") == {day + 60: "bay_runs_p202603", utc(2026, 4, 1): "bay_runs_default"}
    # The moved rows keep their keys: a replay of one is still stored once.
    _raw([("GAR-001", day + 60, True)])
    assert db.session.scalar(text("SELECT count(*) FROM readings")) == 5


def test_only_whole_days_before_the_cutoff_are_listed_and_dropped(pg_app):
    first = utc(2026, 3, 10)
    ensure_partitions(db.session, first, first + 4 * DAY)
    _raw([("GAR-001", first + d * DAY + 3600, True) for d in range(4)] + [("GAR-001", first - DAY, False)])
    db.session.commit()
    cutoff = first + 2 * DAY + 3600  # in the middle of the third day
    assert raw_partitions_before(db.session, cutoff) == [
        ("readings_p20260310", first, first + DAY), ("readings_p20260311", first + DAY, first + 2 * DAY)]

    oldest, _, _ = raw_partitions_before(db.session, cutoff)[0]
    lock_partition(db.session, oldest)
    drop_partition(db.session, oldest)
    db.session.commit()
    assert sorted(_where("readings")) == [first - DAY] + [first + d * DAY + 3600 for d in (1, 2, 3)]
    assert [p[0] for p in raw_partitions_before(db.session, cutoff)] == ["readings_p20260311"]
    # A late reading for the dropped day goes to the default partition, which is never dropped.
    _raw([("GAR-002", first + 60, True)])
    assert _where("readings")[first + 60] == "readings_default"
    with pytest.raises(ValueError, match="default"):
        drop_partition(db.session, "readings_default")
    for name in ("bays", "readings", "no_such_table"):
        with pytest.raises(ValueError, match="not a partition"):
            lock_partition(db.session, name)
    db.session.rollback()


def test_autogenerate_sees_no_change_in_a_partitioned_database(pg_app):
    """The models know only the parents: `flask db migrate` must not propose dropping partitions
    (parking/migrations/env.py passes this filter as include_object)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from parking.partitions import not_a_partition

    ensure_partitions(db.session, utc(2026, 3, 1), utc(2026, 3, 3))
    db.session.commit()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": not_a_partition})
        assert compare_metadata(context, db.metadata) == []


def test_two_processes_making_the_same_partitions_take_turns(pg_app):
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy.orm import Session

    other = create_engine(db.engine.url)
    try:
        first = ensure_partitions(db.session, utc(2026, 5, 1), utc(2026, 5, 3))
        with Session(other) as session, ThreadPoolExecutor(1) as pool:
            second = pool.submit(lambda: (ensure_partitions(session, utc(2026, 5, 1), utc(2026, 5, 4)), session.commit()))
            time.sleep(0.3)  # the second waits for the default partition's lock
            assert not second.done()
            db.session.commit()
            made, _ = second.result(timeout=10)
        assert first == ["readings_p20260501", "readings_p20260502", "bay_runs_p202605"]
        assert made == ["readings_p20260503"]
    finally:
        other.dispose()


def test_a_locked_partition_keeps_late_inserts_out_and_the_lock_wait_is_bounded(pg_app):
    day = utc(2026, 3, 10)
    ensure_partitions(db.session, day, day + DAY)
    db.session.commit()
    other = create_engine(db.engine.url)
    try:
        lock_partition(db.session, "readings_p20260310")
        with other.connect() as conn:
            conn.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                conn.execute(text("INSERT INTO readings (bay_id, ts, occupied, received_at)"
                                  " VALUES ('GAR-001', :ts, true, :ts)"), {"ts": day + 60})
        with other.connect() as conn:  # a report over that day reads on while compaction folds it
            conn.execute(text("SET lock_timeout = '300ms'"))
            assert conn.execute(text("SELECT count(*) FROM readings WHERE ts >= :lo AND ts < :hi"),
                                {"lo": day, "hi": day + DAY}).scalar() == 0
        db.session.rollback()

        # The other way round: a transaction holding the partition makes lock_partition give up in time.
        with other.connect() as conn:
            conn.execute(text("INSERT INTO readings (bay_id, ts, occupied, received_at)"
                              " VALUES ('GAR-001', :ts, true, :ts)"), {"ts": day + 120})
            started = time.monotonic()
            with pytest.raises(OperationalError, match="lock timeout"):
                lock_partition(db.session, "readings_p20260310", timeout=0.3)
            assert time.monotonic() - started < 3
            db.session.rollback()
            conn.rollback()
    finally:
        other.dispose()


def test_init_db_makes_the_week_ahead(pg_app):
    from parking.cli import init_db

    ahead = partition_name("bay_runs", time.time() + 7 * DAY)
    db.session.execute(text(f"DROP TABLE {ahead}"))
    db.session.commit()
    init_db()
    assert ahead in _partitions("bay_runs")


def test_the_scheduler_keeps_a_week_ahead_from_its_start(pg_app):
    from parking.jobs import start_scheduler

    today = time.time() // DAY * DAY
    ahead = partition_name("readings", today + 7 * DAY)
    db.session.execute(text(f"DROP TABLE {ahead}"))
    db.session.commit()
    scheduler = start_scheduler(pg_app)
    try:
        deadline = time.monotonic() + 30
        while ahead not in _partitions("readings") and time.monotonic() < deadline:
            db.session.rollback()
            time.sleep(0.1)
        assert ahead in _partitions("readings")
        assert scheduler.scheduler.get_job("partitions").trigger.interval.total_seconds() == DAY
    finally:
        scheduler.shutdown(wait=True)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_has_no_partitions_job(app):
    from parking.jobs import start_scheduler

    scheduler = start_scheduler(app)
    try:
        assert scheduler.scheduler.get_job("partitions") is None
    finally:
        scheduler.shutdown(wait=True)


# ---------------------------------------------------------------- migrating a database with data
NOW = utc(2026, 3, 31, 12)  # "now" for the data below: its readings end a little before


def _history(days: int, seed: int = 7) -> list[SensorReading]:
    """Readings of every GARAGE bay for `days` days before NOW: changes and heartbeats."""
    rng = random.Random(seed)
    out = []
    for b in range(1, 7):
        t, state = NOW - days * DAY + rng.random() * 600, rng.random() < 0.5
        while t < NOW - 3600:
            out.append(SensorReading(f"GAR-{b:03d}", state, round(t, 3), seq=len(out) % 1000))
            t += rng.uniform(300, 1500)
            if rng.random() < 0.4:
                state = not state
    return sorted(out, key=lambda r: r.ts)


def _answers(client) -> dict:
    """What the app says about the GARAGE lot over the data's days: utilization and events."""
    span = "from=2026-03-20&to=2026-04-01"
    util = client.get(f"/api/lots/GARAGE/utilization?{span}")
    events = client.get(f"/api/lots/GARAGE/events.csv?{span}")
    assert util.status_code == 200 and events.status_code == 200
    return {"utilization": util.get_json(), "events": events.get_data(as_text=True)}


def _rows(table: str) -> list[tuple]:
    """Every row of a table, by id."""
    return db.session.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()


def _kind(table: str) -> str:
    """pg_class.relkind of a table: 'p' partitioned, 'r' plain."""
    return db.session.scalar(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table})


def test_a_database_with_data_is_partitioned_and_back_with_every_row():
    from parking.lots import import_lot_file
    from parking.rollup import run_rollup

    directory = str(MIGRATIONS_DIR)
    with empty_postgres_database("partitions_migrate") as url:
        app = _app(url)
        client = app.test_client()
        with app.app_context():
            upgrade(directory=directory, revision=BEFORE)
            import_lot_file(CITY_FILE, "Europe/Berlin")
            ingest(_history(5), now=NOW, received_at=None)
            run_rollup(now=NOW)
            for b, start in enumerate((utc(2026, 2, 27), utc(2026, 3, 2), utc(2026, 3, 25))):
                _run(f"GAR-00{b + 1}", start, start + 5400)
            db.session.commit()
            readings, runs = _rows("readings"), _rows("bay_runs")
            plain = _answers(client)
            db.session.remove()
            assert len(readings) > 500 and len({r.ts // DAY for r in readings}) >= 5

            upgrade(directory=directory)
            assert _kind("readings") == "p" and _kind("bay_runs") == "p"
            assert _rows("readings") == readings and _rows("bay_runs") == runs
            for table in ("readings", "bay_runs"):
                assert all(part == partition_name(table, ts) for ts, part in _where(table).items()), table
            assert db.session.scalar(text("SELECT count(*) FROM readings_default")) == 0
            assert _answers(client) == plain
            db.session.remove()

            # The app's writes: the id sequence goes on, a replay is stored once (ON CONFLICT on
            # the partitioned unique key), and a late reading of a day with no partition is kept.
            late = SensorReading("GAR-001", True, utc(2026, 3, 22, 10))
            stored = ingest([late, SensorReading("GAR-002", False, NOW - 60)], now=NOW, received_at=None)
            assert stored.stored == 2
            _raw([(r.bay_id, r.ts, r.occupied) for r in readings[:50]])
            db.session.commit()
            after = _rows("readings")
            assert after[:len(readings)] == readings and len(after) == len(readings) + 2
            assert min(r.id for r in after[len(readings):]) > max(r.id for r in readings)
            assert _where("readings")[late.ts] == "readings_default"
            partitioned = _answers(client)
            assert partitioned != plain  # the new readings count
            db.session.remove()

            downgrade(directory=directory, revision=BEFORE)
            assert _kind("readings") == "r" and _kind("bay_runs") == "r"
            assert not db.session.scalar(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'readings\\_%'"
                                              " AND relkind = 'r'"))
            assert _rows("readings") == after and _rows("bay_runs") == runs
            assert _answers(client) == partitioned
            ingest([SensorReading("GAR-003", True, NOW - 30)], now=NOW, received_at=None)
            assert _rows("readings")[-1].id > after[-1].id
            db.session.remove()

            # And up again: the late reading's day now has a partition of its own.
            upgrade(directory=directory)
            assert _where("readings")[late.ts] == "readings_p20260322"
            db.session.remove()
            db.engine.dispose()
