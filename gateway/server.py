"""The CoAP gateway sensors and lot signs talk to (contract §3; for sensor makers: docs/sensors.md).

This module owns:
- the aiocoap Site: `POST /occupancy`, `GET /lots/<lot id>` (Observe) and `/.well-known/core`;
- the writer: a thread with its own database connection that stores readings through
  `parking.ingest` in small groups, one commit each; the event loop never waits on the database,
  it awaits a future the writer settles after the commit that holds the request's readings;
- the size limits, and the three aiocoap defaults a busy gateway must not keep
  (`SensorMessageManager`, `_tune_transport`);
- starting and stopping: `Gateway`, `run_in_thread`, and the `parking-gateway` console script.

Payload decoding lives in `gateway.payloads`, storage rules in `parking.ingest`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import gc
import json
import logging
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import aiocoap
import cbor2
from aiocoap import error, resource
from aiocoap.blockwise import Block1Spool
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.codes import Code
from aiocoap.tokenmanager import TokenManager
from aiocoap.transports.udp6 import MessageInterfaceUDP6
from aiocoap.util.linkformat import Link, LinkFormat
from flask import Flask
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from parking import ingest
from parking.current import LotState, lot_states
from parking.timefmt import iso_utc

from . import payloads

log = logging.getLogger("parking.gateway")

# --- Limits (stated for sensor makers in docs/sensors.md) --------------------------------------
# A request body (one datagram, or all Block1 blocks together) may be this large: about 200
# readings as JSON. Larger bodies get 4.13 with Size1 saying this number.
MAX_PAYLOAD = 16 * 1024
# Up to this much payload always travels in one datagram (aiocoap and libcoap clients switch to
# Block1 above it); larger single datagrams are accepted up to MAX_PAYLOAD but may be fragmented.
SAFE_DATAGRAM_PAYLOAD = 1024
# aiocoap reads 4,096 bytes per datagram and silently drops the rest, which would turn a large
# request into a misleading 4.00. This is more than any UDP datagram can carry, so none is cut.
READ_SIZE = 65_536
# Bursts of sensors reporting at once (a train arriving at a P+R lot) must queue in the kernel,
# not be dropped by it; the default (~208 KiB) holds only a few hundred datagrams.
RECEIVE_BUFFER = 4 * 1024 * 1024

# --- Answers and the writer ---------------------------------------------------------------------
RETRY_AFTER = 5  # Max-Age (s) of a 5.03 when the database is unreachable
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
# Observers are also told about changes nobody posted: a bay turning stale after stale_after.
OBSERVE_CHECK = 10.0
SUMMARY_INTERVAL = 60.0  # one INFO line per interval instead of one per reading


class SensorTuning(TransportTuning):
    """RFC 7252 timing for our sensors: aiocoap's defaults except MAX_LATENCY (see SensorMessageManager).

    EXCHANGE_LIFETIME, how long a message must be remembered to recognise its retransmissions,
    is 247 s with RFC 7252's internet-wide MAX_LATENCY of 100 s. A city's sensor network delivers
    a datagram within seconds, so MAX_LATENCY = 10 s; the RFC formula then gives 45 s
    (MAX_TRANSMIT_SPAN: a sender's last retransmission) + 2 × 10 s + 2 s = 67 s. A retransmission
    is still recognised for as long as a sensor can send one; one delayed beyond that is stored
    once anyway, by parking.ingest's seq / ts de-duplication.
    """

    MAX_LATENCY = 10.0


DEDUP_WINDOW = SensorTuning().EXCHANGE_LIFETIME  # 67 s


# --- Errors: each a CoAP code with a short diagnostic text -------------------------------------
class TooLarge(error.RequestEntityTooLarge):
    """4.13: the body is over MAX_PAYLOAD; Size1 tells the sensor the limit (RFC 7959 §4)."""

    def __init__(self, size: int):
        super().__init__(f"request of {size} bytes is over the limit of {MAX_PAYLOAD} bytes")

    def to_message(self):
        """The answer, with Size1."""
        message = super().to_message()
        message.opt.size1 = MAX_PAYLOAD
        return message


class Unavailable(error.ServiceUnavailable):
    """5.03: nothing was stored; Max-Age says when to try again."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER):
        super().__init__(message)
        self.retry_after = retry_after

    def to_message(self):
        """The answer, with Max-Age."""
        message = super().to_message()
        message.opt.max_age = self.retry_after
        return message


class BlockIncomplete(error.RequestEntityIncomplete):
    """4.08: a Block1 block arrived without the blocks before it (RFC 7959 §2.9.2)."""

    message = "block out of sequence: start again with block 0"


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a database error means 'unreachable or locked' (5.03) rather than a bug (5.00)."""
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# --- The writer ---------------------------------------------------------------------------------
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


# --- Resources ----------------------------------------------------------------------------------
class OccupancyResource(resource.Resource):
    """POST /occupancy: one reading or a batch, stored whole (2.04 after the commit) or refused whole."""

    rt = "parking.occupancy"
    ct = " ".join(str(c) for c in payloads.CONTENT_FORMATS)

    def __init__(self, gateway: Gateway):
        super().__init__()
        self.gateway = gateway
        self._blocks = Block1Spool()

    async def needs_blockwise_assembly(self, request):
        """No: Block1 is assembled here, where its total size can be capped."""
        return False

    async def render_post(self, request):
        """Decode, hand to the writer, answer when committed."""
        self.gateway.inflight += 1
        try:
            whole = self._assemble(request)
            received_at = time.time()
            readings = payloads.decode(whole.payload, whole.opt.content_format, now=received_at)
            if self.gateway.closing:
                raise Unavailable("gateway shutting down")
            await self.gateway.writer.submit(readings, received_at)
        except error.ConstructionRenderableError as exc:
            self.gateway.count(exc.code)
            raise
        finally:
            self.gateway.inflight -= 1
        self.gateway.count(Code.CHANGED)
        response = aiocoap.Message(code=Code.CHANGED)
        response.opt.block1 = whole.opt.block1
        return response

    def _assemble(self, request):
        """The whole body: a single datagram as it is, Block1 blocks (RFC 7959) joined up to MAX_PAYLOAD."""
        block1 = request.opt.block1
        end = len(request.payload) if block1 is None else block1.start + len(request.payload)
        announced = request.opt.size1 or 0
        if max(end, announced) > MAX_PAYLOAD:
            raise TooLarge(max(end, announced))
        try:
            return self._blocks.feed_and_take(request)
        except error.RequestEntityIncomplete:
            raise BlockIncomplete() from None


@dataclass(eq=False)
class _Watch:
    """One observation of a lot: the request it renders and the free count it last saw."""

    request: aiocoap.Message
    free: int | None = None


LOT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LotResource(resource.ObservableResource, resource.PathCapable):
    """GET /lots/<lot id>: the lot's counts now; observers are notified when `free` changes."""

    rt = "parking.lot"
    ct = "50 60"

    def __init__(self, gateway: Gateway):
        super().__init__()
        self.gateway = gateway
        self.known: list[str] = []  # lot ids for /.well-known/core, as last read
        self.observed: frozenset[str] = frozenset()  # the lots that have observers
        self._watches: dict[str, dict[object, _Watch]] = {}
        self._newest: dict[str, tuple[float, LotState]] = {}  # (read start, counts) per lot

    async def render_get(self, request):
        """The counts as JSON (or CBOR when asked with Accept: 60)."""
        lot_id = _lot_id(request)
        accept = _accepted(request)
        stamp, states = await self.gateway.read_states([lot_id])
        state = states.get(lot_id)
        if state is None:
            raise error.NotFound(f"unknown lot: {lot_id}")
        newest = self._newest.get(lot_id)
        if newest is not None and newest[0] > stamp:
            state = newest[1]  # published while this read was on its way: newer news
        for watch in self._watches.get(lot_id, {}).values():
            if watch.request is request:
                watch.free = state.free
        return lot_message(state, accept)

    async def add_observation(self, request, serverobservation):
        """Remember the observer under its lot; it is dropped when the observation ends."""
        try:
            lot_id = _lot_id(request)
        except error.NotFound:
            return
        self._watches.setdefault(lot_id, {})[serverobservation] = _Watch(request)
        serverobservation.accept(functools.partial(self._forget, lot_id, serverobservation))
        self.observed = frozenset(self._watches)

    def _forget(self, lot_id: str, serverobservation) -> None:
        """Drop an ended observation."""
        watches = self._watches.get(lot_id, {})
        watches.pop(serverobservation, None)
        if not watches:
            self._watches.pop(lot_id, None)
        self.observed = frozenset(self._watches)

    def publish(self, stamp: float, states: dict[str, LotState]) -> None:
        """Notify the observers whose lot's free count differs from what they last got."""
        for lot_id, state in states.items():
            # A read that started earlier than the last one published is older news.
            if lot_id in self._newest and stamp < self._newest[lot_id][0]:
                continue
            self._newest[lot_id] = (stamp, state)
            for serverobservation, watch in list(self._watches.get(lot_id, {}).items()):
                # free None: its first answer is still being rendered, and will use this state.
                if watch.free is not None and watch.free != state.free:
                    watch.free = state.free
                    serverobservation.trigger(lot_message(state, _accepted(watch.request)))

    def get_resources_as_linkheader(self):
        """One link per known lot, for /.well-known/core."""
        return LinkFormat([Link("/" + lot_id, rt=self.rt, ct=self.ct, obs=None) for lot_id in self.known])


def _lot_id(request) -> str:
    """The lot id from the path below /lots/; raises 4.04 for anything else."""
    path = request.opt.uri_path
    if len(path) != 1 or not LOT_ID.fullmatch(path[0]):
        raise error.NotFound("unknown lot: " + "/".join(path)[:64])
    return path[0]


def _accepted(request) -> int:
    """The content format the client asked for: JSON unless Accept says CBOR; others are 4.06."""
    accept = request.opt.accept
    if accept is None or int(accept) == payloads.JSON:
        return payloads.JSON
    if int(accept) == payloads.CBOR:
        return payloads.CBOR
    raise error.NotAcceptable("Accept: use 50 (JSON) or 60 (CBOR)")


def lot_message(state: LotState, content_format: int = payloads.JSON) -> aiocoap.Message:
    """A lot's counts as a 2.05 answer (contract §3)."""
    body = {
        "free": state.free,
        "occupied": state.occupied,
        "unknown": state.unknown,
        "total": state.total,
        "updated_at": iso_utc(state.updated_at),
    }
    if content_format == payloads.CBOR:
        payload = cbor2.dumps(body)
    else:
        payload = json.dumps(body, separators=(",", ":")).encode()
    return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=content_format)


