"""Compaction (issue #15): bytes on disk per bay-day of history before and after
`compact(everything=True)`, and what compaction does to report and rollup times.

The history is the simulator's, as `make demo` makes it: the bundled sample city's lots
(parking/data/regensburg.geojson, or the first few of them) imported through the real path, then
`gateway.simulator.history.backfill` for a month through `parking.ingest` (on PostgreSQL the
history's days get their partitions first, as bench/datasets.py does). The database is then
cloned: the copy is compacted (`compact(now=end, everything=True)`: all but the last two hours,
as `flask compact --all` right after the backfill) and vacuumed, and both are measured.

Bytes of the history are those of `readings` and `bay_runs` with every index (and on PostgreSQL
every partition, found through pg_inherits, with TOAST, free-space and visibility maps): on SQLite
the pages `dbstat` counts for them (else the file's shrinkage when the history is deleted and the
file vacuumed), on PostgreSQL `pg_total_relation_size`. "Before" is the database as the backfill
left it (PostgreSQL: after a plain VACUUM); "after" is the compacted copy after VACUUM (SQLite) or
VACUUM (FULL) (PostgreSQL; the plain-VACUUM size is printed too). Divided by bays × days.

Timed on both databases, alternately, the median of `runs` each: the month's utilization CSV and
XLSX of every lot through Flask's test client, and a full rollup recompute (`mark_all` then
`run_rollup`). Both databases must give the same CSV bytes, the same workbook cell values (the
file carries its creation time) and the same recomputed hourly rows; any difference is a MISS and
printed loudly.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from . import datasets
from .httpbench import timed_get_body
from .report import Report

CITY_FILE = datasets.ROOT / "parking" / "data" / "regensburg.geojson"
HISTORY_TABLES = ("readings", "bay_runs")
TARGET_BYTES = 800.0  # issue #15: at most a tenth of the 8 KB per bay-day raw history took (aim 400)
AIM_BYTES = 400.0
SLOWER = 1.1  # after / before: no worse, allowing for the noise of a shared machine


@dataclass
class CompactionConfig:
    lots: tuple[str, ...] | None = None  # lot ids of the sample city; None: all 13 (670 bays)
    days: float = 28.0  # the demo's backfill (make demo: BACKFILL_DAYS = 28)
    runs: int = 3
    # The CSV reads only the hourly rows (≈ 50 ms for the sample city): single requests on a shared
    # machine vary several-fold, so each round asks for it this many times per database.
    csv_repeat: int = 5
    seed: int = 15


FULL = CompactionConfig()
SMOKE = CompactionConfig(lots=("ostengasse",), days=2.0, runs=1, csv_repeat=1)


def city(cfg: CompactionConfig) -> dict:
    """The sample city's FeatureCollection, or the lots of it the configuration names."""
    features = json.loads(CITY_FILE.read_text())
    if cfg.lots is not None:
        features["features"] = [f for f in features["features"] if f["id"] in cfg.lots]
        if len(features["features"]) != len(cfg.lots):
            raise RuntimeError(f"lots not in {CITY_FILE.name}: {cfg.lots}")
    return features


def describe(cfg: CompactionConfig) -> str:
    """One line saying what the history is."""
    lots = city(cfg)["features"]
    bays = sum(len(f["properties"]["bays"]) for f in lots)
    which = "all lots" if cfg.lots is None else ", ".join(cfg.lots)
    return (f"{CITY_FILE.name} ({which}: {len(lots)} lots, {bays} bays), {cfg.days:g} days of the "
            f"simulator's backfill (seed {cfg.seed})")


def _key(cfg: CompactionConfig, suffix: str) -> str:
    """The data set key of this configuration's raw or compacted database."""
    lots = "all" if cfg.lots is None else f"{len(cfg.lots)}lots"
    return f"compaction-{lots}-{cfg.days:g}d-{suffix}"


