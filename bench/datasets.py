"""Large synthetic cities with history, written in bulk (not over CoAP), cached under bench/data/.

What a data set holds, and how it is kept consistent:

* Lots and bays are imported through the real path (`parking.lots.import_lots`).
* Readings are generated per bay by a simple sensor model (below) and written in bulk: SQLite
  with `executemany` in one transaction, PostgreSQL with `COPY` (psycopg's `cursor.copy`), with
  the secondary indexes of `readings` built after the load where the schema allows it. On
  PostgreSQL the daily partitions of the history's range are made first
  (`parking.partitions.ensure_partitions`), so the rows land where a live system's would.
* `bays` gets each bay's current state from its own newest reading, by the rule
  `parking.ingest` applies (state, last_ts, state_since = start of the current run, last_seen).
* `hourly_utilization` is filled for every local hour from the first hour of the history up to
  the hour the history ends in, computed with `parking.occupancy.hourly_figures` — the very
  function `parking.rollup` calls — on the same readings: what `flask rollup --full` would leave.
  The hour the history ends in (and the next, by the ts + stale_after rule) is left marked in
  `rollup_dirty`, as after a scheduler run in the middle of that hour.
  `check_consistency` proves this on a small city by running the real `mark_all` + `run_rollup`
  and comparing every row (the smoke run does that each time).

The sensor model: each bay alternates free/occupied with exponentially distributed times between
changes (mean `change_every` s, at least 60 s) and repeats its state every `heartbeat` s (± 5 %)
while nothing changes; `seq` counts each message. No time-of-day pattern: the benchmarks time the
code paths, and their cost depends on how many readings and hours there are, not on when.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PARKING_BENCH_DATA", ROOT / "bench" / "data"))
PG_ADMIN_URL = os.environ.get("PARKING_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
PG_PREFIX = "parking_bench"
TIMEZONE = "Europe/Berlin"
STALE_AFTER = 1800.0
HOUR = 3600.0
FORMAT_VERSION = 3  # bump when the generator changes: cached data sets are then rebuilt


@dataclass(frozen=True)
class CitySpec:
    """A synthetic city and its history; `key()` names its cached files and databases."""

    name: str
    lots: int
    bays_per_lot: int
    hours: int  # history length, ending at `end` (an hour boundary) or at generation time
    change_every: float  # mean seconds between state changes of a bay
    heartbeat: float  # seconds between messages repeating the state; 0 = none
    seed: int = 1

    @property
    def bays(self) -> int:
        return self.lots * self.bays_per_lot

    @property
    def readings_per_bay_day(self) -> float:
        """The mean reading rate the model produces (changes + heartbeats)."""
        changes = 86400 / self.change_every
        if not self.heartbeat:
            return changes
        # Between two changes (mean c) come about max(0, c/h - 1/2) heartbeats on average.
        return changes + 86400 / self.heartbeat * max(0.0, 1 - self.heartbeat / (2 * self.change_every))

    def key(self) -> str:
        digest = hashlib.sha1(json.dumps([asdict(self), FORMAT_VERSION]).encode()).hexdigest()[:8]
        return f"{self.name}-{self.lots}x{self.bays_per_lot}-{self.hours}h-{digest}"


# ---------------------------------------------------------------- the city (lot definitions)
CATEGORIES = ("parkingGarage", "parkingLot", "onStreet", "underground")
HOURS_SPECS = ("24/7", "Mo-Sa 07:00-22:00", "Mo-Fr 06:00-20:00; Sa 08:00-14:00", None)


def lot_id(i: int) -> str:
    return f"L{i:04d}"


def bay_ids(i: int, per_lot: int) -> list[str]:
    return [f"L{i:04d}-{b:03d}" for b in range(per_lot)]


def city_features(spec: CitySpec) -> dict:
    """The city as a FeatureCollection (contract §2): a grid of lots around Regensburg."""
    features = []
    for i in range(spec.lots):
        props = {
            "name": f"Bench lot {i}",
            "bays": bay_ids(i, spec.bays_per_lot),
            "category": CATEGORIES[i % len(CATEGORIES)],
            "timezone": TIMEZONE,
            "address": f"Benchstraße {i}, Regensburg",
            "url": f"https://example.org/lots/{i}",
        }
        if HOURS_SPECS[i % len(HOURS_SPECS)]:
            props["opening_hours"] = HOURS_SPECS[i % len(HOURS_SPECS)]
        if i % 10 == 0:
            props["park_and_ride"] = {"stops": [{"name": f"Stop {i}", "lines": ["1", "6"]}],
                                      "minutes_to_centre": 10 + i % 20}
        features.append({
            "type": "Feature",
            "id": lot_id(i),
            "geometry": {"type": "Point", "coordinates": [12.0 + (i % 40) * 0.004, 48.95 + (i // 40) * 0.003]},
            "properties": props,
        })
    return {"type": "FeatureCollection", "features": features}


# ---------------------------------------------------------------- the sensor model
def bay_history(rng: random.Random, start: float, end: float, change_every: float, heartbeat: float,
                state: bool | None = None, seq: int | None = None) -> list[tuple[float, bool, int]]:
    """(ts, occupied, seq) of one bay in [start, end), ts strictly increasing."""
    out: list[tuple[float, bool, int]] = []
    if state is None:
        state = rng.random() < 0.5
    if seq is None:
        seq = rng.randrange(1 << 20)
    first_gap = min(change_every, heartbeat) if heartbeat else change_every
    t = start + rng.random() * first_gap
    rate = 1.0 / change_every
    expo = rng.expovariate
    rand = rng.random
    append = out.append
    while t < end:
        append((round(t, 3), state, seq & 0xFFFFFFFF))
        seq += 1
        gap = expo(rate)
        change = t + (gap if gap > 60.0 else 60.0)
        if heartbeat:
            hb = t + heartbeat * (0.95 + 0.1 * rand())
            while hb < change and hb < end:
                append((round(hb, 3), state, seq & 0xFFFFFFFF))
                seq += 1
                hb += heartbeat * (0.95 + 0.1 * rand())
        t = change
        state = not state
    return out


def bay_state(history: list[tuple[float, bool, int]], stale: float) -> dict:
    """The bay row's current state from its readings, by parking.ingest's rule."""
    if not history:
        return {"state": None, "last_ts": None, "state_since": None, "last_seen": None}
    ts, state, _ = history[-1]
    since = ts
    for t, s, _ in reversed(history[:-1]):
        if s != state or since - t > stale:
            break
        since = t
    return {"state": state, "last_ts": ts, "state_since": since, "last_seen": ts}


# ---------------------------------------------------------------- databases
def sqlite_path(key: str) -> Path:
    return DATA_DIR / f"{key}.db"


def pg_name(key: str) -> str:
    return f"{PG_PREFIX}_{key}".replace("-", "_").lower()[:63]


def pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def url_for(backend: str, key: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{sqlite_path(key)}"
    return pg_url(pg_name(key))


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def pg_exists(dbname: str) -> bool:
    with _pg_admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def pg_drop(dbname: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def pg_drop_prefix(prefix: str) -> list[str]:
    """Drop every database whose name starts with `prefix` + '_' or is `prefix` (a smoke run's own)."""
    with _pg_admin() as conn:
        names = [n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                                            (prefix, prefix.replace("_", r"\_") + r"\_%"))]
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return names


