"""The gateway's writer process: the only place the gateway stores readings.

This module owns what runs in the process `gateway.writer.Writer` starts (`python -m
gateway.writer_process FD`, FD its end of a socket pair; `main`): its
own app (`parking.create_app` with the gateway's database settings) and database connection
(`_writer_engine`, with its lock timeout, `BEGIN IMMEDIATE` on SQLite and a small SQLite page
cache), and the loop that takes one group of requests at a time off the socket, validates each
request against the bays (`ingest.prepare`), stores the valid ones with one `ingest.store` and
one commit, and answers the group with one outcome per request. Also here: telling an
unreachable or locked database (5.03, `storage_unavailable`) from a bug (5.00), rolling a failed
group back, and the wire format both sides speak (`frame`, `Channel`).

The parent (the event loop) never touches the database for a POST; this process never touches
CoAP. It lives exactly as long as its socket: end of file (the gateway stopped, or was killed)
makes it finish the group it is storing and exit.
"""
from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time

from sqlalchemy import bindparam, create_engine, event, update
from sqlalchemy import select as sql_select  # the module `select` is the socket one
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from parking.dbconnect import engine_options, sqlite_pragmas

from .errors import KeyRevoked, PayloadError, ReplayedElsewhere, StorageFailed, Unavailable, UnknownBay
from .security import take_seqno

log = logging.getLogger("parking.gateway.writer")

# A statement of the writer may take this much longer than the lock wait before PostgreSQL
# cancels it (its groups take milliseconds); the gateway gives a group a little more (writer.py).
STATEMENT_MARGIN = 1.0
# SQLite page cache of the writer's connection, KiB. parking's connect hook asks for 64 MiB, which
# the writer's connection filled at the rate the database grew (≈3 MiB/min under load: RSS never
# levelled off); the pages it needs per group (index leaves and bay rows) are a few hundred.
WRITER_CACHE_KIB = 8 * 1024
# A pooled PostgreSQL connection idle for longer than this (s) is pinged before the writer uses it.
PING_AFTER_IDLE = 1.0
# Set to a file name, the writer process profiles itself (cProfile) and dumps the stats there on
# exit: used by `python -m bench.profile_gateway`.
PROFILE_ENV = "PARKING_WRITER_PROFILE"

# Messages. gateway → writer: (INIT, app config, lock timeout, log level) first, then
# (GROUP, [(received_at, [(bay, occupied, ts, seq, battery), …], credential id or None, the
# request's OSCORE sequence number or None), …]) and (STOP,). writer → gateway: (READY,) once it is set up, then one per
# group, in order: (DONE, outcomes, stored, seconds, available, changed lot ids), outcomes one per
# request: None (stored: 2.04) or the request's refusal, a `gateway.errors` error (it pickles
# with its text).
INIT, GROUP, STOP, READY, DONE = "init", "group", "stop", "ready", "done"
_HEADER = struct.Struct("!I")