class DiscoveryResource(resource.WKCResource):
    """/.well-known/core (RFC 6690), with the lot list read fresh first."""

    def __init__(self, site: resource.Site, lots: LotResource):
        super().__init__(site.get_resources_as_linkheader, impl_info=None)
        self.lots = lots

    async def render_get(self, request):
        """The links; with the lots last known when the database cannot be read."""
        try:
            _, states = await self.lots.gateway.read_states(None)
        except (error.Error, SQLAlchemyError):
            pass
        else:
            self.lots.known = sorted(states)
        return await super().render_get(request)


class GatewaySite(resource.Site):
    """aiocoap's Site, minus a per-request cost its fixed-path resources here do not need."""

    def _find_child_and_pathstripped_message(self, request):
        """The resource at exactly this path gets the request as it came; others as in aiocoap."""
        # aiocoap copies each request (deep-copying its options) and rebuilds its full URI before
        # handing it on: about a third of the event loop's CPU per POST. /occupancy and
        # /.well-known/core read neither the copy nor the URI; /lots/<id> still gets both.
        child = self._resources.get(request.opt.uri_path)
        if child is not None:
            return child, request
        return super()._find_child_and_pathstripped_message(request)


def build_site(occupancy: OccupancyResource, lots: LotResource) -> resource.Site:
    """The gateway's resources, /.well-known/core included."""
    site = GatewaySite()
    site.add_resource([".well-known", "core"], DiscoveryResource(site, lots))
    site.add_resource(["occupancy"], occupancy)
    site.add_resource(["lots"], lots)
    return site


