"""Simulated bay sensors: weeks of history through `parking.ingest`, then live CoAP traffic.

Three layers, each usable alone:

- The model (`CityModel`, `LotModel`, `Sensor`): pure Python, no I/O. Each lot steps through
  simulated time in fixed one-minute steps. Cars arrive at free bays so that the lot's
  occupancy follows `gateway.simulator.profiles.target_occupancy` for its kind (times a per-lot level and
  a per-day factor), and each car stays for a time drawn from the kind's stay mixture; when the
  lot runs above its target (the evening), the cars due soonest leave early. Each bay's sensor
  reports every change, repeats its state as a heartbeat (every `HEARTBEAT` s, jittered), counts
  `seq` per message (uint32; back to 0 when it reboots), drains its battery, and has faults: it
  goes silent for hours now and then, retransmits a reading (same seq and ts) and rarely
  reboots. Everything is drawn from random generators seeded per lot, bay and day from `seed`,
  so a run is reproducible and does not depend on how time is chunked.
- `backfill(app, days)`: the history from the newest stored reading (or `days` ago) up to now,
  written through `parking.ingest.ingest_bulk` in chronological chunks, with a progress bar.
- `LiveSender`: the same model advanced in (scaled) real time; every reading is sent as a
  confirmable CoAP ``POST /occupancy`` with a JSON body (contract §3), at most `CONCURRENCY`
  requests in flight, 5.03 retried after its Max-Age, one summary log line a minute.

`main()` is the ``parking-simulate`` console script; `run_simulator()` is what
``flask --app app simulate`` calls. Both parse nothing themselves beyond their arguments: the
logic lives in `backfill` and `LiveSender.start/run/shutdown` (after aiocoap's
``cli/fileserver.py``).

``--speed X`` is a time-lapse: the model's clock runs X times faster than the wall clock, and
each reading is stamped with the wall-clock instant that corresponds to its simulated time
(what a sensor's own clock would say). Stamping simulated times instead would run into the
future, which the gateway refuses (contract §3: more than 5 minutes ahead is a 4.00).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import heapq
import json
import logging
import math
import random
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import click

from parking.ingest import Reading

from . import profiles

log = logging.getLogger(__name__)

HEARTBEAT = 600  # s between a sensor's messages when nothing changes
HEARTBEAT_JITTER = 30  # ± s, so heartbeats do not line up
STEP = 60  # s per model step of a lot
RELAX = 600.0  # s over which a lot's deviation from its target is corrected
KNOT = 300  # s between exact evaluations of a lot's target (linear in between)
MIN_STAY = 120  # s
TARGET_CAP = 0.97  # a lot never fills completely: someone is always just leaving
LEVEL_RANGE = (0.85, 1.2)  # per-lot multiplier on its kind's profile
DAY_SPREAD = 0.07  # per-lot, per-day variation (weather, events) around the profile
MEAN_BETWEEN_SILENCES = 21 * 86400  # s: about 5 of 700 sensors are silent at any time
SILENCE_MEDIAN = 3 * 3600  # s, lognormal
SILENCE_SIGMA = 0.7
MEAN_BETWEEN_REBOOTS = 120 * 86400  # s
RETRANSMIT_PROBABILITY = 0.002
BACKFILL_WINDOW = 6 * 3600  # s of history generated and ingested per chunk
CONCURRENCY = 64
TICK = 0.2  # s of wall clock between live-mode model advances
SUMMARY_EVERY = 60.0  # s
MAX_503_RETRIES = 10
DEFAULT_MAX_AGE = 60  # RFC 7252: Max-Age absent means 60 s
SHUTDOWN_GRACE = 5.0  # s for in-flight requests to finish at shutdown
SEQ_MASK = 0xFFFFFFFF
_INF = float("inf")


@dataclass(frozen=True)
class LotSpec:
    """What the model needs to know about a lot."""

    id: str
    kind: str
    timezone: str
    bays: tuple[str, ...]


@dataclass(slots=True, eq=False)
class Sensor:
    """One bay's sensor: what it last reported and when it will speak next."""

    bay: str
    rng: random.Random
    state: bool
    next_heartbeat: float
    seq: int
    battery_start: float  # percent at battery_since; never reported below 1
    battery_drain: float  # percent per second
    battery_since: float
    next_silence: float
    next_reboot: float
    silent_until: float = 0.0
    # (ts, occupied) changes from the lot model not yet reported, in ts order.
    pending: deque = field(default_factory=deque)


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, normal approximation for large ones)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class LotModel:
    """The cars of one lot: who is parked where and until when, stepped minute by minute."""

    def __init__(self, spec: LotSpec, start: float, seed: int, occupied: Sequence[bool]):
        self.spec = spec
        self.tz = ZoneInfo(spec.timezone)
        self.rng = random.Random(f"{seed}:{spec.id}")
        self.seed = seed
        self.level = random.Random(f"{seed}:{spec.id}:level").uniform(*LEVEL_RANGE)
        self.t = start
        self.size = len(spec.bays)
        self.occupied_flags = list(occupied)
        self.occupied = sum(self.occupied_flags)
        self.since = [start - 3600] * self.size  # when the bay last changed (arrivals need it)
        self.leaves = [_INF] * self.size  # scheduled departure of the car in each bay
        self.departures: list[tuple[float, int]] = []  # heap of (leaves, bay index)
        self.free = [i for i, occ in enumerate(self.occupied_flags) if not occ]
        self.departure_rate = 0.0  # smoothed natural departures per step (feed-forward)
        self.sinks: list[deque] = [deque() for _ in spec.bays]
        self._day_factors: dict[dt.date, float] = {}
        self._knots: tuple[tuple[float, float], tuple[float, float]] | None = None
        local = dt.datetime.fromtimestamp(start, self.tz)
        for i, occ in enumerate(self.occupied_flags):
            if occ:  # a car already parked: it leaves after a random part of a stay
                self._schedule(i, start + self._stay(local) * self.rng.random())

    def target(self, t: float) -> float:
        """The occupancy (0..1) this lot aims at, at instant t."""
        local = dt.datetime.fromtimestamp(t, self.tz)
        day = local.date()
        factor = self._day_factors.get(day)
        if factor is None:
            day_rng = random.Random(f"{self.seed}:{self.spec.id}:{day.isoformat()}")
            factor = self._day_factors[day] = max(0.8, min(1.2, day_rng.gauss(1.0, DAY_SPREAD)))
        value = profiles.target_occupancy(self.spec.kind, local) * self.level * factor
        return min(TARGET_CAP, value)

    def simulate_to(self, until: float) -> None:
        """Run every step that starts before `until`; changes go to the bays' sinks."""
        while self.t < until:
            self._step(self.t)
            self.t += STEP

    def _step(self, start: float) -> None:
        """One step: natural departures, then arrivals or early departures towards the target."""
        end = start + STEP
        departed = 0
        while self.departures and self.departures[0][0] < end:
            leaves, i = heapq.heappop(self.departures)
            if self.leaves[i] == leaves:  # else: a stale entry of a car that left early
                self._depart(i, leaves)
                departed += 1
        self.departure_rate += 0.1 * (departed - self.departure_rate)
        target, slope = self._target_and_slope(start + STEP / 2)
        surplus = self.occupied - target * self.size
        # Feed-forward (replace who left, follow the profile's slope) plus a correction.
        arrivals = self.departure_rate + slope * STEP * self.size - surplus * STEP / RELAX
        if arrivals > 0:
            self._arrive(min(_poisson(self.rng, arrivals), len(self.free)), start)
        elif surplus > max(1.0, 0.02 * self.size):
            self._leave_early(_poisson(self.rng, -arrivals), start)

    def _target_and_slope(self, t: float) -> tuple[float, float]:
        """The target at t and its slope per second, interpolated between knots KNOT s apart."""
        knots = self._knots
        if knots is None or t >= knots[1][0] or t < knots[0][0]:
            first = t - t % KNOT
            knots = self._knots = ((first, self.target(first)), (first + KNOT, self.target(first + KNOT)))
        (t0, v0), (t1, v1) = knots
        slope = (v1 - v0) / KNOT
        return v0 + slope * (t - t0), slope

    def _arrive(self, count: int, start: float) -> None:
        """Park `count` cars in random free bays during the step."""
        local = dt.datetime.fromtimestamp(start, self.tz)
        for _ in range(count):
            k = self.rng.randrange(len(self.free))
            self.free[k], self.free[-1] = self.free[-1], self.free[k]
            i = self.free.pop()
            # A bay freed during this step can only be taken after the car left.
            t = max(int(start + self.rng.random() * STEP), int(self.since[i]) + 1)
            self.occupied_flags[i] = True
            self.occupied += 1
            self.since[i] = t
            self.sinks[i].append((t, True))
            self._schedule(i, t + self._stay(local))

    def _leave_early(self, count: int, start: float) -> None:
        """The `count` cars due soonest leave during this step (the lot is above its target)."""
        while count > 0 and self.departures:
            leaves, i = heapq.heappop(self.departures)
            if self.leaves[i] != leaves:
                continue
            t = max(int(start + self.rng.random() * STEP), int(self.since[i]) + MIN_STAY)
            self._depart(i, t)
            count -= 1

    def _depart(self, i: int, t: float) -> None:
        """The car in bay i leaves at t."""
        self.occupied_flags[i] = False
        self.occupied -= 1
        self.leaves[i] = _INF
        self.since[i] = t
        self.free.append(i)
        self.sinks[i].append((t, False))

    def _schedule(self, i: int, leaves: float) -> None:
        """Remember when the car in bay i will leave."""
        leaves = int(leaves)
        self.leaves[i] = leaves
        heapq.heappush(self.departures, (leaves, i))

    def _stay(self, local: dt.datetime) -> float:
        """A stay length in seconds for a car arriving at this local time."""
        groups = profiles.stays_at(self.spec.kind, local)
        pick = self.rng.random() * sum(g.weight for g in groups)
        for group in groups:
            pick -= group.weight
            if pick <= 0:
                break
        minutes = self.rng.lognormvariate(math.log(group.median_minutes), group.sigma)
        return max(MIN_STAY, minutes * 60)