def _dispose(app) -> None:
    """Close the app's session and connections (a clone, VACUUM or DROP needs the database alone)."""
    from parking.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def build(backend: str, cfg: CompactionConfig, end: float, log) -> tuple[str, dict]:
    """A fresh database with the city and its backfilled history; (URL, facts about it)."""
    from sqlalchemy import func, select

    from gateway.simulator.history import backfill
    from parking.cli import init_db
    from parking.extensions import db
    from parking.lots import import_lots
    from parking.models import Bay, StoredReading
    from parking.partitions import ensure_partitions

    url = datasets.fresh_database(backend, _key(cfg, "raw"))
    app = datasets.make_app(url)
    start = end - cfg.days * 86400
    with app.app_context():
        init_db()
        import_lots(city(cfg), datasets.TIMEZONE)
        ensure_partitions(db.session, start, end + 86400)  # PostgreSQL: where a live system's rows land
        db.session.commit()
    started = time.perf_counter()
    backfill(app, cfg.days, now=end, seed=cfg.seed)
    seconds = time.perf_counter() - started
    with app.app_context():
        facts = {"bays": db.session.scalar(select(func.count()).select_from(Bay)),
                 "readings": db.session.scalar(select(func.count()).select_from(StoredReading)),
                 "start": start, "end": end, "backfill_seconds": seconds}
    _dispose(app)
    log(f"  {backend}: backfilled {facts['readings']:,} readings of {facts['bays']} bays in {seconds:.0f} s "
        f"({facts['readings'] / facts['bays'] / cfg.days:.0f} readings per bay-day)")
    return url, facts


# ---------------------------------------------------------------- bytes on disk
def sqlite_file(url: str) -> Path:
    """The file of a sqlite:/// URL."""
    return Path(url.removeprefix("sqlite:///"))


def history_bytes(backend: str, url: str) -> dict[str, int]:
    """Bytes per table and index of the history: {"readings": …, "readings.<index>": …, …}."""
    return _sqlite_bytes(sqlite_file(url)) if backend == "sqlite" else _pg_bytes(url)


def _sqlite_bytes(path: Path) -> dict[str, int]:
    """Bytes of the history's b-trees by dbstat (or the file-size difference without it)."""
    conn = sqlite3.connect(path)
    try:
        owners = dict(conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE tbl_name IN (?, ?) AND type IN ('table', 'index')",
            HISTORY_TABLES).fetchall())
        try:
            sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.OperationalError:  # SQLite built without the dbstat virtual table
            return {"total (file size difference)": _sqlite_file_difference(path)}
    finally:
        conn.close()
    return {(name if owner == name else f"{owner}.{name}"): sizes.get(name, 0) for name, owner in owners.items()}


def _sqlite_file_difference(path: Path) -> int:
    """The file's size after VACUUM minus that of a copy without the history (no dbstat)."""
    copy = path.with_name(path.name + ".nohistory")
    shutil.copyfile(path, copy)
    try:
        with sqlite3.connect(path) as conn:
            conn.execute("VACUUM")
        with sqlite3.connect(copy) as conn:
            for table in HISTORY_TABLES:
                conn.execute(f"DELETE FROM {table}")
        with sqlite3.connect(copy) as conn:
            conn.execute("VACUUM")
        return path.stat().st_size - copy.stat().st_size
    finally:
        copy.unlink(missing_ok=True)


# Every relation of each history table: itself, its partitions (recursively), and their indexes.
PG_SIZES = """
WITH RECURSIVE tree(oid, root) AS (
    SELECT c.oid, c.relname::text FROM pg_class c
     WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT i.inhrelid, t.root FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
),
indexes(oid, root, name) AS (
    SELECT x.indexrelid, t.root, c.relname::text FROM pg_index x JOIN tree t ON x.indrelid = t.oid
      JOIN pg_class c ON c.oid = x.indexrelid
     WHERE t.root = (SELECT relname FROM pg_class WHERE oid = t.oid)
    UNION ALL
    SELECT i.inhrelid, x.root, x.name FROM pg_inherits i JOIN indexes x ON i.inhparent = x.oid
)
SELECT root, SUM(pg_table_size(oid))::bigint, COUNT(*) FILTER (WHERE (SELECT relkind FROM pg_class WHERE pg_class.oid = tree.oid) = 'r')
  FROM tree GROUP BY root
UNION ALL
SELECT root || '.' || name, SUM(pg_relation_size(oid))::bigint, COUNT(*) FROM indexes GROUP BY root, name
"""


