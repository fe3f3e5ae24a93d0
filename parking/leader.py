"""Which process of a deployment runs the scheduler: leader election by a PostgreSQL advisory lock.

This module owns `Leadership` (one process's part in the election) and `startup_lock` (one
process at a time migrating the schema and importing the first lots).

A deployment is its database, so the election needs no configuration: every process that would
run the scheduler opens a connection of its own (autocommit: it never holds a transaction open,
which would keep VACUUM from cleaning up) and tries `pg_try_advisory_lock(SCHEDULER_LOCK)`. The one
that gets it leads until its connection ends; the others stand by and try again every `RETRY`
seconds. PostgreSQL frees a session lock when its session ends, whatever ends it:

- the leader's process dies (SIGKILL included): its socket closes, the lock is free at once, and
  a standby takes it at its next try (within RETRY seconds);
- the leader's host or network vanishes without closing anything: the server's TCP keepalive on
  the lock's connection (`SERVER_KEEPALIVE`, set per connection) ends the session after
  about 40 s of silence, so a standby leads within a minute;
- the leader loses its connection (the server restarts, an operator terminates the backend, the
  network drops): the leader notices at once when the server closes the socket (it waits on the
  socket, not on a timer), and within ~16 s when packets vanish (a check every RETRY seconds,
  bounded by the client's keepalive and `tcp_user_timeout`, parking.dbconnect), and stops
  scheduling then, before PostgreSQL frees the lock for another.

The standbys' tries also ask PostgreSQL who holds the lock (the leader's connection names its
host and pid as `application_name`), so every process can say in /healthz who leads.

SQLite has no server to hold a lock: the process leads by itself, as one process always did, and
says so in its log; running more than one scheduler on one SQLite file is the operator's mistake
(the others take `--no-scheduler`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .dbconnect import engine_options
from .timefmt import iso_utc

log = logging.getLogger("parking.leader")

# Advisory lock keys (64-bit, one namespace per database): 'parksche' and 'parkinit' in ASCII.
SCHEDULER_LOCK = int.from_bytes(b"parksche", "big")
STARTUP_LOCK = int.from_bytes(b"parkinit", "big")
# Seconds between a standby's tries, and between the leader's checks of a silent connection.
RETRY = 5.0
# The lock's connection on the server's side: a leader that has gone silent is given up after
# idle + interval x count = 20 + 5 x 4 = 40 s, well after the leader itself stops (~16 s).
SERVER_KEEPALIVE = {"tcp_keepalives_idle": 20, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}
CHECK_TIMEOUT = 5.0  # statement_timeout of the lock's connection (its statements are trivial)


def is_postgresql(url: str) -> bool:
    """Whether the database URL is PostgreSQL's."""
    return make_url(url).get_backend_name() == "postgresql"


def process_name() -> str:
    """This process as other processes see it: host and pid (an application_name, at most 63 bytes)."""
    return f"parking scheduler {socket.gethostname()[:32]} pid {os.getpid()}"


def lock_engine(url: str, options: dict | None, name: str):
    """An engine of single connections for a lock: autocommit, its own keepalive and name."""
    options = engine_options(url, options, statement_timeout=CHECK_TIMEOUT)
    connect_args = dict(options.get("connect_args") or {})
    keepalive = " ".join(f"-c {key}={value}" for key, value in SERVER_KEEPALIVE.items())
    connect_args["options"] = f"{connect_args.get('options', '')} {keepalive}".strip()
    connect_args["application_name"] = name
    return create_engine(url, connect_args=connect_args, poolclass=NullPool, isolation_level="AUTOCOMMIT")