class CityModel:
    """All lots and sensors of a city; `advance(until)` yields the readings up to `until`."""

    def __init__(
        self,
        lots: Iterable[LotSpec],
        start: float,
        seed: int,
        states: dict[str, bool | None] | None = None,
        seqs: dict[str, int] | None = None,
    ):
        states, seqs = states or {}, seqs or {}
        # Whole seconds: sensors stamp whole seconds, and a change must never be stamped
        # before a heartbeat already sent.
        start = float(math.floor(start))
        self.seed = seed
        self.now = start
        self.lots: dict[str, LotModel] = {}
        self.sensors: list[Sensor] = []
        for spec in lots:
            local = dt.datetime.fromtimestamp(start, ZoneInfo(spec.timezone))
            expected = profiles.target_occupancy(spec.kind, local)
            initial = []
            for bay in spec.bays:
                rng = random.Random(f"{seed}:{bay}")
                known = states.get(bay)
                initial.append(rng.random() < expected if known is None else known)
                self.sensors.append(self._sensor(bay, rng, initial[-1], start, seqs.get(bay)))
            lot = LotModel(spec, start, seed, initial)
            self.lots[spec.id] = lot
            for sensor, sink in zip(self.sensors[-lot.size :], lot.sinks):
                sensor.pending = sink

    @staticmethod
    def _sensor(bay: str, rng: random.Random, state: bool, start: float, seq: int | None) -> Sensor:
        """A sensor with its own battery, phase and fault schedule."""
        roll = rng.random()  # a few sensors are nearly flat, some half-way, most fairly new
        low, high = (6, 18) if roll < 0.03 else (20, 60) if roll < 0.12 else (60, 100)
        battery = rng.uniform(low, high)
        return Sensor(
            bay=bay,
            rng=rng,
            state=state,
            next_heartbeat=start + rng.random() * HEARTBEAT,
            seq=seq & SEQ_MASK if seq is not None else rng.randrange(100_000),  # last seq used
            battery_start=battery,
            battery_drain=rng.uniform(0.05, 0.3) / 86400,
            battery_since=start,
            next_silence=start + rng.expovariate(1 / MEAN_BETWEEN_SILENCES),
            next_reboot=start + rng.expovariate(1 / MEAN_BETWEEN_REBOOTS),
        )

    def occupancy(self, lot_id: str) -> float:
        """The true occupied fraction of a lot at the model's horizon."""
        lot = self.lots[lot_id]
        return lot.occupied / lot.size

    def advance(self, until: float) -> list[Reading]:
        """Every reading the sensors send in [now, until), in ts order; moves `now` to `until`."""
        if until <= self.now:
            return []
        for lot in self.lots.values():
            lot.simulate_to(until)
        out: list[Reading] = []
        for sensor in self.sensors:
            self._emit(sensor, until, out)
        out.sort(key=lambda r: r.ts)
        self.now = float(until)
        return out

    def _emit(self, s: Sensor, until: float, out: list[Reading]) -> None:
        """Append what one sensor sends before `until`: changes, heartbeats, boot messages.

        The hot loop of a backfill (one pass per message), hence the local variables.
        """
        pending, rng, append, bay = s.pending, s.rng, out.append, s.bay
        heartbeat = s.next_heartbeat
        while True:
            change = pending[0][0] if pending else _INF
            fault = s.next_silence if s.next_silence < s.next_reboot else s.next_reboot
            if change <= heartbeat and change <= fault:
                if change >= until:
                    break
                t = change
                s.state = pending.popleft()[1]
                if t < s.silent_until:
                    continue  # the change happens, but nobody hears of it
            elif heartbeat <= fault:
                if heartbeat >= until:
                    break
                t = heartbeat
            else:
                if fault >= until:
                    break
                t = fault
                if t == s.next_silence:
                    duration = rng.lognormvariate(math.log(SILENCE_MEDIAN), SILENCE_SIGMA)
                    s.silent_until = t + min(86400.0, duration)
                    heartbeat = s.silent_until  # back with its current state
                    s.next_silence = s.silent_until + rng.expovariate(1 / MEAN_BETWEEN_SILENCES)
                    continue
                s.next_reboot = t + rng.expovariate(1 / MEAN_BETWEEN_REBOOTS)
                s.seq = SEQ_MASK  # the boot message wraps it to 0
                if t < s.silent_until:
                    continue
            ts = int(t)
            s.seq = seq = (s.seq + 1) & SEQ_MASK
            battery = int(s.battery_start - s.battery_drain * (ts - s.battery_since))
            reading = Reading(bay, s.state, ts, seq, battery if battery > 1 else 1)
            append(reading)
            if rng.random() < RETRANSMIT_PROBABILITY:
                append(reading)  # the ACK was lost: same seq, same ts
            heartbeat = ts + HEARTBEAT - HEARTBEAT_JITTER + int(rng.random() * (2 * HEARTBEAT_JITTER + 1))
        s.next_heartbeat = heartbeat

    @classmethod
    def from_db(cls, start: float, seed: int) -> CityModel:
        """A model of the stored lots, bays starting from their stored state (app context needed)."""
        from sqlalchemy import and_, func, select

        from parking.extensions import db
        from parking.models import Bay, Lot
        from parking.models import Reading as ReadingRow

        specs = [
            LotSpec(
                id=lot.id,
                kind=profiles.kind_for(lot.category, lot.park_and_ride),
                timezone=lot.timezone,
                bays=tuple(bay.id for bay in lot.bays),
            )
            for lot in db.session.scalars(select(Lot).order_by(Lot.id))
        ]
        states = dict(db.session.execute(select(Bay.id, Bay.state)).all())
        seqs = dict(
            db.session.execute(
                select(Bay.id, func.max(ReadingRow.seq))
                .join(ReadingRow, and_(ReadingRow.bay_id == Bay.id, ReadingRow.ts == Bay.last_ts))
                .group_by(Bay.id)
            ).all()
        )
        return cls(specs, start, seed, states, {b: s for b, s in seqs.items() if s is not None})