def pg_create(dbname: str, template: str | None = None) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"' + (f' TEMPLATE "{template}"' if template else ""))


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with _pg_admin() as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).strip()[:120]}"


def fresh_database(backend: str, key: str) -> str:
    """An empty database for `key` (any old one dropped); its URL."""
    if backend == "sqlite":
        path = sqlite_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        pg_create(pg_name(key))
    return url_for(backend, key)


def clone(backend: str, key: str, clone_key: str) -> str:
    """A throw-away copy of a cached data set (so a benchmark may write to it); its URL."""
    if backend == "sqlite":
        src, dst = sqlite_path(key), sqlite_path(clone_key)
        for suffix in ("-wal", "-shm"):
            Path(str(dst) + suffix).unlink(missing_ok=True)
        shutil.copyfile(src, dst)
    else:
        pg_create(pg_name(clone_key), template=pg_name(key))
    return url_for(backend, clone_key)


def drop(backend: str, key: str) -> None:
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(sqlite_path(key)) + suffix).unlink(missing_ok=True)
    else:
        pg_drop(pg_name(key))


def make_app(url: str, **config):
    """The real app on `url` (quiet, test-like settings)."""
    sys.path.insert(0, str(ROOT))
    from parking import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "STALE_AFTER": int(STALE_AFTER),
                       "TIMEZONE": TIMEZONE, "ADMIN_TOKEN": None, **config})


