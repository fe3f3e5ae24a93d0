"""The gateway's writer: the only place the gateway stores readings.

This module owns `Writer`, a thread with its own database connection (`_writer_engine`) that
stores readings through `parking.ingest` in small groups, one commit each; the event loop never
waits on the database, it awaits a future the writer settles after the commit that holds the
request's readings (`_settle_futures`). Also here: rolling a failed group back, telling an
unreachable or locked database (5.03, `storage_unavailable`) from a bug (5.00), and the limits
of the queue, the groups and the lock wait.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from aiocoap import error
from flask import Flask
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from parking import ingest

from .resources import RETRY_AFTER, Unavailable

log = logging.getLogger("parking.gateway")

BUSY_RETRY_AFTER = 1  # Max-Age (s) of a 5.03 when the queue is full
# Requests waiting for the writer; beyond this the gateway answers 5.03 instead of growing.
QUEUE_LIMIT = 5_000
# Requests per commit: large enough to amortise a commit, small enough that a group is stored
# well inside the 0.1 s after which aiocoap stops piggy-backing the answer on the ACK.
GROUP_LIMIT = 64
# How long the writer waits for a locked database (or PostgreSQL for a lock) before answering
# 5.03; the web app's default of 10 s would stall every sensor behind one long transaction.
LOCK_TIMEOUT = 2.0
CONNECT_TIMEOUT = 3  # seconds for a PostgreSQL connection attempt


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a database error means 'unreachable or locked' (5.03) rather than a bug (5.00)."""
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass(eq=False, slots=True)
class _Job:
    """One POST: its readings, when it arrived, and the future its handler awaits."""

    readings: list
    received_at: float
    future: asyncio.Future


@dataclass
class WriterStats:
    """Counters kept by the writer thread (read, never written, by others)."""

    requests: int = 0
    readings: int = 0
    stored: int = 0
    groups: int = 0
    commit_seconds: float = 0.0
    commit_max: float = 0.0


_STOP = object()