# --- The aiocoap traps --------------------------------------------------------------------------
DEDUP_SWEEP = 1.0  # seconds between sweeps of expired duplicate-detection entries


class SensorMessageManager(MessageManager):
    """aiocoap's CoAP-over-UDP message layer, with a duplicate cache that stays small.

    aiocoap remembers every request for EXCHANGE_LIFETIME (247 s) with its answer, the request
    that answer references, and a timer of its own: about 2.7 KB and 20 objects for the garbage
    collector per request, so memory and collection pauses grow with the load. Here the window
    is SensorTuning's (67 s), the remembered answer drops its request, and entries expire in
    arrival order from one queue swept every second instead of one timer each. Duplicates are
    recognised exactly as before within the window: same peer and message ID, same answer resent.
    """

    def __init__(self, token_manager: TokenManager, window: float):
        super().__init__(token_manager)
        self.window = window
        self._arrivals: deque[tuple[float, tuple]] = deque()
        self._sweep_every = min(DEDUP_SWEEP, window / 2)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _deduplicate_message(self, message):
        """True for a duplicate (answered from the cache by aiocoap); remembers a new message."""
        key = (message.remote, message.mid)
        if key in self._recent_messages:
            return super()._deduplicate_message(message)
        self._recent_messages[key] = None
        self._arrivals.append((self.loop.time() + self.window, key))
        return False

    def _store_response_for_duplicates(self, message):
        """Remember an answer for resending, without the request it answered."""
        if (message.remote, message.mid) in self._recent_messages:
            message.request = None
        super()._store_response_for_duplicates(message)

    def _sweep(self) -> None:
        """Forget the messages older than the window."""
        now, arrivals = self.loop.time(), self._arrivals
        while arrivals and arrivals[0][0] <= now:
            self._recent_messages.pop(arrivals.popleft()[1], None)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    async def shutdown(self):
        """Stop sweeping, then shut down as aiocoap does."""
        self._sweeper.cancel()
        await super().shutdown()

    @property
    def dedup_entries(self) -> int:
        """Messages currently remembered for duplicate detection."""
        return len(self._recent_messages)


