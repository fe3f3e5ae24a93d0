"""The model of sensor behaviour: simulated lots, their cars and their bays' sensors (pure, no I/O).

Each lot (`LotModel`) steps through simulated time in fixed one-minute steps. Cars arrive at free
bays so that the lot's occupancy follows `gateway.simulator.profiles.target_occupancy` for its kind
(times a per-lot level and a per-day factor), and each car stays for a time drawn from the kind's
stay mixture; when the lot runs above its target (the evening), the cars due soonest leave early.
Each bay's `Sensor` reports every change, repeats its state as a heartbeat (every `HEARTBEAT` s,
jittered), counts `seq` per message (uint32; back to 0 when it reboots), drains its battery, and
has faults: it goes silent for hours now and then, retransmits a reading (same seq and ts) and
rarely reboots. Everything is drawn from random generators seeded per lot, bay and day from
`seed`, so a run is reproducible and does not depend on how time is chunked. `CityModel` holds
every lot and sensor of a city and yields their readings in ts order.

The rest of the simulator uses it: `gateway.simulator.history` (the backfill through
`parking.ingest`), `gateway.simulator.sender` (live CoAP traffic) and `gateway.simulator.cli`
(the `parking-simulate` console script and the `flask simulate` command).
"""
from __future__ import annotations

import datetime as dt
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from parking.ingest import SensorReading
from parking.sensors import SensorSnapshot

from . import profiles

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

    def advance(self, until: float) -> list[SensorReading]:
        """Every reading the sensors send in [now, until), in ts order; moves `now` to `until`."""
        if until <= self.now:
            return []
        for lot in self.lots.values():
            lot.simulate_to(until)
        out: list[SensorReading] = []
        for sensor in self.sensors:
            self._emit(sensor, until, out)
        out.sort(key=lambda r: r.ts)
        self.now = float(until)
        return out

    def _emit(self, s: Sensor, until: float, out: list[SensorReading]) -> None:
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
            reading = SensorReading(bay, s.state, ts, seq, battery if battery > 1 else 1)
            append(reading)
            if rng.random() < RETRANSMIT_PROBABILITY:
                append(reading)  # the ACK was lost: same seq, same ts
            heartbeat = ts + HEARTBEAT - HEARTBEAT_JITTER + int(rng.random() * (2 * HEARTBEAT_JITTER + 1))
        s.next_heartbeat = heartbeat

    @classmethod
    def from_snapshot(cls, snapshot: SensorSnapshot, start: float, seed: int) -> CityModel:
        """A model of the stored lots, bays starting from their stored state and last seq."""
        specs = [
            LotSpec(id=lot.id, kind=profiles.kind_for(lot.category, lot.park_and_ride),
                    timezone=lot.timezone, bays=lot.bays)
            for lot in snapshot.lots
        ]
        return cls(specs, start, seed, snapshot.states, snapshot.last_seqs)


def choose_seed(seed: int | None) -> int:
    """The given seed, or a fresh one (logged by the backfill so a run can be repeated)."""
    return random.SystemRandom().randrange(2**31) if seed is None else seed
