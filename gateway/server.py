"""The CoAP gateway sensors and lot signs talk to (contract §3; for sensor makers: docs/sensors.md).

This module owns starting and stopping: `Gateway` (the CoAP server with its writer, the
observe checks, the answer counters and the health probe), `GatewayThread` / `run_in_thread`
for running it inside another process, and the `parking-gateway` console script
(`build_parser`, `start_with_options`, `main`; `--processes N` runs N of them on one port
through `gateway.processes`). It is over 400 lines because the gateway's start and its bounded
stop undo each other step by step, and read best side by side.

The parts it puts together live beside it: the resources and the Site in `gateway.resources`,
the writer in `gateway.writer` (the event loop's side) and `gateway.writer_process` (the
process that stores), the UDP transport settings in `gateway.transport`; payload decoding in
`gateway.payloads`, storage rules in `parking.ingest`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import io
import logging
import queue
import signal
import sys
import threading
import time
import traceback

import aiocoap
from aiocoap.numbers.codes import Code
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from parking.current import LotState, lot_states
from parking.startup import check_database, database_label, guarded, port_problem

from . import processes
from .errors import RETRY_AFTER, Unavailable
from .portlock import PortLock
from .refusals import RefusalLog, source_host
from .resources import MAX_PAYLOAD, LotResource, OccupancyResource, build_site
from .security import KeyStore, ProtectedSite
from .transport import DEDUP_WINDOW, SensorMessageManager, _server_context, _tune_transport, limit_aiocoap_log
from .writer import GROUP_LIMIT, LOCK_TIMEOUT, QUEUE_LIMIT, RESTART_PAUSE, START_TIMEOUT, Writer, WriterStats
from .writer_process import storage_unavailable

log = logging.getLogger("parking.gateway")

# Observers are also told about changes nobody posted: a bay turning stale after stale_after.
OBSERVE_CHECK = 10.0
SUMMARY_INTERVAL = 60.0  # one INFO line per interval instead of one per reading
# A read of lot counts (GET /lots/<id>, the observe check) not done by then is answered 5.03: the
# database went silent (its thread is left to the connection's own timeouts, parking.dbconnect).
READ_DEADLINE = 5.0
# How long the writer process may take to store what is queued and exit when the gateway stops
# (then it is killed; what it had not committed was never acknowledged).
WRITER_STOP_TIMEOUT = 10.0
# Shutdown's steps in all, at their bounds: the writer (its stop, then 5 s for the process to
# exit and 5 s after a kill), the last answers (5 s), aiocoap's context (3 s), the readers.
STOP_STEPS_BUDGET = WRITER_STOP_TIMEOUT + 10 + 5 + 3 + READ_DEADLINE


@contextlib.contextmanager
def _timed_step(name: str, slow: float = 2.0):
    """Log a shutdown step that took longer than `slow` seconds, by name."""
    started = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - started
        if took > slow:
            log.warning("stopping the gateway: %s took %.1f s", name, took)


def _log_stacks(loop: asyncio.AbstractEventLoop) -> None:
    """Every thread's stack and every task of `loop`, logged: what a stop that hung was waiting for."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        lines.append(f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame)))
    for task in asyncio.all_tasks(loop):
        stack = io.StringIO()
        task.print_stack(file=stack)
        lines.append(stack.getvalue())
    log.error("the gateway did not stop in time; where it was:\n%s", "\n".join(lines))