async def _server_context(site, host: str, port: int, window: float) -> tuple[aiocoap.Context, SensorMessageManager]:
    """A server context on UDP: the udp6 branch of aiocoap's create_server_context, with our manager."""
    context = aiocoap.Context(loop=asyncio.get_running_loop(), serversite=site, loggername="parking.gateway.aiocoap")
    tokens = TokenManager(context)
    manager = SensorMessageManager(tokens, window)
    try:
        manager.message_interface = await MessageInterfaceUDP6.create_server_transport_endpoint(
            manager, log=context.log, loop=context.loop, bind=(host, port), multicast=[]
        )
    except BaseException:
        manager._sweeper.cancel()
        raise
    tokens.token_interface = manager
    context.request_interfaces.append(tokens)
    return context, manager


def _tune_transport(manager: SensorMessageManager) -> tuple[int, tuple]:
    """Raise the receive buffer and the read size of the socket; returns (buffer granted, address).

    The socket receive buffer is raised to RECEIVE_BUFFER, so bursts are not dropped, and the
    transport reads READ_SIZE bytes per datagram instead of 4,096, so no request is cut short
    silently (an oversize one is then answered 4.13 by OccupancyResource). Attributes of
    aiocoap 0.4's udp6 transport; tests/test_gateway.py checks both effects.
    """
    transport = manager.message_interface.transport
    sock = transport.get_extra_info("socket")
    granted = _raise_receive_buffer(sock)
    transport.max_size = READ_SIZE
    return granted, sock.getsockname()