def _newest_reading_ts() -> float | None:
    """ts of the newest stored reading (app context needed)."""
    from sqlalchemy import func, select

    from parking.extensions import db
    from parking.models import Reading as ReadingRow

    return db.session.scalar(select(func.max(ReadingRow.ts)))


def backfill(
    app,
    days: float,
    now: float | None = None,
    seed: int | None = None,
    model: CityModel | None = None,
) -> CityModel:
    """Write simulated history up to `now` through parking.ingest; returns the model to go on with.

    History starts at the newest stored reading or `days` before `now`, whichever is later, or
    where `model` stands when one is passed in. With `now` None it runs to the present,
    catching up on the time the backfill itself took.
    """
    from parking.ingest import ingest_bulk

    seed = _seed(seed)
    with app.app_context():
        end = time.time() if now is None else now
        if model is None:
            newest = _newest_reading_ts()
            start = end - days * 86400
            if newest is not None and newest > start:
                start = newest
            model = CityModel.from_db(min(start, end), seed)
        if not model.lots:
            raise click.ClickException("no lots to simulate: import a lot file first (import-lots)")
        began, stored, total = time.monotonic(), 0, 0
        with click.progressbar(
            length=max(1, int(end - model.now)), label="Backfilling sensor history"
        ) as bar:
            while model.now < end:
                start = model.now
                readings = model.advance(min(end, start + BACKFILL_WINDOW))
                total += len(readings)
                stored += ingest_bulk(readings)
                bar.update(int(model.now - start))
        while now is None and time.time() - model.now > 1.0:  # the minute the backfill took
            readings = model.advance(time.time())
            total += len(readings)
            stored += ingest_bulk(readings)
    elapsed = time.monotonic() - began
    log.info(
        "backfill: %d readings generated, %d stored in %.1f s (%.0f/s), seed %d",
        total, stored, elapsed, total / elapsed if elapsed else 0, seed,
    )
    return model


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
                 concurrency: int = CONCURRENCY):
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
        self._warned: set[str] = set()

    async def start(self) -> None:
        """Create the CoAP client context."""
        from aiocoap import Context

        self.context = await Context.create_client_context()

    async def run(self, stop: asyncio.Event) -> None:
        """Send readings as simulated time passes, until `stop` is set."""
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
                await asyncio.wait_for(stop.wait(), TICK)
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

    async def _send(self, reading: Reading, ts: float) -> None:
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
                    response = await self.context.request(request).response
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

    def _count_error(self, kind: str, exc: Exception) -> None:
        """Count a request that got no answer (network error, timeout)."""
        for stats in (self.stats, self.totals):
            stats.errors += 1
        log.debug("request failed: %s", exc)
        self._warn_once(kind, f"request failed: {kind}: {exc}")

    def _warn_once(self, key: str, message: str) -> None:
        """A warning the first time something goes wrong, then only the summaries count it."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("simulator: %s (further ones only counted)", message)


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
                   stop: asyncio.Event | None = None) -> None:
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
    sender = LiveSender(model, host, port, speed)
    await sender.start()
    try:
        await sender.run(stop)
    finally:
        await sender.shutdown()


def run_simulator(app, backfill_days: float = 0, speed: float = 1.0,
                  coap: str = "127.0.0.1:5683", seed: int | None = None, live: bool = True) -> None:
    """Backfill `backfill_days` of history, then (if `live`) simulate until SIGINT/SIGTERM."""
    seed = _seed(seed)
    with _sigterm_as_interrupt():
        if backfill_days > 0:
            model = backfill(app, backfill_days, seed=seed)
        else:
            with app.app_context():
                model = CityModel.from_db(time.time(), seed)
            if not model.lots:
                raise click.ClickException("no lots to simulate: import a lot file first (import-lots)")
            log.info("simulator: starting from the stored bay states, seed %d", seed)
    if live:
        asyncio.run(run_live(model, coap, speed))


class _sigterm_as_interrupt:
    """During the (synchronous) backfill, SIGTERM stops it like Ctrl-C does."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt


def _seed(seed: int | None) -> int:
    """The given seed, or a fresh one (logged by the backfill so a run can be repeated)."""
    return random.SystemRandom().randrange(2**31) if seed is None else seed


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of parking-simulate."""
    parser = argparse.ArgumentParser(
        prog="parking-simulate",
        description="Simulated parking bay sensors for the lots in the database: backfill "
        "history, then send live readings to the CoAP gateway.",
    )
    parser.add_argument("--backfill-days", type=float, default=0, metavar="N",
                        help="first write N days of history through the ingest path (default 0)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="time-lapse factor of the live simulation (default 1: real time)")
    parser.add_argument("--coap", default="127.0.0.1:5683", metavar="HOST:PORT",
                        help="the gateway to send to (default 127.0.0.1:5683)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="random seed, for a reproducible run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: parse options, build the app, run until interrupted."""
    options = build_parser().parse_args(argv)
    if options.speed <= 0:
        build_parser().error("--speed must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from parking import create_app

    app = create_app()
    try:
        run_simulator(app, options.backfill_days, options.speed, options.coap, options.seed)
    except KeyboardInterrupt:
        log.info("simulator interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