class Leadership:
    """This process's part in the election: `start()`, then `leading` says whether it may schedule.

    `on_gain` and `on_loss` are called on the election's thread (on SQLite, `on_gain` in `start`);
    `on_loss` is called the moment the lock's connection is found gone, before anything else.
    """

    def __init__(self, url: str, options: dict | None, on_gain: Callable[[], None],
                 on_loss: Callable[[], None], retry: float = RETRY):
        self.url = url
        self.postgresql = is_postgresql(url)
        self.options = options
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.retry = retry
        self.name = process_name()
        self.leading = False
        self.leader: str | None = None  # who leads, as far as this process knows
        self.since: float | None = None  # when this process began to lead
        self._engine = None
        self._connection: Connection | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._problem: str | None = None  # the last connection failure, logged once

    def start(self) -> Leadership:
        """Lead at once (SQLite) or begin trying for the lock on a thread (PostgreSQL)."""
        if not self.postgresql:
            log.info("scheduler: SQLite database, so no election: this process runs the scheduled jobs "
                     "(give any other process on this database --no-scheduler)")
            self._gain()
            return self
        self._engine = lock_engine(self.url, self.options, self.name)
        log.info("scheduler: electing a leader among this database's processes "
                 "(PostgreSQL advisory lock %d; standbys try every %.0f s)", SCHEDULER_LOCK, self.retry)
        self._thread = threading.Thread(target=self._run, name="scheduler-election", daemon=True)
        self._thread.start()
        return self

    def status(self) -> dict:
        """For /healthz: whether this process leads, who does, and by what election."""
        return {
            "leader": self.leading,
            "election": "postgresql advisory lock" if self.postgresql else "none: SQLite, this process",
            "leader_process": self.name if self.leading else self.leader,
            "leading_since": iso_utc(self.since),
        }

    def stop(self) -> None:
        """Stop trying and give the lock back (the caller has stopped its jobs first)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=CHECK_TIMEOUT + 5)
        if self._thread is None or not self._thread.is_alive():
            self._close(unlock=True)
        self.leading = False
        self._wake_r.close()
        self._wake_w.close()
        if self._engine is not None:
            self._engine.dispose()

    # --- the election's thread --------------------------------------------------------------------
    def _run(self) -> None:
        """Try, or check what is held, until stopped."""
        while not self._stopping.is_set():
            try:
                if self._connection is None:
                    self._connection = self._engine.connect()
                if self.leading:
                    self._connection.execute(text("SELECT 1"))
                elif self._connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK}):
                    if self._stopping.is_set():
                        break  # stop() releases it
                    self._gain()
                else:
                    self._standby()
                self._problem = None
            except SQLAlchemyError as exc:
                self._lost(exc)
            self._wait()

    def _wait(self) -> None:
        """RETRY seconds, or less: a stop, or the lock's socket readable (the server closing it)."""
        watched = [self._wake_r]
        fd = self._socket()
        if self.leading and fd is not None:
            watched.append(fd)
        readable, _, _ = select.select(watched, [], [], self.retry)
        if fd is not None and fd in readable:
            # The server wrote to an idle session: it is ending it (or a notice, checked alike).
            log.debug("scheduler: the lock's connection became readable; checking it")

    def _socket(self) -> int | None:
        """The lock connection's socket, when there is one."""
        try:
            return self._connection.connection.dbapi_connection.fileno() if self._connection is not None else None
        except Exception:  # noqa: BLE001 - a closed connection has no socket to watch
            return None

    def _gain(self) -> None:
        self.leading, self.since, self.leader = True, time.time(), self.name
        if self.postgresql:
            log.info("scheduler: this process (%s) leads and runs the scheduled jobs", self.name)
        self.on_gain()

    def _standby(self) -> None:
        """The lock is held by another process: find out which, and log it when it changes."""
        holder = self._connection.scalar(
            text("SELECT coalesce(a.application_name, 'pid ' || l.pid) FROM pg_locks l "
                 "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                 "AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid) AND l.objsubid = 1 AND l.database = "
                 "(SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"hi": SCHEDULER_LOCK >> 32, "lo": SCHEDULER_LOCK & 0xFFFFFFFF},
        ) or "another process"
        if holder != self.leader:
            log.info("scheduler: standing by; %s leads (trying again every %.0f s)", holder, self.retry)
        self.leader = holder

    def _lost(self, exc: SQLAlchemyError) -> None:
        """The lock's connection failed: stop scheduling at once if leading, then start afresh."""
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if self.leading:
            self.leading, self.since, self.leader = False, None, None
            self.on_loss()
            log.error("scheduler: lost the database connection that holds the leadership (%s): stopped "
                      "scheduling; trying again every %.0f s", reason, self.retry)
        elif reason != self._problem:
            log.warning("scheduler: cannot reach the database to elect a leader (%s); trying again every %.0f s",
                        reason, self.retry)
        self._problem = reason
        self._close(unlock=False)

    def _close(self, unlock: bool) -> None:
        """Close the lock's connection (giving the lock back first when asked and held)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if unlock and self.leading:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULER_LOCK})
            connection.close()
        except SQLAlchemyError:
            connection.invalidate()  # the session is gone anyway, and its lock with it


@contextlib.contextmanager
def startup_lock(url: str, options: dict | None) -> Iterator[None]:
    """One process of the deployment at a time in the block (migrations, the first lot import):
    processes started at once on one PostgreSQL would otherwise race to create the same tables.
    SQLite: no lock (one process)."""
    if not is_postgresql(url):
        yield
        return
    engine = lock_engine(url, options, f"parking start {socket.gethostname()[:32]} pid {os.getpid()}")
    try:
        with engine.connect() as connection:
            # Waiting is the point here: the statement timeout does not apply to the wait.
            connection.execute(text("SET statement_timeout = 0"))
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK})
    finally:
        engine.dispose()
