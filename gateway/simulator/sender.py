"""The simulator's live side: the model advanced in (scaled) real time, each reading a CoAP POST.

`LiveSender` sends every reading as a confirmable CoAP ``POST /occupancy`` with a JSON body
(contract §3), OSCORE-protected with its bay's sensor key when it has one (`gateway.simulator.keys`), at most `CONCURRENCY` requests in flight, 5.03 retried after its Max-Age, one
summary log line a minute; `run_live` runs one until it is stopped. Its logic is
`LiveSender.start/run/shutdown` (after aiocoap's ``cli/fileserver.py``).

``--speed X`` is a time-lapse: the model's clock runs X times faster than the wall clock, and
each reading is stamped with the wall-clock instant that corresponds to its simulated time
(what a sensor's own clock would say). Stamping simulated times instead would run into the
future, which the gateway refuses (contract §3: more than 5 minutes ahead is a 4.00).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from parking.ingest import SensorReading
from parking.startup import StartupError

from .keys import answer_of, protect
from .model import CityModel

log = logging.getLogger("gateway.simulator")

CONCURRENCY = 64
TICK = 0.2  # s of wall clock between live-mode model advances
SUMMARY_EVERY = 60.0  # s
MAX_503_RETRIES = 10
DEFAULT_MAX_AGE = 60  # RFC 7252: Max-Age absent means 60 s
SHUTDOWN_GRACE = 5.0  # s for in-flight requests to finish at shutdown
PROBE_TIMEOUT = 10.0  # s for the gateway to answer the first request (a loaded machine is slow)


@dataclass
class Stats:
    """What the live sender did since the last summary."""

    sent: int = 0
    codes: Counter = field(default_factory=Counter)
    retried: int = 0
    errors: int = 0

    def line(self, interval: float, in_flight: int, sim_now: float) -> str:
        """The one-line summary."""
        codes = ", ".join(f"{code} ×{n}" for code, n in sorted(self.codes.items())) or "none"
        when = dt.datetime.fromtimestamp(sim_now, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"simulator: {self.sent} sent in {interval:.0f} s, answers {codes}, "
            f"5.03 retries {self.retried}, errors {self.errors}, in flight {in_flight}, "
            f"simulated time {when}"
        )


class LiveSender:
    """Advances a model in (scaled) real time and sends each reading as a CoAP POST."""

    def __init__(self, model: CityModel, host: str, port: int, speed: float = 1.0,
                 concurrency: int = CONCURRENCY, keys: dict | None = None):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.model = model
        self.uri = f"coap://{f'[{host}]' if ':' in host else host}:{port}/occupancy"
        self.speed = speed
        self.semaphore = asyncio.Semaphore(concurrency)
        self.stats = Stats()
        self.totals = Stats()
        self.tasks: set[asyncio.Task] = set()
        self.context = None
        self.keys = keys  # {bay: its sensor's OSCORE context}; None: send unprotected
        self._warned: set[str] = set()
        self.sending = False  # run() has begun

    async def start(self) -> None:
        """Create the CoAP client context and make sure a gateway answers at the address."""
        from aiocoap import Context

        self.context = await Context.create_client_context()
        await self._check_gateway()

    async def _check_gateway(self) -> None:
        """One GET /.well-known/core (readable without credentials): no gateway there is one line
        naming the settings, not a minute of counted errors."""
        from aiocoap import GET, Message
        from aiocoap.error import Error as CoapError

        target = self.uri.removesuffix("/occupancy")
        probe = Message(code=GET, uri=f"{target}/.well-known/core")
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.context.request(probe).response
        except (CoapError, OSError, TimeoutError) as exc:
            raise StartupError(
                f"no CoAP gateway answers at {target} ({_reason(exc)}): start one (parking-gateway or "
                "parking-run), or set PARKING_COAP_HOST and PARKING_COAP_PORT (or --coap) to where it listens"
            ) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Send readings as simulated time passes, until `stop` is set."""
        self.sending = True
        sim0, wall0 = self.model.now, time.time()
        last_summary = time.monotonic()
        log.info("simulator: sending to %s at speed %g, %d sensors", self.uri, self.speed,
                 len(self.model.sensors))
        while not stop.is_set():
            sim_now = sim0 + (time.time() - wall0) * self.speed
            for reading in self.model.advance(sim_now):
                ts = round(wall0 + (reading.ts - sim0) / self.speed, 3)
                if not await self._acquire(stop):
                    break
                task = asyncio.create_task(self._send(reading, ts))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if time.monotonic() - last_summary >= SUMMARY_EVERY:
                log.info(self.stats.line(time.monotonic() - last_summary, len(self.tasks), sim_now))
                self.stats = Stats()
                last_summary = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop a cancellation.
                async with asyncio.timeout(TICK):
                    await stop.wait()
            except TimeoutError:
                pass

    async def shutdown(self) -> None:
        """Let in-flight requests finish briefly, cancel the rest, close the context."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=SHUTDOWN_GRACE)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.context is not None:
            await self.context.shutdown()
        if not self.sending:
            return  # it never started: the start-up error says why
        t = self.totals
        log.info("simulator stopped: %d sent, answers %s, 5.03 retries %d, errors %d",
                 t.sent, dict(sorted(t.codes.items())), t.retried, t.errors)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Take a concurrency slot, unless `stop` is set first."""
        if not self.semaphore.locked():
            await self.semaphore.acquire()
            return True
        acquire = asyncio.ensure_future(self.semaphore.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if acquire.done() and not acquire.cancelled():
            if stop.is_set():
                self.semaphore.release()
                return False
            return True
        acquire.cancel()
        return False

    async def _send(self, reading: SensorReading, ts: float) -> None:
        """POST one reading; retry after Max-Age on 5.03 (the slot stays taken: backpressure)."""
        from aiocoap import POST, Message
        from aiocoap.error import Error as CoapError
        from aiocoap.numbers import ContentFormat
        from aiocoap.numbers.codes import Code

        payload = json.dumps(
            {"bay": reading.bay, "occupied": reading.occupied, "ts": ts, "seq": reading.seq,
             "battery": reading.battery},
            separators=(",", ":"),
        ).encode()
        try:
            for attempt in range(MAX_503_RETRIES + 1):
                request = Message(code=POST, uri=self.uri, payload=payload,
                                  content_format=ContentFormat.JSON)
                try:
                    response = await self._request(request, reading.bay)
                except CoapError as exc:
                    self._count_error(type(exc).__name__, exc)
                    return
                if response.code == Code.SERVICE_UNAVAILABLE and attempt < MAX_503_RETRIES:
                    self.stats.retried += 1
                    self.totals.retried += 1
                    max_age = response.opt.max_age
                    await asyncio.sleep(DEFAULT_MAX_AGE if max_age is None else max_age)
                    continue
                code = response.code.dotted
                for stats in (self.stats, self.totals):
                    stats.sent += 1
                    stats.codes[code] += 1
                if not response.code.is_successful():
                    log.debug("%s answered %s: %s", reading.bay, code,
                              response.payload.decode("utf-8", "replace"))
                    self._warn_once(code, f"gateway answered {code} "
                                    f"({response.payload.decode('utf-8', 'replace')[:120]})")
                return
        except Exception as exc:  # noqa: BLE001 - a task's failure must not vanish silently
            self._count_error(type(exc).__name__, exc)
        finally:
            self.semaphore.release()

    async def _request(self, request, bay: str):
        """Send one request, protected with the bay's sensor key (a new sequence number each time)."""
        key = self.keys.get(bay) if self.keys is not None else None
        if key is None:
            return await self.context.request(request).response
        protected, request_id = protect(key, request)
        return answer_of(key, await self.context.request(protected).response, request_id)

    def _count_error(self, kind: str, exc: Exception) -> None:
        """Count a request that got no answer (network error, timeout)."""
        for stats in (self.stats, self.totals):
            stats.errors += 1
        log.debug("request failed: %s", exc)
        self._warn_once(kind, f"no answer from {self.uri}: {_reason(exc)}")

    def _warn_once(self, key: str, message: str) -> None:
        """A warning the first time something goes wrong, then only the summaries count it."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("simulator: %s (further ones only counted)", message)


def _reason(exc: BaseException) -> str:
    """Why a request got no answer, in words (aiocoap's NetworkError hides the OS error as its cause)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:g} s"
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.split(" (")[0].lower()  # aiocoap appends "(ECONNREFUSED, received through errqueue)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def parse_hostport(value: str, default_port: int = 5683) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT', 'HOST' → (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


async def run_live(model: CityModel, coap: str, speed: float = 1.0,
                   stop: asyncio.Event | None = None, keys: dict | None = None) -> None:
    """Send live traffic until `stop` is set, or SIGINT/SIGTERM when no event is given."""
    host, port = parse_hostport(coap)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
    sender = LiveSender(model, host, port, speed, keys=keys)
    try:
        await sender.start()
        await sender.run(stop)
    finally:
        await sender.shutdown()