def _pg_bytes(url: str) -> dict[str, int]:
    """Bytes of the history's tables and indexes, every partition summed."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return {name: int(size) for name, size, _ in conn.execute(PG_SIZES, (list(HISTORY_TABLES),))}


def pg_partitions(url: str) -> dict[str, int]:
    """How many leaf tables each history table has (1: not partitioned)."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return {name: int(n) for name, _, n in conn.execute(PG_SIZES, (list(HISTORY_TABLES),)) if "." not in name}


def vacuum(backend: str, url: str, full: bool) -> None:
    """VACUUM the history (SQLite: the whole file; PostgreSQL: its tables, FULL if asked, ANALYZE)."""
    if backend == "sqlite":
        conn = sqlite3.connect(sqlite_file(url), isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        options = "(FULL, ANALYZE)" if full else "(ANALYZE)"
        for table in HISTORY_TABLES:
            conn.execute(f"VACUUM {options} {table}")


def checkpoint(url: str) -> None:
    """SQLite: everything in the write-ahead log written into the database file."""
    conn = sqlite3.connect(sqlite_file(url), isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def row_counts(backend: str, url: str) -> dict[str, int]:
    """Rows of each history table."""
    if backend == "sqlite":
        conn = sqlite3.connect(sqlite_file(url))
        try:
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in HISTORY_TABLES}
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in HISTORY_TABLES}


def where_bytes_go(sizes: dict[str, int], rows: dict[str, int], bay_days: float) -> str:
    """Each table and index: bytes, bytes per row of its table, bytes per bay-day."""
    lines = []
    for name, size in sorted(sizes.items()):
        n = rows.get(name.split(".", 1)[0], 0)
        per_row = f"{size / n:7.1f} B/row" if n else "      - B/row"
        lines.append(f"    {name:<52} {size:>12,} B  {per_row}  {size / bay_days:7.1f} B/bay-day")
    return "\n".join(lines)