class Readers(concurrent.futures.Executor):
    """Threads for the gateway's database reads that never hold up its exit.

    A ThreadPoolExecutor's threads are joined when the interpreter exits, so one read stuck on a
    database that went silent (a stopped server: the kernel still answers TCP keepalive) would
    keep a stopped gateway from ever exiting. These are daemon threads; `shutdown` waits a bounded time.
    """

    def __init__(self, count: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        """Run fn(*args, **kwargs) on a reader thread."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (its request already got its 5.03)
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None) -> None:
        """Let the threads end after what is queued; wait for them up to `timeout` seconds in all.

        (`cancel_futures` is Executor's; the reads still queued are quick or are answered 5.03.)
        """
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in self._threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


# --- The gateway --------------------------------------------------------------------------------
ANSWER_CODES = ("2.04", "2.31", "4.00", "4.01", "4.02", "4.03", "4.04", "4.08", "4.13", "4.15", "5.00", "5.03",
                "other")
SENSOR_AUTH = ("oscore", "none")
# Why requests were refused before storing (gateway.security, gateway.resources); pre-filled so
# that other threads can copy the counts while the loop counts.
REFUSAL_REASONS = ("unprotected", "unknown_key", "revoked", "replay", "undecodable", "decryption_failed",
                   "foreign_bay", "other")


class Gateway:
    """The CoAP server with its writer; `start` binds the socket, `shutdown` stops everything cleanly."""

    def __init__(self, app: Flask, *, lock_timeout: float = LOCK_TIMEOUT, dedup_window: float = DEDUP_WINDOW,
                 observe_check: float = OBSERVE_CHECK, queue_limit: int = QUEUE_LIMIT,
                 group_limit: int = GROUP_LIMIT, summary_interval: float = SUMMARY_INTERVAL,
                 restart_pause: float = RESTART_PAUSE, verbose: bool = False):
        self.app = app
        auth = app.config.get("SENSOR_AUTH", "oscore")
        if auth not in SENSOR_AUTH:
            raise ValueError(f"PARKING_SENSOR_AUTH must be 'oscore' or 'none', not {auth!r}")
        self.require_oscore = auth == "oscore"
        self.options = {"lock_timeout": lock_timeout, "queue_limit": queue_limit, "group_limit": group_limit,
                        "restart_pause": restart_pause}
        self.dedup_window = dedup_window
        self.observe_check = observe_check
        self.summary_interval = summary_interval
        self.verbose = verbose
        self.closing = False
        self.inflight = 0  # POST handlers between receipt and answer
        # Pre-filled so that other threads can copy it while the loop counts (no resizing).
        self.answers = dict.fromkeys(ANSWER_CODES, 0)
        self.refusals = dict.fromkeys(REFUSAL_REASONS, 0)
        self.refusal_log = RefusalLog()
        self.keys: KeyStore | None = None
        self.context: aiocoap.Context | None = None
        self.manager: SensorMessageManager | None = None
        self.receive_buffer = 0
        self.address: tuple = ()
        self.writer: Writer | None = None
        self._readers: Readers | None = None
        self._tasks: list[asyncio.Task] = []
        self._changed_lots: set[str] = set()
        self._refresher: asyncio.Task | None = None
        self.port_lock: PortLock | None = None

    async def start(self, host: str, port: int) -> None:
        """Start the writer, bind the socket and begin serving; touches no database."""
        loop = asyncio.get_running_loop()
        # aiocoap logs every refused request and duplicate at INFO: that costs throughput under
        # load, and the periodic summary says the same in one line.
        aiocoap_log = logging.getLogger("parking.gateway.aiocoap")
        aiocoap_log.setLevel(logging.DEBUG if self.verbose else logging.WARNING)
        if not self.verbose:  # a peer can make it warn per message; the count is in /healthz
            limit_aiocoap_log(aiocoap_log)
        self.writer = Writer(self.app, loop, on_commit=self._lots_changed, **self.options)
        self._readers = Readers(2, "coap-reader")
        self.lots = LotResource(self)
        self.keys = KeyStore(self.app, self._readers)
        site = ProtectedSite(build_site(OccupancyResource(self), self.lots), self, self.keys)
        try:
            self._take_port(port)
            await self.writer.start()
            try:
                self.context, self.manager = await _server_context(site, host, port, self.dedup_window)
            except OSError as exc:
                problem = port_problem(exc, "the CoAP gateway", host, port, "PARKING_COAP_PORT")
                if problem is None:
                    raise
                raise problem from exc
            self.receive_buffer, self.address = _tune_transport(self.manager)
        except BaseException:
            await self._stop_threads()
            raise
        self._tasks = [
            asyncio.create_task(self._check_lots(), name="gateway: observe check"),
            asyncio.create_task(self._summaries(), name="gateway: summary"),
        ]
        self.app.extensions.setdefault("parking_parts", {})["gateway"] = self.health
        self.app.extensions["parking_gateway"] = self  # for /metrics and /operators in this process
        log.info(
            "CoAP gateway on coap://%s:%d (receive buffer %d KiB, duplicate window %.0f s, limit %d bytes)",
            host, self.port, self.receive_buffer // 1024, self.dedup_window, MAX_PAYLOAD,
        )
        if self.require_oscore:
            log.info("sensor readings only OSCORE-protected, each sensor for its own bays (PARKING_SENSOR_AUTH=oscore)")
        else:
            log.warning("PARKING_SENSOR_AUTH=none: accepting unprotected readings from anyone who can reach "
                        "coap://%s:%d (protected ones are still checked)", host, self.port)

    def _take_port(self, port: int) -> None:
        """Refuse a port another deployment serves (gateway.portlock); port 0 is always fresh."""
        if port == 0:
            return
        deployment = database_label(self.app.config["SQLALCHEMY_DATABASE_URI"])
        self.port_lock = PortLock(port, deployment).take()
        if self.port_lock.joined:
            log.info("UDP port %d is served by other gateway processes of this deployment: joining them", port)

    @property
    def port(self) -> int:
        """The bound UDP port (useful after binding port 0)."""
        return self.address[1]

    async def shutdown(self) -> None:
        """Answer what is queued, then close the socket and the threads.

        Every step is bounded (STOP_STEPS_BUDGET in all), and a step that takes longer than a
        second or two is logged by name, so a slow stop says where it spent its time.
        """
        self.closing = True
        with _timed_step("background tasks"):
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._refresher is not None:
                self._refresher.cancel()
                await asyncio.gather(self._refresher, return_exceptions=True)
        with _timed_step("writer"):
            await self.writer.stop(WRITER_STOP_TIMEOUT)
        with _timed_step("last answers"):
            # Let the handlers whose futures the writer settled last send their answers.
            deadline = time.monotonic() + 5
            while self.inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        if self.context is not None:
            with _timed_step("CoAP context"):
                await self.context.shutdown()  # aiocoap bounds it (SHUTDOWN_TIMEOUT, 3 s)
        with _timed_step("threads"):
            await self._stop_threads()
        self.app.extensions.get("parking_parts", {}).pop("gateway", None)
        if self.app.extensions.get("parking_gateway") is self:
            del self.app.extensions["parking_gateway"]

    async def _stop_threads(self) -> None:
        """Stop the writer (if `shutdown` has not already) and the readers."""
        if self.writer is not None:
            await self.writer.stop()
        if self._readers is not None:
            # A read a silent database holds is left behind (its request was answered 5.03).
            await asyncio.to_thread(self._readers.shutdown, timeout=READ_DEADLINE)
        if self.port_lock is not None:
            self.port_lock.release()
            self.port_lock = None

    def count(self, code: Code) -> None:
        """Count one answer (event loop only)."""
        key = code.dotted if code.dotted in self.answers else "other"
        self.answers[key] += 1

    def refused(self, reason: str, code: str, sensor: str | None, remote) -> None:
        """Count a refused request by reason, and for the operators by sensor and address (event loop)."""
        self.refusals[reason if reason in self.refusals else "other"] += 1
        self.refusal_log.add(code, sensor, source_host(remote))

    def refusal_counts(self) -> dict[str, int]:
        """Refused requests by reason (a copy; any thread)."""
        return dict(self.refusals)

    def health(self) -> dict:
        """The health probe registered in app.extensions["parking_parts"] (called from any thread)."""
        return {
            "status": "ok" if self.writer.available else "storage_unavailable",
            "queue": self.writer.queued,
            "answered": dict(self.answers),
            "refused": self.refusal_counts(),
            "sensor_auth": "oscore" if self.require_oscore else "none",
            "dedup_entries": self.manager.dedup_entries if self.manager else 0,
            "malformed": self.manager.malformed if self.manager else 0,  # datagrams that are not CoAP
            "receive_buffer": self.receive_buffer,
        }

    async def read_states(self, lot_ids) -> tuple[float, dict[str, LotState]]:
        """Lot counts read on a reader thread (None: every lot); an unreachable database is 5.03."""
        try:
            # A read still queued at the deadline is dropped from the pool's queue, so reads do
            # not pile up behind threads the silent database holds.
            return await run_with_deadline(self._readers, self._read_states, lot_ids, deadline=READ_DEADLINE)
        except TimeoutError:
            raise Unavailable(f"storage not answering: retry in {RETRY_AFTER} s") from None
        except SQLAlchemyError as exc:
            if storage_unavailable(exc):
                raise Unavailable() from None
            raise

    def _read_states(self, lot_ids) -> tuple[float, dict[str, LotState]]:
        """(start time, counts) on the calling reader thread, in its own app context."""
        with self.app.app_context():
            stamp = time.time()
            return stamp, lot_states(self.app.config["STALE_AFTER"], now=stamp, lot_ids=lot_ids)

    def _lots_changed(self, lots: set[str]) -> None:
        """After a commit that stored readings of these lots (on the loop): re-read the observed
        ones among them, coalescing bursts of commits into one read."""
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
        while not self.closing:
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
                    self.writer.queued, mean, current.commit_max * 1000,
                )
            answers, stats = now, WriterStats(**vars(current))


async def run_with_deadline(executor: concurrent.futures.Executor, fn, *args, deadline: float):
    """fn(*args) on the executor, awaited at most `deadline` seconds (then TimeoutError).

    Not `asyncio.wait_for`: on Python 3.11 it drops a cancellation that arrives as the read
    completes (it returns the result instead), so a task cancelled at shutdown read on and the
    stop waited for it forever. `asyncio.timeout` passes the cancellation on.
    """
    async with asyncio.timeout(deadline):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


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
            # The writer process may take START_TIMEOUT to import and build its app (a busy
            # machine); the gateway's own start adds little to that.
            started.result(timeout=START_TIMEOUT + 30)
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

    def stop(self, timeout: float = STOP_STEPS_BUDGET + 15) -> None:
        """Shut the gateway down cleanly and end the thread.

        Shutdown bounds each of its steps, so `timeout` passing means the event loop itself was
        held (a blocking call on it): the stacks are logged, the loop is ended anyway, and the
        caller gets a RuntimeError rather than a silent leak.
        """
        if self._thread.is_alive():
            stopped = asyncio.run_coroutine_threadsafe(self.gateway.shutdown(), self.loop)
            try:
                stopped.result(timeout)
            except concurrent.futures.TimeoutError:
                _log_stacks(self.loop)
                self._end_loop(5.0)
                raise RuntimeError(f"the gateway did not stop within {timeout:.0f} s (stacks logged)") from None
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
    parser.add_argument("--debug", action="store_true", help="a start-up error with its traceback, not one line")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="N gateway processes sharing the port, each with its own writer (docs/scaling.md)")
    parser.add_argument(processes.CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)  # one of N, by its parent
    return parser


async def start_with_options(argv: list[str] | None = None, app: Flask | None = None) -> Gateway:
    """Parse the command line, build the app and start a gateway (testable without a process)."""
    args = build_parser().parse_args(argv)
    if app is None:
        from parking import create_app

        app = create_app()
        await asyncio.to_thread(check_database, app)
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
    if build_parser().parse_args(argv).child:
        processes.serve_as_child(loop, stop)
    await stop.wait()
    log.info("stopping")
    await gateway.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Console script `parking-gateway`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.processes != 1:
        return guarded("parking-gateway", args.debug, lambda: processes.serve_processes(args, STOP_STEPS_BUDGET + 5))
    return guarded("parking-gateway", args.debug, lambda: asyncio.run(_serve(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