# ---------------------------------------------------------------- bulk writers
class SqliteWriter:
    """Rows into a SQLite file: one transaction, executemany, no fsync until the end."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA cache_size=-262144")
        # Secondary indexes the schema has on readings are rebuilt after the load (a UNIQUE table
        # constraint is an automatic index that cannot be dropped: rows go in in its key order).
        self.indexes = [sql for (sql,) in self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings' AND sql IS NOT NULL")]
        for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings' AND sql IS NOT NULL").fetchall():
            self.conn.execute(f'DROP INDEX "{name}"')
        self.conn.execute("BEGIN")

    def readings(self, rows: list[tuple]) -> None:
        self.conn.executemany(
            "INSERT INTO readings (bay_id, ts, occupied, seq, received_at) VALUES (?, ?, ?, ?, ?)", rows)

    def hourly(self, rows: list[tuple]) -> None:
        self.conn.executemany(
            "INSERT INTO hourly_utilization (lot_id, hour_start, bays, occupied_seconds, known_seconds,"
            " peak_occupied, arrivals, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def dirty(self, rows: list[tuple]) -> None:
        self.conn.executemany("INSERT INTO rollup_dirty (lot_id, hour_start, version) VALUES (?, ?, ?)", rows)

    def bays(self, rows: list[tuple]) -> None:
        self.conn.executemany(
            "UPDATE bays SET state = ?, last_ts = ?, state_since = ?, last_seen = ?, battery = ? WHERE id = ?",
            rows)

    def finish(self) -> None:
        for sql in self.indexes:
            self.conn.execute(sql)
        self.conn.execute("COMMIT")
        self.conn.execute("ANALYZE")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.close()


class PostgresWriter:
    """Rows into PostgreSQL with COPY; the secondary indexes of readings rebuilt after the load."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        self.conn.execute("SET synchronous_commit = off")
        # Every index of readings but its primary key is rebuilt after the load, as the schema has it.
        self.constraints = self.conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'readings'::regclass AND contype = 'u'").fetchall()
        for name, _ in self.constraints:
            self.conn.execute(f'ALTER TABLE readings DROP CONSTRAINT "{name}"')
        self.indexes = self.conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'readings'::regclass)").fetchall()
        for name, _ in self.indexes:
            self.conn.execute(f'DROP INDEX "{name}"')

    @staticmethod
    def _text(value) -> str:
        if value is None:
            return "\\N"
        if value is True:
            return "t"
        if value is False:
            return "f"
        return repr(value) if isinstance(value, float) else str(value)

    def _copy(self, sql: str, rows: list[tuple]) -> None:
        text = self._text
        with self.conn.cursor() as cur, cur.copy(sql) as copy:
            copy.write("".join("\t".join(map(text, row)) + "\n" for row in rows))

    def readings(self, rows: list[tuple]) -> None:
        self._copy("COPY readings (bay_id, ts, occupied, seq, received_at) FROM STDIN", rows)

    def hourly(self, rows: list[tuple]) -> None:
        self._copy("COPY hourly_utilization (lot_id, hour_start, bays, occupied_seconds, known_seconds,"
                   " peak_occupied, arrivals, computed_at) FROM STDIN", rows)

    def dirty(self, rows: list[tuple]) -> None:
        self._copy("COPY rollup_dirty (lot_id, hour_start, version) FROM STDIN", rows)

    def bays(self, rows: list[tuple]) -> None:
        self.conn.execute("CREATE TEMP TABLE bay_state (state boolean, last_ts float8, state_since float8,"
                          " last_seen float8, battery int, id varchar(64))")
        self._copy("COPY bay_state FROM STDIN", rows)
        self.conn.execute("UPDATE bays SET state = s.state, last_ts = s.last_ts, state_since = s.state_since,"
                          " last_seen = s.last_seen, battery = s.battery FROM bay_state s WHERE bays.id = s.id")

    def finish(self) -> None:
        self.conn.execute("SET maintenance_work_mem = '512MB'")
        for name, definition in self.constraints:
            self.conn.execute(f'ALTER TABLE readings ADD CONSTRAINT "{name}" {definition}')
        for _, definition in self.indexes:
            self.conn.execute(definition)
        self.conn.commit()
        self.conn.autocommit = True
        _order_readings_by_time(self.conn)
        # What autovacuum would have done in a live system: statistics and the visibility map.
        self.conn.execute("VACUUM ANALYZE")
        self.conn.close()