# ---------------------------------------------------------------- other layouts of the same runs
# What the compacted history would take stored otherwise: the same runs copied into tables of
# another shape beside `bay_runs` (in the throw-away compacted copy, after everything else), each
# measured as above. None of them is the schema; they say what a schema change would buy.
#   no_id_pk:   no surrogate id; the (bay_id, ts) key is the table (SQLite WITHOUT ROWID,
#               PostgreSQL a primary key instead of the id's and the (bay_id, ts) index)
#   no_count:   no_id_pk without the `readings` column
#   int_bay:    no_count with a small integer bay number for the bay id and the run's end as
#               integer milliseconds after its start (no float last_ts)
#   bay_day:    one row per bay and UTC day: (bay_id, day, runs) with the day's runs packed in a
#               blob, per run three varints: ms since the previous run's start (or the day's),
#               ms to its end, readings × 2 + state
SQLITE_LAYOUTS = {
    "no_id_pk": ("CREATE TABLE x_no_id_pk (bay_id VARCHAR(64), ts FLOAT, last_ts FLOAT, occupied BOOLEAN,"
                 " readings INTEGER, PRIMARY KEY (bay_id, ts)) WITHOUT ROWID",
                 "INSERT OR IGNORE INTO x_no_id_pk SELECT bay_id, ts, last_ts, occupied, readings FROM bay_runs"
                 " ORDER BY bay_id, ts"),
    "no_count": ("CREATE TABLE x_no_count (bay_id VARCHAR(64), ts FLOAT, last_ts FLOAT, occupied BOOLEAN,"
                 " PRIMARY KEY (bay_id, ts)) WITHOUT ROWID",
                 "INSERT OR IGNORE INTO x_no_count SELECT bay_id, ts, last_ts, occupied FROM bay_runs"
                 " ORDER BY bay_id, ts"),
    "int_bay": ("CREATE TABLE x_int_bay (bay INTEGER, ts FLOAT, span_ms INTEGER, occupied BOOLEAN,"
                " PRIMARY KEY (bay, ts)) WITHOUT ROWID",
                "INSERT OR IGNORE INTO x_int_bay SELECT b.n, r.ts, CAST(ROUND((r.last_ts - r.ts) * 1000) AS INTEGER),"
                " r.occupied FROM bay_runs r JOIN (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM bays) b"
                " ON b.id = r.bay_id ORDER BY b.n, r.ts"),
}
PG_LAYOUTS = {
    "no_id_pk": ("CREATE TABLE x_no_id_pk (bay_id varchar(64), ts float8, last_ts float8, occupied boolean,"
                 " readings int4, PRIMARY KEY (bay_id, ts))",
                 "INSERT INTO x_no_id_pk SELECT DISTINCT ON (bay_id, ts) bay_id, ts, last_ts, occupied, readings"
                 " FROM bay_runs ORDER BY bay_id, ts"),
    "no_count": ("CREATE TABLE x_no_count (bay_id varchar(64), ts float8, last_ts float8, occupied boolean,"
                 " PRIMARY KEY (bay_id, ts))",
                 "INSERT INTO x_no_count SELECT DISTINCT ON (bay_id, ts) bay_id, ts, last_ts, occupied"
                 " FROM bay_runs ORDER BY bay_id, ts"),
    "int_bay": ("CREATE TABLE x_int_bay (ts float8, bay int4, span_ms int4, occupied boolean, PRIMARY KEY (bay, ts))",
                "INSERT INTO x_int_bay SELECT DISTINCT ON (b.n, r.ts) r.ts, b.n, round((r.last_ts - r.ts) * 1000)::int4,"
                " r.occupied FROM bay_runs r JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM bays) b"
                " ON b.id = r.bay_id ORDER BY b.n, r.ts"),
}


