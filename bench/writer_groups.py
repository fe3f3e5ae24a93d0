"""What one writer group costs the database: statements, round trips, time in the database and in Python.

By hand. The gateway's writer (`gateway.writer_process.GroupIngest`) runs in this process on a fresh
database with the ingest city and stores groups of one-reading requests as the load generator
makes them (bays in turn, `ts` and `seq` rising, every reading new). After a history (`--history`
readings per bay, all within the hour the seq rule looks back) and 100 groups it counts, per group: the statements the driver ran (an
`executemany` counts each of its rows), the round trips (on PostgreSQL from libpq's protocol trace:
each time the client sends after having read an answer), the time inside the driver's execute
calls that SQLAlchemy makes (statements sent to the driver directly, as a pipeline, are only in the
trace), and the CPU of this process and of the PostgreSQL backend serving the connection.

    python -m bench.writer_groups [--db postgresql|sqlite] [--groups 300] [--size 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from . import datasets
from .ingest import CLOCK_TICKS, IngestConfig, prepare_database


class Counter:
    """Statements and time inside the driver, from SQLAlchemy's cursor events on one engine."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.statements = 0
        self.calls = 0
        self.seconds = 0.0
        self.kinds: dict[str, int] = {}
        self.kind_seconds: dict[str, float] = {}
        self._started = 0.0
        self._kind = ""
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ARG002
        rows = len(parameters) if executemany else 1
        self.statements += rows
        self.calls += 1
        kind = " ".join(statement.split()[:3])[:40]
        self.kinds[kind] = self.kinds.get(kind, 0) + rows
        self._kind = kind
        self._started = time.perf_counter()

    def _after(self, *args) -> None:  # noqa: ARG002
        spent = time.perf_counter() - self._started
        self.seconds += spent
        self.kind_seconds[self._kind] = self.kind_seconds.get(self._kind, 0.0) + spent


def round_trips(trace: str) -> tuple[int, int]:
    """(round trips, statements) in a libpq trace: a round trip is each run of frontend messages
    after backend ones; a statement each Bind (extended protocol) or Query (simple) sent."""
    trips, statements, last = 0, 0, "B"
    for line in trace.splitlines():
        fields = line.split("\t")
        side = fields[0][:1]
        if side == "F" and last == "B":
            trips += 1
        if side == "F" and len(fields) > 2 and fields[2] in ("Bind", "Query"):
            statements += 1
        if side in "FB":
            last = side
    return trips, statements


def backend_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a PostgreSQL backend (0 when not readable)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def groups(bays: list[str], start: int, count: int, size: int, t0: float):
    """`count` groups of `size` one-reading requests, numbered from `start` like bench.loadgen's."""
    n = start
    for _ in range(count):
        group = []
        for _ in range(size):
            reading = (bays[n % len(bays)], bool(n & 1), t0 + n * 1e-4, n & 0xFFFFFFFF, None)
            group.append((time.time(), [reading], None, None))
            n += 1
        yield group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="requests per group (the gateway's GROUP_LIMIT)")
    parser.add_argument("--history", type=int, default=20,
                        help="readings per bay stored before the measured groups (all within the hour "
                             "the seq rule looks back)")
    parser.add_argument("--trace", help="keep libpq's protocol trace of the measured groups in this file")
    parser.add_argument("--pg-database", default=f"parking_bench_writer_{os.getpid()}",
                        help="the PostgreSQL database to make (and drop at the end)")
    args = parser.parse_args(argv)
    datasets.PG_PREFIX = args.pg_database
    sys.path.insert(0, str(datasets.ROOT))
    from sqlalchemy.orm import Session

    from gateway.writer_process import GroupIngest

    with tempfile.TemporaryDirectory() as tmp:
        url, bays, _ = prepare_database(args.db, IngestConfig(), Path(tmp))
        app = datasets.make_app(url, SENSOR_AUTH="none")
        ingester = GroupIngest(app, lock_timeout=2.0)
        counter = Counter(ingester.engine)
        t0 = time.time() - 3600
        serial = 0
        with app.app_context(), Session(ingester.engine) as session:
            # History first in large groups (quick), then groups of the measured size: the writer's
            # bay directory warm, the database as after a while in service.
            fill = len(bays) * args.history // 1000
            for group in groups(bays, serial, fill, 1000, t0):
                ingester.write(session, group)
            serial += fill * 1000
            warm = 100
            for group in groups(bays, serial, warm, args.size, t0):
                ingester.write(session, group)
            serial += warm * args.size
            dbapi = session.connection().connection.dbapi_connection
            pid = dbapi.info.backend_pid if args.db == "postgresql" else None
            session.commit()
            trace_path = Path(args.trace or Path(tmp) / "trace.txt")
            trace_file = open(trace_path, "w")
            if pid is not None:
                import psycopg

                dbapi.pgconn.trace(trace_file.fileno())
                dbapi.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            counter.__init__(ingester.engine)
            commit, commit_seconds = session.commit, [0.0]

            def timed_commit() -> None:
                began = time.perf_counter()
                commit()
                commit_seconds[0] += time.perf_counter() - began

            session.commit = timed_commit
            cpu0, started, own0 = backend_cpu(pid), time.perf_counter(), time.process_time()
            stored = 0
            for group in groups(bays, serial, args.groups, args.size, t0):
                outcomes, n, _ = ingester.write(session, group)
                assert all(o is None for o in outcomes), outcomes
                stored += n
            wall = time.perf_counter() - started
            cpu1, own = backend_cpu(pid), time.process_time() - own0
            if pid is not None:
                dbapi.pgconn.untrace()
            trace_file.close()
            trips, sent = round_trips(trace_path.read_text()) if pid is not None else (None, None)
        ingester.engine.dispose()
        if args.db == "postgresql":
            datasets.pg_drop(datasets.PG_PREFIX)
    per = args.groups
    print(f"{args.db}: {per} groups of {args.size} requests, {stored} readings stored, {wall:.2f} s "
          f"({per * args.size / wall:.0f} requests/s in this one process)")
    if trips is not None:  # PostgreSQL: what went over the wire, raw driver statements included
        print(f"per group: {trips / per:.1f} round trips, {sent / per:.1f} statements sent (BEGIN, COMMIT and any "
              f"ping of the pool included)")
    print(f"per group: {wall / per * 1000:.2f} ms wall; CPU: this process {own / per * 1000:.2f} ms"
          + (f", the PostgreSQL backend {(cpu1 - cpu0) / per * 1000:.2f} ms" if pid is not None else ""))
    if counter.calls:
        print(f"through SQLAlchemy: {counter.statements / per:.1f} statements in {counter.calls / per:.1f} driver calls, "
              f"{counter.seconds / per * 1000:.2f} ms in them, {commit_seconds[0] / per * 1000:.2f} ms in COMMIT")
        for kind, rows in sorted(counter.kinds.items(), key=lambda kv: -kv[1]):
            print(f"  {rows / per:6.1f} × {kind:<40} {counter.kind_seconds[kind] / per * 1000:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