def _raise_receive_buffer(sock: socket.socket) -> int:
    """Ask for RECEIVE_BUFFER bytes; return what the kernel granted (it doubles the request)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError as exc:
        log.warning("could not raise the socket receive buffer: %s", exc)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < RECEIVE_BUFFER:
        # Linux caps SO_RCVBUF at net.core.rmem_max; SO_RCVBUFFORCE may pass it with CAP_NET_ADMIN.
        force = getattr(socket, "SO_RCVBUFFORCE", None)
        if force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
                granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            except OSError:
                pass
    if granted < RECEIVE_BUFFER:
        log.warning(
            "socket receive buffer is %d KiB, asked for %d KiB: bursts may be dropped; raise it "
            "with `sysctl -w net.core.rmem_max=%d`", granted // 1024, RECEIVE_BUFFER // 1024, RECEIVE_BUFFER,
        )
    return granted


# --- The gateway --------------------------------------------------------------------------------
ANSWER_CODES = ("2.04", "2.31", "4.00", "4.04", "4.08", "4.13", "4.15", "5.00", "5.03", "other")


class Gateway:
    """The CoAP server with its writer; `start` binds the socket, `shutdown` stops everything cleanly."""

    def __init__(self, app: Flask, *, lock_timeout: float = LOCK_TIMEOUT, dedup_window: float = DEDUP_WINDOW,
                 observe_check: float = OBSERVE_CHECK, queue_limit: int = QUEUE_LIMIT,
                 group_limit: int = GROUP_LIMIT, summary_interval: float = SUMMARY_INTERVAL,
                 verbose: bool = False):
        self.app = app
        self.options = {"lock_timeout": lock_timeout, "queue_limit": queue_limit, "group_limit": group_limit}
        self.dedup_window = dedup_window
        self.observe_check = observe_check
        self.summary_interval = summary_interval
        self.verbose = verbose
        self.closing = False
        self.inflight = 0  # POST handlers between receipt and answer
        # Pre-filled so that other threads can copy it while the loop counts (no resizing).
        self.answers = dict.fromkeys(ANSWER_CODES, 0)
        self.context: aiocoap.Context | None = None
        self.manager: SensorMessageManager | None = None
        self.receive_buffer = 0
        self.address: tuple = ()
        self.writer: Writer | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task] = []
        self._changed_lots: set[str] = set()
        self._refresher: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> None:
        """Start the writer, bind the socket and begin serving; touches no database."""
        loop = asyncio.get_running_loop()
        # aiocoap logs every refused request and duplicate at INFO: that costs throughput under
        # load, and the periodic summary says the same in one line.
        logging.getLogger("parking.gateway.aiocoap").setLevel(logging.DEBUG if self.verbose else logging.WARNING)
        self.writer = Writer(self.app, loop, on_commit=self._committed, **self.options)
        self._readers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="coap-reader")
        self.lots = LotResource(self)
        site = build_site(OccupancyResource(self), self.lots)
        self.writer.start()
        try:
            self.context, self.manager = await _server_context(site, host, port, self.dedup_window)
            self.receive_buffer, self.address = _tune_transport(self.manager)
        except BaseException:
            await self._stop_threads()
            raise
        self._tasks = [
            asyncio.create_task(self._check_lots(), name="gateway: observe check"),
            asyncio.create_task(self._summaries(), name="gateway: summary"),
        ]
        self.app.extensions.setdefault("parking_parts", {})["gateway"] = self.health
        log.info(
            "CoAP gateway on coap://%s:%d (receive buffer %d KiB, duplicate window %.0f s, limit %d bytes)",
            host, self.port, self.receive_buffer // 1024, self.dedup_window, MAX_PAYLOAD,
        )

    @property
    def port(self) -> int:
        """The bound UDP port (useful after binding port 0)."""
        return self.address[1]

    async def shutdown(self) -> None:
        """Answer what is queued, then close the socket and the threads."""
        self.closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._refresher is not None:
            await asyncio.gather(self._refresher, return_exceptions=True)
        await asyncio.to_thread(self.writer.stop)
        # Let the handlers whose futures the writer settled last send their answers.
        deadline = time.monotonic() + 5
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.context is not None:
            await self.context.shutdown()
        await self._stop_threads()
        self.app.extensions.get("parking_parts", {}).pop("gateway", None)

    async def _stop_threads(self) -> None:
        """Stop the writer (if `shutdown` has not already) and the readers."""
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown)

    def count(self, code: Code) -> None:
        """Count one answer (event loop only)."""
        key = code.dotted if code.dotted in self.answers else "other"
        self.answers[key] += 1

    def health(self) -> dict:
        """The health probe registered in app.extensions["parking_parts"] (called from any thread)."""
        return {
            "status": "ok" if self.writer.available else "storage_unavailable",
            "queue": self.writer.queue.qsize(),
            "answered": dict(self.answers),
            "dedup_entries": self.manager.dedup_entries if self.manager else 0,
            "receive_buffer": self.receive_buffer,
        }

    async def read_states(self, lot_ids) -> tuple[float, dict[str, LotState]]:
        """Lot counts read on a reader thread (None: every lot); an unreachable database is 5.03."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._read_states, lot_ids)
        except SQLAlchemyError as exc:
            if storage_unavailable(exc):
                raise Unavailable(f"storage unavailable: retry in {RETRY_AFTER} s") from None
            raise

    def _read_states(self, lot_ids) -> tuple[float, dict[str, LotState]]:
        """(start time, counts) on the calling reader thread, in its own app context."""
        with self.app.app_context():
            stamp = time.time()
            return stamp, lot_states(self.app.config["STALE_AFTER"], now=stamp, lot_ids=lot_ids)

    def _committed(self, lots: set[str]) -> None:
        """Called by the writer after a commit that stored readings of these lots."""
        try:
            self.writer.loop.call_soon_threadsafe(self._lots_changed, lots)
        except RuntimeError:
            pass

    def _lots_changed(self, lots: set[str]) -> None:
        """Re-read the observed lots among `lots`, coalescing bursts of commits into one read."""
        wanted = lots & self.lots.observed
        if not wanted or self.closing:
            return
        self._changed_lots |= wanted
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_lots(), name="gateway: notify")

    async def _refresh_lots(self) -> None:
        """Publish fresh counts of changed lots until no more changes are pending."""
        while self._changed_lots:
            lots, self._changed_lots = self._changed_lots, set()
            try:
                stamp, states = await self.read_states(lots)
            except Exception as exc:  # noqa: BLE001 - the periodic check will catch up
                log.debug("could not re-read lots for observers: %s", exc)
                return
            self.lots.publish(stamp, states)

    async def _check_lots(self) -> None:
        """Every observe_check seconds: refresh the lot list and notify what staleness changed."""
        while True:
            try:
                stamp, states = await self.read_states(None)
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                log.debug("periodic lot check failed: %s", exc)
            else:
                self.lots.known = sorted(states)
                self.lots.publish(stamp, {k: v for k, v in states.items() if k in self.lots.observed})
            await asyncio.sleep(self.observe_check)

    async def _summaries(self) -> None:
        """One INFO line per interval with traffic, instead of a line per reading."""
        answers, stats = dict(self.answers), WriterStats()
        while True:
            await asyncio.sleep(self.summary_interval)
            now, current = dict(self.answers), self.writer.stats
            counts = {k: now[k] - answers[k] for k in now if now[k] != answers[k]}
            groups = current.groups - stats.groups
            if counts:
                mean = (current.commit_seconds - stats.commit_seconds) / groups * 1000 if groups else 0.0
                log.info(
                    "last %.0f s: answers %s; %d readings, %d new; queue %d; group mean %.1f ms, max so far %.1f ms",
                    self.summary_interval, " ".join(f"{k}×{v}" for k, v in counts.items()),
                    current.readings - stats.readings, current.stored - stats.stored,
                    self.writer.queue.qsize(), mean, current.commit_max * 1000,
                )
            answers, stats = now, WriterStats(**vars(current))