# The physical order of `readings` in a PostgreSQL data set. The generator writes each bay's whole
# history in one go; a live system inserts in time order, so the recent readings of every bay
# share the newest pages (which the minutely rollup keeps warm) and old history stays cold.
PG_LAYOUT = "ts"


def _order_readings_by_time(conn) -> None:
    """Rewrite `readings` in ts order (CLUSTER on a temporary index), as a live system lays it out."""
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("CREATE INDEX bench_readings_ts ON readings (ts)")
    conn.execute("CLUSTER readings USING bench_readings_ts")
    conn.execute("DROP INDEX bench_readings_ts")
    conn.execute("ANALYZE readings")


# ---------------------------------------------------------------- generation
def _progress(total: int, label: str, quiet: bool):
    if quiet:
        class _Null:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n):
                pass
        return _Null()
    return click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True, show_pos=True)


def generate(spec: CitySpec, backend: str, end: float, key: str | None = None, quiet: bool = False) -> dict:
    """Build the data set into a fresh database; returns its metadata (also cached beside it)."""
    from parking.extensions import db
    from parking.occupancy import floor_local_hour, hour_starts, hourly_figures
    from parking.cli import init_db
    from parking.lots import import_lots
    from parking.partitions import ensure_partitions

    key = key or spec.key()
    started = time.perf_counter()
    url = fresh_database(backend, key)
    start = end - spec.hours * HOUR
    app = make_app(url)
    with app.app_context():
        init_db()
        import_lots(city_features(spec), TIMEZONE)
        # PostgreSQL: the history's days get their partitions before COPY, not the default one.
        ensure_partitions(db.session, start, end)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    writer = SqliteWriter(sqlite_path(key)) if backend == "sqlite" else PostgresWriter(url)

    first_hour = floor_local_hour(start, TIMEZONE)
    end_hour = floor_local_hour(end, TIMEZONE)
    hours = hour_starts(TIMEZONE, first_hour, end_hour)
    windows = [hours[i:i + 168] for i in range(0, len(hours), 168)]
    master = random.Random(spec.seed)
    counts = {"readings": 0, "hourly": 0, "dirty": 0}
    readings_buf: list[tuple] = []
    hourly_buf: list[tuple] = []
    bay_rows: list[tuple] = []
    dirty_rows: list[tuple] = []
    computed_at = end
    with _progress(spec.lots, f"{backend}: {key}", quiet) as bar:
        for i in range(spec.lots):
            lot = lot_id(i)
            by_bay: dict[str, list[tuple[float, bool]]] = {}
            marks: set[int] = set()
            for b, bay in enumerate(bay_ids(i, spec.bays_per_lot)):
                rng = random.Random(master.getrandbits(64) ^ (i << 20) ^ b)
                history = bay_history(rng, start, end, spec.change_every, spec.heartbeat)
                readings_buf.extend((bay, ts, occ, seq, ts) for ts, occ, seq in history)
                by_bay[bay] = [(ts, occ) for ts, occ, _ in history]
                st = bay_state(history, STALE_AFTER)
                bay_rows.append((st["state"], st["last_ts"], st["state_since"], st["last_seen"],
                                 20 + rng.randrange(81), bay))
                # Dirty marks the ingest path would have left for hours not yet rolled up.
                for ts, _, _ in reversed(history):
                    if ts + STALE_AFTER < end_hour:
                        break
                    h = floor_local_hour(ts, TIMEZONE)
                    while h <= ts + STALE_AFTER:
                        if h >= end_hour:
                            marks.add(int(h))
                        h += HOUR
            for window in windows:
                for f in hourly_figures(by_bay, spec.bays_per_lot, window, STALE_AFTER, now=end):
                    hourly_buf.append((lot, int(f.hour_start), f.bays, f.occupied_seconds, f.known_seconds,
                                       f.peak_occupied, f.arrivals, computed_at))
            dirty_rows.extend((lot, h, 1) for h in sorted(marks))
            if len(readings_buf) >= 200_000 or i == spec.lots - 1:
                writer.readings(readings_buf)
                counts["readings"] += len(readings_buf)
                readings_buf = []
            if len(hourly_buf) >= 200_000 or i == spec.lots - 1:
                writer.hourly(hourly_buf)
                counts["hourly"] += len(hourly_buf)
                hourly_buf = []
            bar.update(1)
    writer.bays(bay_rows)
    writer.dirty(dirty_rows)
    counts["dirty"] = len(dirty_rows)
    if not quiet:
        print(f"  {backend}: building indexes, analysing …", file=sys.stderr, flush=True)
    writer.finish()
    meta = {
        "key": key, "spec": asdict(spec), "backend": backend, "format": FORMAT_VERSION,
        "layout": PG_LAYOUT if backend == "postgresql" else "bay",
        "start": start, "end": end, "first_hour": first_hour, "end_hour": end_hour, **counts,
        "generated_at": time.time(), "generation_seconds": round(time.perf_counter() - started, 1),
        "size_bytes": database_size(backend, key),
    }
    meta_path(backend, key).write_text(json.dumps(meta, indent=1))
    return meta