def _varint(n: int) -> bytes:
    """LEB128: 7 bits a byte, low first."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def packed_days(runs) -> list[tuple[str, int, bytes]]:
    """(bay_id, UTC day, blob) from (bay_id, ts, last_ts, occupied, readings) in (bay_id, ts) order."""
    out: list[tuple[str, int, bytearray]] = []
    key, previous = None, 0
    for bay_id, ts, last_ts, occupied, count in runs:
        day = int(ts // 86400)
        if (bay_id, day) != key:
            key, previous = (bay_id, day), day * 86_400_000
            out.append((bay_id, day, bytearray()))
        start = round(ts * 1000)
        out[-1][2].extend(_varint(start - previous) + _varint(round(last_ts * 1000) - start)
                          + _varint(count * 2 + bool(occupied)))
        previous = start
    return [(bay_id, day, bytes(blob)) for bay_id, day, blob in out]


def other_layouts(backend: str, url: str) -> dict[str, tuple[int, int]]:
    """{layout: (bytes, rows)} of the compacted runs stored in each other layout (see above)."""
    select_runs = "SELECT bay_id, ts, last_ts, occupied, readings FROM bay_runs ORDER BY bay_id, ts"
    out = {}
    if backend == "sqlite":
        conn = sqlite3.connect(sqlite_file(url), isolation_level=None)
        try:
            for name, (create, fill) in SQLITE_LAYOUTS.items():
                conn.execute(create)
                conn.execute(fill)
            conn.execute("CREATE TABLE x_bay_day (bay_id VARCHAR(64), day INTEGER, runs BLOB,"
                         " PRIMARY KEY (bay_id, day)) WITHOUT ROWID")
            conn.executemany("INSERT INTO x_bay_day VALUES (?, ?, ?)", packed_days(conn.execute(select_runs)))
            conn.execute("VACUUM")
            sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
            for name in (*SQLITE_LAYOUTS, "bay_day"):
                rows = conn.execute(f"SELECT COUNT(*) FROM x_{name}").fetchone()[0]
                out[name] = (sizes.get(f"x_{name}", 0), rows)
        finally:
            conn.close()
        return out
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for name, (create, fill) in PG_LAYOUTS.items():
            conn.execute(create)
            conn.execute(fill)
        conn.execute("CREATE TABLE x_bay_day (bay_id varchar(64), day int4, runs bytea, PRIMARY KEY (bay_id, day))")
        with conn.cursor() as cur:
            days = packed_days(cur.execute(select_runs))
            with cur.copy("COPY x_bay_day FROM STDIN") as copy:
                for row in days:
                    copy.write_row(row)
        for name in (*PG_LAYOUTS, "bay_day"):
            conn.execute(f"VACUUM (FULL, ANALYZE) x_{name}")
            size, rows = conn.execute(f"SELECT pg_total_relation_size('x_{name}'), COUNT(*) FROM x_{name}").fetchone()
            out[name] = (int(size), int(rows))
    return out


# ---------------------------------------------------------------- what a planner sees, timed
def _month(facts: dict) -> str:
    """The query string of the backfilled month (local dates, to the midnight after its end)."""
    zone = ZoneInfo(datasets.TIMEZONE)
    first = dt.datetime.fromtimestamp(facts["start"], zone).date()
    last = dt.datetime.fromtimestamp(facts["end"], zone).date() + dt.timedelta(days=1)
    return f"from={first}&to={last}"


def _workbook_values(body: bytes) -> dict:
    """Every cell value of every sheet (the file's bytes carry its creation time)."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(body), read_only=True)
    try:
        return {sheet.title: [list(row) for row in sheet.iter_rows(values_only=True)] for sheet in book.worksheets}
    finally:
        book.close()


def _recompute(app) -> tuple[float, dict]:
    """Seconds of a full rollup recompute, and the hourly rows it left (computed_at aside)."""
    from sqlalchemy import select

    from parking.extensions import db
    from parking.models import HourlyUtilization as H
    from parking.rollup import mark_all, run_rollup

    with app.app_context():
        started = time.perf_counter()
        mark_all()
        run_rollup()
        seconds = time.perf_counter() - started
        rows = {(r[0], r[1]): r[2:] for r in db.session.execute(select(
            H.lot_id, H.hour_start, H.bays, H.occupied_seconds, H.known_seconds, H.peak_occupied, H.arrivals))}
        db.session.remove()
    return seconds, rows


def timed(apps: dict, facts: dict, runs: int, csv_repeat: int = 1) -> tuple[dict, dict]:
    """{(label, what): [seconds, …]} and {(label, what): output} of both databases.

    Request by request the two databases alternate, and which goes first alternates from round to
    round: timed in blocks (all of one database's requests, then the other's), the month's CSV
    came out 1.7 times slower on the compacted copy, whose block always followed the raw
    database's 20-second rollup, with the same function calls and rows (1.1 times, noise, in a
    probe alternating request by request).
    """
    query = _month(facts)
    clients = {label: app.test_client() for label, app in apps.items()}
    seconds: dict[tuple[str, str], list[float]] = {}
    outputs: dict[tuple[str, str], object] = {}
    csv, xlsx = f"/api/reports/utilization.csv?{query}", f"/api/reports/utilization.xlsx?{query}"
    for client in clients.values():  # warm-up: the first request builds caches either way
        timed_get_body(client, csv)
    for round_ in range(runs):
        order = list(clients) if round_ % 2 == 0 else list(reversed(clients))
        for what, url in [("csv", csv)] * csv_repeat + [("xlsx", xlsx), ("rollup", None)]:
            for label in order:
                if what == "rollup":
                    took, output = _recompute(apps[label])
                else:
                    took, body = timed_get_body(clients[label], url)
                    output = body if what == "csv" else _workbook_values(body)
                seconds.setdefault((label, what), []).append(took)
                outputs[(label, what)] = output
    return seconds, outputs


def differences(outputs: dict) -> list[str]:
    """What differs between the raw and the compacted database's outputs."""
    out = []
    for what in ("csv", "xlsx", "rollup"):
        before, after = outputs[("before", what)], outputs[("after", what)]
        if before != after:
            if what == "rollup":
                keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                out.append(f"rollup: {len(keys)} hourly rows differ, e.g. {keys[0]}: "
                           f"{before.get(keys[0])} before, {after.get(keys[0])} after")
            elif what == "csv":
                a, b = before.splitlines(), after.splitlines()
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                out.append(f"csv: {len(a)} lines before, {len(b)} after, first difference at line {first + 1}")
            else:
                sheets = [s for s in set(before) | set(after) if before.get(s) != after.get(s)]
                out.append(f"xlsx: sheets differ: {sorted(sheets)[:5]}")
    return out


# ---------------------------------------------------------------- the benchmark
def measure(report: Report, backend: str, cfg: CompactionConfig, log) -> None:
    """Build, clone, compact and measure one backend; both databases dropped at the end."""
    from parking.compaction import compact

    end = (time.time() // 3600 - 3) * 3600.0  # finished hours only, a recent month
    raw_url, facts = build(backend, cfg, end, log)
    bay_days = facts["bays"] * cfg.days
    compacted_key = _key(cfg, "compacted")
    try:
        if backend == "postgresql":
            vacuum(backend, raw_url, full=False)  # what autovacuum does: statistics, visibility map
            parts = pg_partitions(raw_url)
            log(f"  {backend}: leaf tables: " + ", ".join(f"{t} {n}" for t, n in parts.items()))
        else:
            checkpoint(raw_url)  # the WAL into the file: dbstat and the copy see every page there
        before = history_bytes(backend, raw_url)
        before_rows = row_counts(backend, raw_url)
        compacted_url = datasets.clone(backend, _key(cfg, "raw"), compacted_key)
        app = datasets.make_app(compacted_url)
        with app.app_context():
            result = compact(now=end, everything=True)
        _dispose(app)
        if backend == "postgresql":
            vacuum(backend, compacted_url, full=False)
            plain_sizes = history_bytes(backend, compacted_url)
        else:
            checkpoint(compacted_url)
            plain_sizes = history_bytes(backend, compacted_url)  # b-tree pages in use, free ones apart
        plain = sum(plain_sizes.values())
        vacuum(backend, compacted_url, full=True)
        after = history_bytes(backend, compacted_url)
        after_rows = row_counts(backend, compacted_url)
        # runs_written counts a run each time it is written: a day at a time, one reaching past
        # midnight is written again with the next day (runs_removed).
        log(f"  {backend}: compact(everything=True) folded {result.readings:,} readings of {result.bays} bays into "
            f"{after_rows['bay_runs']:,} runs ({result.runs_written:,} written, {result.runs_removed:,} of them "
            f"refolded) in {result.seconds:.1f} s")
        if backend == "sqlite":
            vacuum(backend, raw_url, full=True)  # the raw file laid out afresh as well: timings compare forms
            vacuumed = sum(history_bytes(backend, raw_url).values())

        total_before, total_after = sum(before.values()), sum(after.values())
        name = f"compaction.{backend}"
        report.add(f"{name}.bytes_per_bay_day.before", total_before / bay_days, "B",
                   note=f"{before_rows['readings']:,} readings, {facts['bays']} bays × {cfg.days:g} d")
        if backend == "sqlite":
            report.add(f"{name}.bytes_per_bay_day.before_vacuumed", vacuumed / bay_days, "B",
                       note="the raw file after VACUUM")
            report.add(f"{name}.bytes_per_bay_day.after_no_vacuum", plain / bay_days, "B",
                       note="compacted, pages in use; the freed ones stay in the file for new rows")
        else:
            report.add(f"{name}.bytes_per_bay_day.after_plain_vacuum", plain / bay_days, "B",
                       note="compacted, plain VACUUM only: what a live system keeps")
        report.add(f"{name}.bytes_per_bay_day.after", total_after / bay_days, "B", "<=", TARGET_BYTES,
                   note=f"{after_rows['bay_runs']:,} runs + {after_rows['readings']:,} raw; aim {AIM_BYTES:.0f} B; "
                        + ("VACUUM" if backend == "sqlite" else "VACUUM (FULL)"))
        report.add(f"{name}.bytes_per_bay_day.after/before", total_after / total_before, "", "<=", 0.1)
        report.add(f"{name}.readings_per_second", result.readings / max(result.seconds, 1e-9), "/s",
                   note=f"{result.readings:,} readings in {result.seconds:.1f} s")
        log("  where the bytes go, before:\n" + where_bytes_go(before, before_rows, bay_days))
        if backend == "postgresql":
            # Rows deleted (not in a dropped partition): VACUUM truncates a heap whose pages all came
            # free, never an index; refolded runs leave dead rows and index entries behind.
            log("  where the bytes go, compacted, after a plain VACUUM:\n" + where_bytes_go(plain_sizes, after_rows, bay_days))
        log("  where the bytes go, after:\n" + where_bytes_go(after, after_rows, bay_days))

        apps = {"before": datasets.make_app(raw_url), "after": datasets.make_app(compacted_url)}
        try:
            seconds, outputs = timed(apps, facts, cfg.runs, cfg.csv_repeat)
        finally:
            for app in apps.values():
                _dispose(app)
        differ = differences(outputs)
        for line in differ:
            log(f"  !!! {backend}: COMPACTED HISTORY GIVES ANOTHER REPORT: {line}")
        report.add(f"{name}.report_differences", len(differ), "", "<=", 0,
                   note="CSV bytes, XLSX cells, recomputed hourly rows")
        runs_bytes = sum(v for k, v in after.items() if k.split(".")[0] == "bay_runs")
        report.add(f"{name}.runs_per_bay_day", after_rows["bay_runs"] / bay_days, "",
                   note=f"{runs_bytes / max(after_rows['bay_runs'], 1):.0f} B per run with its indexes")
        if total_after / bay_days > AIM_BYTES:
            log(f"  {backend}: over the aim of {AIM_BYTES:.0f} B: the same runs in other layouts (bay_runs only):")
            log(f"    {'as it is':<10} {runs_bytes:>12,} B  {runs_bytes / bay_days:7.1f} B/bay-day  "
                f"{after_rows['bay_runs']:>9,} rows")
            for layout, (size, rows) in other_layouts(backend, compacted_url).items():
                if layout != "bay_day" and rows != after_rows["bay_runs"]:
                    log(f"    {layout}: {after_rows['bay_runs'] - rows} runs share a (bay, ts) with another")
                log(f"    {layout:<10} {size:>12,} B  {size / bay_days:7.1f} B/bay-day  {rows:>9,} rows")
                report.add(f"{name}.layout.{layout}.bytes_per_bay_day", size / bay_days, "B",
                           note=f"runs only; as stored now {runs_bytes / bay_days:.0f} B")
        labels = {"csv": "month_csv", "xlsx": "month_xlsx", "rollup": "rollup_recompute"}
        for what, label in labels.items():
            b, a = statistics.median(seconds[("before", what)]), statistics.median(seconds[("after", what)])
            report.add(f"{name}.{label}.before", b, "s", note=f"median of {len(seconds[('before', what)])}")
            report.add(f"{name}.{label}.after", a, "s", note=f"median of {len(seconds[('after', what)])}")
            report.add(f"{name}.{label}.after/before", a / b, "", "<=", SLOWER)
    finally:
        datasets.drop(backend, compacted_key)
        datasets.drop(backend, _key(cfg, "raw"))


def run(report: Report, backends: list[str], cfg: CompactionConfig, log=print) -> None:
    """The benchmark on each backend in turn."""
    for backend in backends:
        measure(report, backend, cfg, log)