def frame(message) -> bytes:
    """One message as bytes on the socket: its length, then its pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def unframe(buffer: bytearray) -> list:
    """The complete messages at the start of `buffer`, removed from it."""
    messages, start, size = [], 0, len(buffer)
    while size - start >= 4:
        (length,) = _HEADER.unpack_from(buffer, start)
        if size - start - 4 < length:
            break
        messages.append(pickle.loads(memoryview(buffer)[start + 4 : start + 4 + length]))
        start += 4 + length
    del buffer[:start]
    return messages


class Channel:
    """The writer's end of the socket: blocking reads of whole messages, and replies."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setblocking(True)
        self._buffer = bytearray()
        self._ready: list = []

    def receive(self, wait: bool = True):
        """The next message; None at end of file (or when not `wait`ing and none is there)."""
        while not self._ready:
            if not wait and not select.select([self.sock], [], [], 0)[0]:
                return None
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionError:
                data = b""
            if not data:
                return None
            self._buffer += data
            self._ready = unframe(self._buffer)
        return self._ready.pop(0)

    def send(self, message) -> bool:
        """Send one message; False when the gateway is gone."""
        try:
            self.sock.sendall(frame(message))
        except OSError:
            return False
        return True


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a database error means 'unreachable or locked' (5.03) rather than a bug (5.00)."""
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class GroupIngest:
    """The writer process's side of storing: one group of requests at a time through
    `parking.ingest`, on its own session and engine; what each request gets."""

    def __init__(self, app, lock_timeout: float):
        from parking import ingest
        from parking.dbutil import Statements

        self.ingest = ingest
        self.Statements = Statements
        self.app = app
        self.stale_after = float(app.config["STALE_AFTER"])
        self.backlog_days = float(app.config["MAX_BACKLOG_DAYS"])  # sensors' readings: bounded age
        self.engine = _writer_engine(app.config, lock_timeout)
        self.directory = ingest.BayDirectory()
        self.available = True

    def write(self, session, group: list[tuple]) -> tuple[list, int, set]:
        """Validate, store and commit one group of (received_at, readings, credential, seqno) requests.

        Returns one outcome per request, how many readings were new, and the lots they changed.
        """
        ingest = self.ingest
        SensorReading = ingest.SensorReading
        jobs = [(received_at, [SensorReading(*r) for r in readings]) for received_at, readings, _, _ in group]
        outcomes: list = [None] * len(jobs)
        result = None
        try:
            # Revocation takes effect at once: checked in the transaction that would store.
            revoked = self.revoked(session, {c for _, _, c, _ in group if c is not None})
            # Replays are decided by the windows stored in the database, locked until the commit:
            # a request another gateway process let through is refused here.
            windows, replayed = self.check_replays(session, group, revoked)
            # One query for the group's bays not yet cached, instead of one per request in prepare.
            self.directory.lookup(session, {r.bay for _, readings in jobs for r in readings})
            valid = []
            for index, (received_at, readings) in enumerate(jobs):
                if group[index][2] in revoked:
                    outcomes[index] = KeyRevoked()
                    continue
                if index in replayed:
                    outcomes[index] = ReplayedElsewhere()
                    continue
                try:
                    valid += ingest.prepare(session, readings, now=received_at, directory=self.directory,
                                            backlog_days=self.backlog_days)
                except ingest.UnknownBay as exc:
                    outcomes[index] = UnknownBay(exc.message)
                except ingest.InvalidReading as exc:
                    outcomes[index] = PayloadError(exc.message)
            writes = self.Statements(session)
            if valid:
                # One receipt time per group: its requests arrived within milliseconds of each other.
                received_at = max(received_at for received_at, _ in jobs)
                result = ingest.store(session, valid, received_at=received_at,
                                      stale_after=self.stale_after, directory=self.directory, writes=writes)
            self.keep_windows(session, windows)
            # The group's inserts and updates with the COMMIT: one round trip on PostgreSQL.
            writes.run(commit=True)
            session.commit()
        except Exception as exc:  # noqa: BLE001 - every failure must still answer every request
            _rollback(session)
            if storage_unavailable(exc):
                self.set_available(False, exc)
                return [Unavailable() for _ in jobs], 0, set()
            log.error("could not store a group of %d requests", len(jobs), exc_info=exc)
            self.directory.forget()
            return [StorageFailed("could not store: internal error") for _ in jobs], 0, set()
        self.set_available(True)
        if result is None:
            return outcomes, 0, set()
        return outcomes, result.stored, result.lots

    def revoked(self, session, credentials: set[int]) -> set[int]:
        """Those of the credentials that are no longer in force."""
        if not credentials:
            return set()
        from parking.models import SensorCredential as C

        live = session.scalars(sql_select(C.id).where(C.id.in_(credentials), C.revoked_at.is_(None)))
        return credentials - set(live)

    def check_replays(self, session, group: list[tuple], revoked: set[int]) -> tuple[dict, set[int]]:
        """(credential → the window to store, indexes of the group's requests that are replays).

        Each credential's window is read from its row, locked for the rest of the transaction
        (FOR UPDATE, in id order: writers of several processes take them in turn), then each
        request's sequence number is let through it or found seen. The window stored is the
        database's with this group's numbers added: it only moves forward, whichever process
        stores, and it holds every request that was stored. (A process's own copy also holds
        numbers of requests refused before the writer, or of the first blocks of a Block1
        transfer; a replay of those is refused again for what it says, or cannot complete.)
        """
        credentials = sorted({c for _, _, c, _ in group if c is not None and c not in revoked})
        if not credentials:
            return {}, set()
        from parking.models import SensorCredential as C

        rows = session.execute(
            sql_select(C.id, C.replay_index, C.replay_bits).where(C.id.in_(credentials)).order_by(C.id).with_for_update()
        )
        stored = {row.id: (row.replay_index, row.replay_bits) for row in rows}
        windows = dict(stored)
        replayed = set()
        for index, (_, _, credential, seqno) in enumerate(group):
            if credential in windows and seqno is not None:
                taken = take_seqno(windows[credential], seqno)
                if taken is None:
                    replayed.add(index)
                else:
                    windows[credential] = taken
        return {c: w for c, w in windows.items() if w != stored[c]}, replayed

    def keep_windows(self, session, windows: dict) -> None:
        """Store the credentials' replay windows in the group's commit, so that what was let
        through is refused as a replay after a restart, and by every other gateway process."""
        if windows:
            from parking.models import SensorCredential as C

            # A Core UPDATE run as one executemany: the ORM's bulk update by primary key did the
            # same with several times the Python work per row (bench.profile_gateway --oscore).
            table = C.__table__
            statement = update(table).where(table.c.id == bindparam("credential")).values(
                replay_index=bindparam("index"), replay_bits=bindparam("bits"))
            session.execute(statement, [{"credential": c, "index": index, "bits": bits}
                                        for c, (index, bits) in windows.items()])

    def set_available(self, available: bool, exc: BaseException | None = None) -> None:
        """Log each change of the database's reachability once, not once per group."""
        if available and not self.available:
            log.warning("database reachable again; storing readings")
        elif not available and self.available:
            log.warning("database unavailable, answering 5.03: %s", _first_line(exc))
            self.directory.forget()
        self.available = available


def serve(channel: Channel, ingester: GroupIngest, between_groups=None) -> None:
    """Store groups until told to stop or the socket ends; answer each group in order."""
    from sqlalchemy.orm import Session

    with ingester.app.app_context(), Session(ingester.engine) as session:
        while True:
            if between_groups is not None:
                between_groups()
            message = channel.receive()
            if message is None or message[0] == STOP:
                return
            started = time.perf_counter()
            outcomes, stored, lots = ingester.write(session, message[1])
            reply = (DONE, outcomes, stored, time.perf_counter() - started, ingester.available, sorted(lots))
            if not channel.send(reply):
                return  # the gateway is gone: nobody is waiting for the answer
            if not ingester.available and not _refuse_waiting(channel, ingester):
                return


def _refuse_waiting(channel: Channel, ingester: GroupIngest) -> bool:
    """After a 5.03: answer the groups already waiting 5.03 at once rather than one lock timeout
    each later (they would fail the same way); the next group to arrive tries again.

    Returns False when the gateway is gone or said stop.
    """
    while True:
        message = channel.receive(wait=False)
        if message is None:
            return True
        if message[0] == STOP:
            return False
        reply = (DONE, [Unavailable() for _ in message[1]], 0, 0.0, ingester.available, [])
        if not channel.send(reply):
            return False


def main(fd: int) -> int:
    """The writer process, on its end of the socket pair; its first message says how to set up."""
    # It runs in its own process group, so Ctrl-C in a terminal reaches only the gateway, which
    # then stops it cleanly; ignored here too in case a signal is sent to it by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    channel = Channel(sock)
    first = channel.receive()
    if first is None or first[0] != INIT:
        sock.close()
        return 0  # the gateway went away before it said anything
    _, config, lock_timeout, log_level = first
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("parking.gateway").setLevel(log_level)
    from parking import create_app

    app = create_app(config)
    ingester = GroupIngest(app, lock_timeout)
    profiler = _Profiler(os.environ.get(PROFILE_ENV))
    try:
        if channel.send((READY,)):
            serve(channel, ingester, profiler.between_groups)
    finally:
        profiler.dump()
        ingester.engine.dispose()
        sock.close()
    return 0


class _Profiler:
    """cProfile over the writer's work when PROFILE_ENV names a file; SIGUSR1 starts it afresh."""

    def __init__(self, path: str | None):
        self.path = path
        self.profile = None
        self._restart = False
        if path:
            import cProfile

            self.profile = cProfile.Profile()
            signal.signal(signal.SIGUSR1, self._ask_restart)
            self.profile.enable()

    def _ask_restart(self, signum, frame) -> None:  # noqa: ARG002
        self._restart = True

    def between_groups(self) -> None:
        """Drop what was profiled so far if asked to (between groups, never inside one)."""
        if self._restart and self.profile is not None:
            import cProfile

            self._restart = False
            self.profile.disable()
            self.profile = cProfile.Profile()
            self.profile.enable()

    def dump(self) -> None:
        if self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(self.path)


def _rollback(session) -> None:
    """Roll back; a connection that died mid-transaction may fail even that, and is dropped."""
    try:
        session.rollback()
    except Exception:  # noqa: BLE001
        session.close()


def _first_line(exc: BaseException | None) -> str:
    """An exception as one short line for the log."""
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _ping_if_idle(engine) -> None:
    """Check out a connection idle for more than PING_AFTER_IDLE seconds only after a ping, as
    pool_pre_ping does for every check-out: a connection the server ended meanwhile (a restart,
    a failover) is replaced before a group is stored on it, not found dead by the group."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection, record) -> None:  # noqa: ARG001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, proxy) -> None:  # noqa: ARG001
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001
            # The pool's own answer to a dead connection: it is dropped and a new one tried.
            raise DisconnectionError(f"connection gone while idle: {exc}") from exc


def _writer_engine(config, lock_timeout: float):
    """The writer's own engine: one connection that waits at most `lock_timeout` for a lock.

    Separate from the web app's pool so that its short lock timeout cannot leak into web requests.
    """
    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    # parking.dbconnect's timeouts and keepalive, with the writer's own lock and statement timeouts.
    options = engine_options(config["SQLALCHEMY_DATABASE_URI"], config.get("SQLALCHEMY_ENGINE_OPTIONS"),
                             statement_timeout=lock_timeout + STATEMENT_MARGIN, lock_timeout=lock_timeout)
    connect_args = dict(options.pop("connect_args", {}))
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        options.setdefault("pool_size", 1)
        options.setdefault("max_overflow", 1)
    postgresql = url.get_backend_name() == "postgresql"
    # PostgreSQL: the check that a pooled connection still works (a ping, one round trip) only
    # for a connection that sat idle; under load the writer takes its connection back every few
    # milliseconds and would ping before every group (`_ping_if_idle`).
    options["pool_pre_ping"] = not postgresql
    engine = create_engine(url, connect_args=connect_args, **options)
    if postgresql:
        _ping_if_idle(engine)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, connection_record):  # noqa: ARG001
            # Runs after parking's own connect hook (engine listeners follow class-wide ones),
            # so the writer's busy timeout and cache replace that hook's for this engine only.
            sqlite_pragmas(dbapi_connection, busy_timeout=lock_timeout, cache_kib=WRITER_CACHE_KIB)
            # The driver would BEGIN a deferred transaction; `_begin` below starts it instead.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection):
            # A deferred transaction that read first and then writes while another connection
            # writes fails at once, without waiting for busy_timeout; BEGIN IMMEDIATE takes the
            # write lock up front, where the wait applies.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