def meta_path(backend: str, key: str) -> Path:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return DATA_DIR / f"{backend}-{key}.json"


def database_size(backend: str, key: str) -> int:
    if backend == "sqlite":
        return sum(Path(str(sqlite_path(key)) + s).stat().st_size for s in ("", "-wal")
                   if Path(str(sqlite_path(key)) + s).exists())
    with _pg_admin() as conn:
        return conn.execute("SELECT pg_database_size(%s)", (pg_name(key),)).fetchone()[0]


def cached(backend: str, key: str) -> dict | None:
    """The metadata of a complete cached data set, or None."""
    path = meta_path(backend, key)
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        return None
    if backend == "sqlite" and not sqlite_path(key).exists():
        return None
    if backend == "postgresql" and not pg_exists(pg_name(key)):
        return None
    align_indexes(backend, key)
    if backend == "postgresql" and meta.get("layout") != PG_LAYOUT:
        # Cached before the generator ordered readings by time: reorder in place, not regenerate.
        import psycopg

        started = time.perf_counter()
        with psycopg.connect(pg_url(pg_name(key)).replace("postgresql+psycopg://", "postgresql://"),
                             autocommit=True) as conn:
            _order_readings_by_time(conn)
        meta["layout"] = PG_LAYOUT
        meta["layout_seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(meta, indent=1))
    return meta


def align_indexes(backend: str, key: str) -> list[str]:
    """Drop indexes of `readings` that the current models no longer declare (a data set cached
    under an older schema); returns their names. Missing ones are not added: regenerate for that."""
    from parking.models import StoredReading as Row
    from sqlalchemy import UniqueConstraint

    wanted = {ix.name for ix in Row.__table__.indexes}
    wanted |= {c.name for c in Row.__table__.constraints if isinstance(c, UniqueConstraint)}
    if backend == "sqlite":
        conn = sqlite3.connect(sqlite_path(key))
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                            " AND tbl_name = 'readings' AND sql IS NOT NULL")]
        stray = [n for n in names if n not in wanted]
        for name in stray:
            conn.execute(f'DROP INDEX "{name}"')
        conn.commit()
        conn.close()
        return stray
    import psycopg

    with psycopg.connect(pg_url(pg_name(key)).replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        names = [n for (n,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'readings' AND indexname NOT IN"
            " (SELECT conname FROM pg_constraint WHERE conrelid = 'readings'::regclass)")]
        stray = [n for n in names if n not in wanted]
        for name in stray:
            conn.execute(f'DROP INDEX "{name}"')
    return stray


def ensure(spec: CitySpec, backend: str, end: float | None = None, quiet: bool = False,
           use_cache: bool = True) -> dict:
    """The cached data set for `spec`, generated first when missing (end: now, or given)."""
    key = spec.key()
    if use_cache:
        meta = cached(backend, key)
        if meta is not None:
            return meta
    meta_path(backend, key).unlink(missing_ok=True)
    return generate(spec, backend, time.time() if end is None else end, quiet=quiet)


# ---------------------------------------------------------------- the proof of consistency
def check_consistency(url: str) -> tuple[int, int]:
    """Recompute every hour with the real rollup and compare with the stored aggregates.

    Returns (hours compared, hours that differ). Also checks each bay's state against the rule.
    Meant for small data sets (the smoke run): it recomputes everything.
    """
    from sqlalchemy import select

    from parking.extensions import db
    from parking.models import Bay, HourlyUtilization, RollupDirty
    from parking.models import StoredReading as Row
    from parking.rollup import mark_all, run_rollup

    app = make_app(url)
    with app.app_context():
        def snapshot():
            return {(r.lot_id, r.hour_start): (round(r.occupied_seconds, 3), round(r.known_seconds, 3),
                                               r.peak_occupied, r.arrivals, r.bays)
                    for r in db.session.scalars(select(HourlyUtilization))}

        generated = snapshot()
        dirty = set(db.session.execute(select(RollupDirty.lot_id, RollupDirty.hour_start)).all())
        history: dict[str, list] = {}
        for bay, ts, occ, seq in db.session.execute(
                select(Row.bay_id, Row.ts, Row.occupied, Row.seq).order_by(Row.bay_id, Row.ts, Row.id)):
            history.setdefault(bay, []).append((ts, bool(occ), seq))
        bad_bays = 0
        for bay in db.session.scalars(select(Bay)):
            want = bay_state(history.get(bay.id, []), STALE_AFTER)
            got = {"state": bay.state, "last_ts": bay.last_ts, "state_since": bay.state_since,
                   "last_seen": bay.last_seen}
            bad_bays += want != got
        newest = max((h[-1][0] for h in history.values() if h), default=0.0)
        mark_all()
        # As of the generation time: the hour it ended in stays unfinished (and dirty).
        run_rollup(now=newest + 1)
        rolled = snapshot()
        keys = [k for k in rolled if k in generated and k not in dirty]
        differ = sum(rolled[k] != generated[k] for k in keys) + bad_bays
        db.session.remove()
        db.engine.dispose()
    return len(keys), differ


def describe(spec: CitySpec) -> str:
    """One line saying what a data set is."""
    hb = f"heartbeat {spec.heartbeat / 60:.0f} min" if spec.heartbeat else "no heartbeat"
    return (f"{spec.lots:,} lots × {spec.bays_per_lot} bays = {spec.bays:,} bays, {spec.hours:,} h "
            f"({spec.hours / 24:.0f} d) of history, a change every {spec.change_every / 3600:.1f} h and {hb}: "
            f"≈{spec.readings_per_bay_day:.2f} readings/bay/day ≈ "
            f"{spec.readings_per_bay_day * spec.bays * spec.hours / 24 / 1e6:.1f} M readings")