# --- Running it ---------------------------------------------------------------------------------
class GatewayThread:
    """A gateway on its own event loop in a daemon thread; `stop()` shuts it down and joins."""

    def __init__(self, app: Flask, host: str, port: int, **options):
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway(app, **options)
        self._thread = threading.Thread(target=self._run, name="coap-gateway", daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self.gateway.start(host, port), self.loop)
        try:
            started.result(timeout=30)
        except BaseException:
            self._end_loop()
            raise

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return self.gateway.port

    def _run(self) -> None:
        """Run the loop until stopped, then let its leftovers finish."""
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Handlers of datagrams that arrived during shutdown: end them rather than leak them.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the gateway down cleanly and end the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.gateway.shutdown(), self.loop).result(timeout)
        self._end_loop(timeout)

    def _end_loop(self, timeout: float = 30.0) -> None:
        """Stop the loop and join its thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


def run_in_thread(app: Flask, host: str, port: int, **options) -> GatewayThread:
    """Start a gateway in a background thread; returns once the socket is bound."""
    return GatewayThread(app, host, port, **options)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `parking-gateway`."""
    parser = argparse.ArgumentParser(prog="parking-gateway", description="CoAP gateway for parking bay sensors.")
    parser.add_argument("--host", help="address to listen on (default PARKING_COAP_HOST, 127.0.0.1; '::' for all)")
    parser.add_argument("--port", type=int, help="UDP port (default PARKING_COAP_PORT, 5683)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log aiocoap's per-message details too")
    return parser


async def start_with_options(argv: list[str] | None = None, app: Flask | None = None) -> Gateway:
    """Parse the command line, build the app and start a gateway (testable without a process)."""
    args = build_parser().parse_args(argv)
    if app is None:
        from parking import create_app

        app = create_app()
    host = args.host or app.config["COAP_HOST"]
    port = args.port if args.port is not None else app.config["COAP_PORT"]
    gateway = Gateway(app, verbose=args.verbose)
    await gateway.start(host, port)
    return gateway


async def _serve(argv: list[str] | None) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    gateway = await start_with_options(argv)
    # What is loaded by now (Flask, SQLAlchemy, aiocoap) lives as long as the process: leaving it
    # out of garbage collection keeps each full collection, and the pause it causes, short.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await gateway.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Console script `parking-gateway`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