class Writer:
    """Stores requests in small groups on its own thread and database connection.

    Each request is validated on its own (`ingest.prepare`: 4.00 / 4.04 for that request only);
    the valid ones of a group are stored with one `ingest.store` and one commit; then every
    request's future is settled on the event loop. A database error rolls the group back and
    answers it 5.03; the next group tries again, so the gateway recovers without a restart.
    """

    def __init__(self, app: Flask, loop: asyncio.AbstractEventLoop, *, lock_timeout: float,
                 queue_limit: int, group_limit: int, on_commit):
        self.app = app
        self.loop = loop
        self.queue: queue.Queue = queue.Queue(queue_limit)
        self.group_limit = group_limit
        self.on_commit = on_commit
        self.stats = WriterStats()
        self.available = True
        self.stale_after = float(app.config["STALE_AFTER"])
        self.engine = _writer_engine(app.config, lock_timeout)
        self.directory = ingest.BayDirectory()
        self._thread = threading.Thread(target=self._run, name="coap-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, readings: list, received_at: float) -> asyncio.Future:
        """Queue one request (event loop only); the future is settled once it is stored or refused."""
        job = _Job(readings, received_at, self.loop.create_future())
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Unavailable("gateway busy: too many requests waiting", BUSY_RETRY_AFTER) from None
        return job.future

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then end the thread and close its connections (blocking)."""
        if self._thread.is_alive():
            self.queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
        self.engine.dispose()

    def _run(self) -> None:
        """Take groups off the queue until told to stop."""
        with self.app.app_context(), Session(self.engine) as session:
            stopping = False
            while not stopping:
                group = [self.queue.get()]
                if group[0] is _STOP:
                    break
                while len(group) < self.group_limit:
                    try:
                        job = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stopping = True
                        break
                    group.append(job)
                self._write(session, group)

    def _write(self, session: Session, group: list[_Job]) -> None:
        """Validate, store and commit one group, then settle its futures."""
        started = time.perf_counter()
        outcomes: list[Exception | None] = [None] * len(group)
        result = None
        try:
            # One query for the group's bays not yet cached, instead of one per request in prepare.
            self.directory.lookup(session, {r.bay for job in group for r in job.readings})
            valid = []
            for index, job in enumerate(group):
                try:
                    valid += ingest.prepare(session, job.readings, now=job.received_at, directory=self.directory)
                except ingest.UnknownBay as exc:
                    outcomes[index] = error.NotFound(exc.message)
                except ingest.InvalidReading as exc:
                    outcomes[index] = error.BadRequest(exc.message)
            if valid:
                # One receipt time per group: its requests arrived within milliseconds of each other.
                received_at = max(job.received_at for job in group)
                result = ingest.store(session, valid, received_at=received_at,
                                      stale_after=self.stale_after, directory=self.directory)
            session.commit()
        except Exception as exc:  # noqa: BLE001 - every failure must still answer every request
            _rollback(session)
            if storage_unavailable(exc):
                self._set_available(False, exc)
                # Whatever is queued would fail the same way: answer it now rather than one
                # lock timeout per group later.
                group = group + self._drain()
                outcomes = [Unavailable(f"storage unavailable: retry in {RETRY_AFTER} s") for _ in group]
            else:
                log.error("could not store a group of %d requests", len(group), exc_info=exc)
                self.directory.forget()
                outcomes = [error.InternalServerError("could not store: internal error") for _ in group]
        else:
            self._set_available(True)
        elapsed = time.perf_counter() - started
        self._count(group, result, elapsed)
        self._settle(group, outcomes)
        if result is not None and result.lots:
            self.on_commit(result.lots)

    def _drain(self) -> list[_Job]:
        """Every job queued right now (a stop marker is put back for `_run`)."""
        jobs = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is _STOP:
                self.queue.put_nowait(_STOP)
                return jobs
            jobs.append(job)

    def _settle(self, group: list[_Job], outcomes: list) -> None:
        """Hand the outcomes to the event loop in one wake-up."""
        try:
            self.loop.call_soon_threadsafe(_settle_futures, group, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _set_available(self, available: bool, exc: BaseException | None = None) -> None:
        """Log each change of the database's reachability once, not once per group."""
        if available and not self.available:
            log.warning("database reachable again; storing readings")
        elif not available and self.available:
            log.warning("database unavailable, answering 5.03: %s", _first_line(exc))
            self.directory.forget()
        self.available = available

    def _count(self, group: list[_Job], result, elapsed: float) -> None:
        """Update the counters behind the periodic summary."""
        stats = self.stats
        stats.requests += len(group)
        stats.readings += sum(len(job.readings) for job in group)
        stats.stored += result.stored if result is not None else 0
        stats.groups += 1
        stats.commit_seconds += elapsed
        stats.commit_max = max(stats.commit_max, elapsed)


def _settle_futures(group: list[_Job], outcomes: list) -> None:
    """Resolve each request's future (on the event loop); a cancelled request is skipped."""
    for job, outcome in zip(group, outcomes):
        if job.future.done():
            continue
        if outcome is None:
            job.future.set_result(None)
        else:
            job.future.set_exception(outcome)


def _rollback(session: Session) -> None:
    """Roll back; a connection that died mid-transaction may fail even that, and is dropped."""
    try:
        session.rollback()
    except Exception:  # noqa: BLE001
        session.close()


def _first_line(exc: BaseException | None) -> str:
    """An exception as one short line for the log."""
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _writer_engine(config, lock_timeout: float):
    """The writer's own engine: one connection that waits at most `lock_timeout` for a lock.

    Separate from the web app's pool so that its short lock timeout cannot leak into web requests.
    """
    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    connect_args = dict(options.pop("connect_args", {}))
    if url.get_backend_name() == "postgresql":
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT)
        connect_args["options"] = f"-c lock_timeout={int(lock_timeout * 1000)}"
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        options.setdefault("pool_size", 1)
        options.setdefault("max_overflow", 1)
    options.setdefault("pool_pre_ping", True)
    engine = create_engine(url, connect_args=connect_args, **options)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, connection_record):  # noqa: ARG001
            # Runs after parking's own connect hook (engine listeners follow class-wide ones),
            # so it overrides that hook's 10 s for this engine only.
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
            cursor.close()
            # The driver would BEGIN a deferred transaction; `_begin` below starts it instead.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection):
            # A deferred transaction that read first and then writes while another connection
            # writes fails at once, without waiting for busy_timeout; BEGIN IMMEDIATE takes the
            # write lock up front, where the wait applies.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
