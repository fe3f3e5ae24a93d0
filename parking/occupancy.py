"""The occupancy arithmetic: readings → known-state intervals → hourly figures, stays, counts.

This module owns the meaning of the numbers (contract §5) and the local-hour calendar
(docs/architecture.md, "Time"). Everything here is a pure function of its arguments: no Flask,
no database, no clock. The database layer fetches readings and stores what these functions
return; there is no second copy of this arithmetic anywhere else. (Over 400 lines on purpose:
every rule of §5 has its one home here, next to the others it must agree with.)

Conventions used throughout:

* Instants are Unix seconds (float, UTC). Local time appears only in `hour_label`.
* A bay's readings are a sequence of ``(ts, occupied)`` sorted by ``ts``; for equal ``ts`` the
  later element is the later-stored reading and wins (storage order: ``ts``, then id).
* The rule: a reading at ``t`` with state ``s`` says the bay is ``s`` on
  ``[t, min(t_next, t + stale_after))``; past that and until the next reading its state is
  unknown. All intervals are half-open.
* Compacted history (``fold``): a *run* ``(ts, occupied, last_ts)`` stands for readings of one
  state from ``ts`` to ``last_ts``, each within ``stale_after`` of the one before, so the bay is
  ``s`` on ``[ts, min(t_next, last_ts + stale_after))``. A reading is the run
  ``(ts, occupied, ts)``; every function below takes either form, and gives the same figures
  for a run as for the readings it stands for.
* A local hour is ``[h, h + 3600)`` where the local clock shows minute 0 at ``h``.
"""

from __future__ import annotations

import datetime
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, islice
from math import inf
from operator import itemgetter
from zoneinfo import ZoneInfo

__all__ = [
    "HOUR",
    "CurrentCounts",
    "HourFigures",
    "FoldedRun",
    "Interval",
    "StateRun",
    "TimedState",
    "as_runs",
    "bay_intervals",
    "changes_by_bay",
    "continues_run",
    "coverage_pct",
    "current_counts",
    "floor_local_hour",
    "fold",
    "hour_label",
    "hour_starts",
    "hourly_figures",
    "hours_reached",
    "local_midnight",
    "occupancy_pct",
    "percent",
    "reach_hours",
    "run_start",
    "state_changes",
    "stays",
]

HOUR = 3600.0

TimedState = tuple[float, bool]
"""One reading of one bay: (ts in Unix seconds, occupied)."""

StateRun = tuple[float, bool, float]
"""A run of one bay's readings of one state (``fold``): (first ts, occupied, last ts)."""

FoldedRun = tuple[float, bool, float, int]
"""A run as `fold` returns it: (first ts, occupied, last ts, how many readings it stands for)."""

TimeZone = str | datetime.tzinfo
"""An IANA zone name ("Europe/Berlin") or a tzinfo object."""

_ts = itemgetter(0)


def as_runs(readings: Sequence[TimedState] | Sequence[StateRun]) -> Sequence[StateRun]:
    """The readings as runs: a reading (ts, occupied) is the run (ts, occupied, ts)."""
    if readings and len(readings[0]) == 2:
        return [(t, occupied, t) for t, occupied in readings]
    return readings  # type: ignore[return-value]


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True, slots=True)
class Interval:
    """A half-open stretch [start, end) during which a bay was known to be in one state."""

    start: float
    end: float
    occupied: bool


def _spans(
    readings: Sequence[StateRun], stale_after: float, start: float, end: float
) -> Iterator[tuple[float, float, bool]]:
    """Yield the bay's known-state spans clipped to [start, end), adjacent equal states merged."""
    # Of the history before `start` only the last reading at or before it can reach into the
    # window (every earlier one is superseded by then). Readings at or after `end` say nothing
    # about [start, end) except where the last one before them stops.
    lo = max(0, bisect_right(readings, start, key=_ts) - 1)
    hi = bisect_left(readings, end, key=_ts)
    window = readings[lo:hi]
    after = readings[hi][0] if hi < len(readings) else inf
    next_ts = chain(map(_ts, islice(window, 1, None)), (after,))
    open_start = open_end = 0.0
    open_occ: bool | None = None
    # This loop sees every reading: plain comparisons instead of min()/max() calls.
    for (t, occupied, last), next_t in zip(window, next_ts):
        e = last + stale_after
        if next_t < e:
            e = next_t
        if end < e:
            e = end
        s = t if t > start else start
        if e <= s:
            # Superseded by a reading with the same ts, or entirely before `start`.
            continue
        occupied = bool(occupied)
        if occupied is open_occ and s == open_end:
            # A heartbeat (or a reading within the previous one's reach) repeating the state:
            # one longer span, so callers see state changes and gaps, not every reading.
            open_end = e
            continue
        if open_occ is not None:
            yield open_start, open_end, open_occ
        open_start, open_end, open_occ = s, e, occupied
    if open_occ is not None:
        yield open_start, open_end, open_occ


def bay_intervals(
    readings: Sequence[TimedState] | Sequence[StateRun],
    stale_after: float,
    start: float = -inf,
    end: float = inf,
) -> list[Interval]:
    """Known-state intervals of one bay clipped to [start, end); touching equal states merged."""
    return [Interval(s, e, occ) for s, e, occ in _spans(as_runs(readings), stale_after, start, end)]


# --------------------------------------------------------------------------- local time


def _zone(tz: TimeZone) -> datetime.tzinfo:
    """The tzinfo for a zone name (ZoneInfo caches instances) or the tzinfo itself."""
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _utcoffset(t: float, zone: datetime.tzinfo) -> float:
    """The zone's UTC offset in seconds at instant t."""
    offset = datetime.datetime.fromtimestamp(t, zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def floor_local_hour(t: float, tz_name: TimeZone) -> float:
    """Start of the local hour containing instant t."""
    # Using the offset in force at t keeps both 02:xx hours of a fall-back night apart, and
    # works for zones whose offset is not a whole number of hours (their hours start at :30 UTC).
    return t - (t + _utcoffset(t, _zone(tz_name))) % HOUR


def hour_starts(tz_name: TimeZone, start: float, end: float) -> list[float]:
    """Local hour starts in [start, end): 3600 s steps in UTC from `start`, a local hour start."""
    if floor_local_hour(start, tz_name) != start:
        raise ValueError(f"{start!r} is not the start of a local hour in {tz_name}")
    # Stepping in UTC, not on the wall clock, is what yields 23 or 25 rows on a day when
    # clocks change (architecture.md, "Time").
    hours: list[float] = []
    h = start
    while h < end:
        hours.append(h)
        h += HOUR
    return hours


def local_midnight(day: datetime.date, tz_name: TimeZone) -> float:
    """The first instant of `day` in the zone: local 00:00, or the end of a gap that swallows it."""
    zone = _zone(tz_name)
    wall = datetime.datetime.combine(day, datetime.time(0), tzinfo=zone)
    # fold=0 / fold=1 pick the earlier / later offset around a transition; when 00:00 occurs
    # twice the earlier instant is the first one.
    candidates = sorted({wall.timestamp(), wall.replace(fold=1).timestamp()})
    for c in candidates:
        local = datetime.datetime.fromtimestamp(c, zone)
        if local.date() == day and local.time() == datetime.time(0):
            return c
    # 00:00 falls into a gap (some zones change clocks at midnight, Pacific/Apia skipped a whole
    # day): the day begins at the transition, which lies between the two readings of the wall
    # time (before it the clock shows an earlier day). Bisect to the second.
    lo, hi = candidates[0], candidates[-1]
    while hi - lo > 1.0:
        mid = (lo + hi) // 2
        if datetime.datetime.fromtimestamp(mid, zone).date() >= day:
            hi = mid
        else:
            lo = mid
    return float(hi)


@lru_cache(maxsize=65536)
def hour_label(h: float, tz_name: TimeZone) -> str:
    """ISO 8601 local time with offset, e.g. "2026-03-29T01:00:00+01:00" (cached: a report of
    many lots of one city labels the same hours over and over)."""
    return datetime.datetime.fromtimestamp(h, _zone(tz_name)).isoformat(timespec="seconds")


def reach_hours(first: float, last: float, stale_after: float, tz_name: TimeZone) -> Iterator[float]:
    """Start of every local hour that readings stamped in [first, last] can change, ascending.

    A reading at t says the bay's state on [t, t + stale_after), and the next reading up to
    stale_after later can be an arrival because of it: so it can change every hour overlapping
    the closed [t, t + stale_after]. These are the hours ingest marks dirty and a rollup redoes.
    """
    h = floor_local_hour(first, tz_name)
    while h <= last + stale_after:
        yield h
        h += HOUR


def hours_reached(stamps: Iterable[float], stale_after: float, tz_name: TimeZone) -> set[float]:
    """Start of every local hour that readings at these instants can change: `reach_hours` of
    each reading, the zone's arithmetic done once per hour the readings fall in, not per reading."""
    hours: set[float] = set()
    hour = -inf
    for ts in sorted(stamps):
        if not hour <= ts < hour + HOUR:
            hour = floor_local_hour(ts, tz_name)
        h = hour  # = floor_local_hour(ts): reach_hours(ts, ts, ...) from here
        while h <= ts + stale_after:
            hours.add(h)
            h += HOUR
    return hours


# --------------------------------------------------------------------------- hourly figures


@dataclass(slots=True)
class HourFigures:
    """Raw figures of one lot for one local hour [hour_start, hour_start + 3600)."""

    hour_start: float
    bays: int  # bays in the lot, including those that never reported
    occupied_seconds: float  # sum over bays of seconds occupied in the hour
    known_seconds: float  # sum over bays of seconds in a known state in the hour
    span_seconds: float  # seconds of the hour that count: 3600, less for the hour containing `now`
    peak_occupied: int  # most bays occupied at the same instant in the hour
    arrivals: int  # readings in the hour turning a bay from known-free to occupied

    @property
    def occupancy_pct(self) -> float | None:
        """100 × occupied / known seconds, one decimal; None when nothing was known."""
        return occupancy_pct(self.occupied_seconds, self.known_seconds)

    @property
    def coverage_pct(self) -> float | None:
        """100 × known / (bays × span) seconds, one decimal; None when there is nothing to cover."""
        return coverage_pct(self.known_seconds, self.bays, self.span_seconds)

    def as_tuple(self) -> tuple:
        """The fields in order: what `HourFigures(*t)` takes back."""
        return (self.hour_start, self.bays, self.occupied_seconds, self.known_seconds,
                self.span_seconds, self.peak_occupied, self.arrivals)


def percent(part: float, whole: float) -> float | None:
    """100 × part / whole with one decimal; None when whole is 0.

    The one percentage of every utilization figure (hourly rows, summaries, days, heatmap cells):
    an empty denominator (no bay, no known second, an hour not begun) means there is no figure,
    which is null in JSON and an empty CSV cell, never 0 %.
    """
    if whole <= 0:
        return None
    return round(100.0 * part / whole, 1)


def occupancy_pct(occupied_seconds: float, known_seconds: float) -> float | None:
    """100 × occupied / known seconds, one decimal; None when nothing was known."""
    return percent(occupied_seconds, known_seconds)


def coverage_pct(known_seconds: float, bays: int, span_seconds: float) -> float | None:
    """100 × known / (bays × span) seconds, one decimal; None when there is nothing to cover."""
    return percent(known_seconds, bays * span_seconds)


def hourly_figures(
    readings_by_bay: Mapping[str, Sequence[TimedState] | Sequence[StateRun]],
    bay_count: int,
    hours: Sequence[float],
    stale_after: float,
    now: float | None = None,
) -> list[HourFigures]:
    """Figures per hour start in `hours` (ascending, disjoint); nothing at or after `now` counts."""
    for a, b in zip(hours, hours[1:]):
        if b < a + HOUR:
            raise ValueError(f"hours must be ascending and 3600 s apart at least: {a!r}, {b!r}")
    reporting = sum(1 for readings in readings_by_bay.values() if readings)
    if reporting > bay_count:
        raise ValueError(f"{reporting} bays reported but the lot has {bay_count}")

    horizon = inf if now is None else now
    n = len(hours)
    # End of the counted part of each hour; never before its start, so the sequence stays sorted.
    ends = [max(h, min(h + HOUR, horizon)) for h in hours]
    occupied_s = [0.0] * n
    known_s = [0.0] * n
    peak = [0] * n
    arrivals = [0] * n
    if n and (now is None or now > hours[0]):
        window_start, window_end = hours[0], min(hours[-1] + HOUR, horizon)
        # One list of (instant, Δknown, Δoccupied) for the whole lot: a single sorted sweep then
        # gives the sums and the peak together, in O(E log E + hours) rather than per-hour
        # rescans. Merged spans keep E proportional to state changes and gaps, not heartbeats.
        events: list[tuple[float, int, int]] = []
        for readings in readings_by_bay.values():
            readings = as_runs(readings)
            for s, e, occ in _spans(readings, stale_after, window_start, window_end):
                o = 1 if occ else 0
                events.append((s, 1, o))
                events.append((e, -1, -o))
            _count_arrivals(readings, stale_after, hours, ends, arrivals)
        events.sort()

        known = occupied = 0
        k = 0  # first hour that can still receive time; only moves forward
        prev_t = window_start
        for t, d_known, d_occupied in events:
            # Counts are constant on [prev_t, t). Events at equal instants all apply before the
            # next stretch is measured, so a bay leaving at t and another arriving at t never
            # overlap (half-open intervals). Stretches with nothing known add nothing.
            if t > prev_t and known:
                while k < n and ends[k] <= prev_t:
                    k += 1
                j = k
                while j < n and hours[j] < t:
                    overlap = min(t, ends[j]) - max(prev_t, hours[j])
                    if overlap > 0:
                        known_s[j] += known * overlap
                        occupied_s[j] += occupied * overlap
                        if occupied > peak[j]:
                            peak[j] = occupied
                    j += 1
            known += d_known
            occupied += d_occupied
            prev_t = t

    return [
        HourFigures(
            hour_start=h,
            bays=bay_count,
            occupied_seconds=occupied_s[j],
            known_seconds=known_s[j],
            span_seconds=ends[j] - h,
            peak_occupied=peak[j],
            arrivals=arrivals[j],
        )
        for j, h in enumerate(hours)
    ]


def _is_arrival(previous: StateRun, current: StateRun, stale_after: float) -> bool:
    """Whether `current` turns the bay from known-free to occupied (contract §5)."""
    # Free must still be known right up to current's ts: a gap longer than stale_after after
    # the previous reading (a run's last one) means the state was unknown just before, and a
    # car seen after a gap is no arrival.
    return bool(current[1]) and not previous[1] and current[0] - previous[2] <= stale_after


def _count_arrivals(
    readings: Sequence[StateRun],
    stale_after: float,
    hours: Sequence[float],
    ends: Sequence[float],
    arrivals: list[int],
) -> None:
    """Add one bay's arrivals to the hour whose counted part [hours[j], ends[j]) contains them."""
    lo = max(1, bisect_left(readings, hours[0], key=_ts))
    hi = bisect_left(readings, ends[-1], key=_ts)
    if lo >= hi:
        return
    _, prev_occupied, prev_last = readings[lo - 1]
    for t, occupied, last in readings[lo:hi]:
        # The rule of _is_arrival, inlined: this loop sees every reading.
        if occupied and not prev_occupied and t - prev_last <= stale_after:
            j = bisect_right(hours, t) - 1
            # `hours` need not be contiguous (a reading between two listed hours counts
            # nowhere), and `ends` stops each hour at `now`.
            if j >= 0 and t < ends[j]:
                arrivals[j] += 1
        prev_occupied, prev_last = occupied, last


# --------------------------------------------------------------------------- stays, changes


def stays(readings: Sequence[TimedState] | Sequence[StateRun], stale_after: float) -> list[tuple[float, float]]:
    """Completed stays of one bay as (arrival ts, departure ts), in order."""
    readings = as_runs(readings)
    result: list[tuple[float, float]] = []
    arrived: float | None = None
    for i in range(1, len(readings)):
        previous, current = readings[i - 1], readings[i]
        if arrived is not None:
            if current[0] - previous[2] > stale_after:
                # The bay went unknown while occupied: we cannot tell when the car left.
                arrived = None
            elif not current[1]:
                result.append((arrived, current[0]))
                arrived = None
            continue  # an occupied heartbeat within reach keeps the stay going
        if _is_arrival(previous, current, stale_after):
            arrived = current[0]
    return result


def state_changes(readings: Iterable[TimedState], before: bool | None = None) -> list[TimedState]:
    """Readings whose state differs from the previous reading's (the first one included, unless
    it repeats `before`, the bay's state before these readings)."""
    return [(ts, occupied) for _, ts, occupied in
            changes_by_bay(((None, ts, occupied) for ts, occupied, *_ in readings), {None: before})]


def changes_by_bay(
    rows: Iterable[tuple[str, float, bool]], last: MutableMapping[str, bool | None]
) -> Iterator[tuple[str, float, bool]]:
    """The (bay, ts, occupied) rows, in storage order, that change their bay's state (contract §4,
    events CSV): a bay's first reading does, unless it repeats `last[bay]`, its state before
    these rows; a heartbeat repeating the state does not. Rows of several bays may interleave.

    `last` is brought up to date as the rows go by, so a long history can be fed in parts."""
    for bay, ts, occupied in rows:
        occupied = bool(occupied)
        previous = last.get(bay)
        if previous is None or bool(previous) is not occupied:
            yield bay, ts, occupied
        last[bay] = occupied


# --------------------------------------------------------------------------- compaction


def fold(
    items: Iterable[tuple[float, bool, float, int]], stale_after: float, max_span: float
) -> list[FoldedRun]:
    """Fold a bay's readings and runs (storage order) into runs that give the same figures.

    `items` are (ts, occupied, last_ts, readings); a reading is (ts, occupied, ts, 1). Three
    rules, each of which changes no figure of this module:

    * An item of the same state as the run before it that starts within `stale_after` of that
      run's last reading continues it: every reading of both is within reach of the one before,
      so the state was known throughout either way (no change, no arrival, no stale gap between).
      A run spans at most `max_span` seconds (then a new run starts at the next reading), which
      bounds how far back a reader must look for the run that reaches into its window.
    * An item that starts inside the run before it (a late reading, received after that stretch
      was folded) and repeats its state adds nothing: it is absorbed.
    * One that starts inside it with the other state ends the run at its ts: the readings that
      would say when the run's state came back were folded, so from there the bay is known
      only as far as the late reading and what follows say.

    Folding what `fold` returned, or folding in parts (earlier items first, then the rest after
    the last run), gives the same runs: compaction can run any time, over any stretch.
    """
    out: list[list] = []
    for ts, occupied, last, count in items:
        occupied = bool(occupied)
        if out:
            run = out[-1]
            if ts <= run[2]:
                if occupied is run[1]:
                    if last > run[2]:
                        run[2] = last
                    run[3] += count
                    continue
                if ts < run[2]:
                    run[2] = ts
            elif occupied is run[1] and ts - run[2] <= stale_after and last - run[0] <= max_span:
                run[2] = last
                run[3] += count
                continue
        out.append([ts, occupied, last, count])
    return [(ts, occupied, last, count) for ts, occupied, last, count in out]


# --------------------------------------------------------------------------- current run


def continues_run(state: bool | None, last_ts: float | None, occupied: bool, ts: float,
                  stale_after: float) -> bool:
    """Whether a reading (ts, occupied) at or after the bay's newest (last_ts, state) continues
    the bay's current run: the same state, with no gap longer than stale_after (a stale gap
    ends the run, as the bay was unknown in between)."""
    return state is not None and state == occupied and ts - last_ts <= stale_after


def run_start(newest_first: Iterable[TimedState] | Iterable[StateRun], stale_after: float) -> float | None:
    """Start of the current run (a bay's `state_since`) from its readings or runs, newest first:
    the earliest one chained to the newest by `continues_run`; None without readings.

    Reads only as far back as the run goes, so a cursor can be handed in and closed after."""
    start = state = None
    for item in newest_first:
        ts, occupied = item[0], item[1]
        last = item[2] if len(item) > 2 else ts
        if start is None:
            start, state = ts, bool(occupied)
        elif continues_run(bool(occupied), last, state, start, stale_after):
            start = ts  # the earlier reading or run is continued by the run's start
        else:
            break
    return start


# --------------------------------------------------------------------------- current counts


@dataclass(frozen=True)
class CurrentCounts:
    """Bays of a lot by state at one instant."""

    free: int
    occupied: int
    unknown: int
    total: int


def current_counts(
    latest: Iterable[tuple[float | None, bool | None]],
    total: int,
    now: float,
    stale_after: float,
) -> CurrentCounts:
    """Free / occupied / unknown bays at `now` from each reporting bay's newest (ts, state)."""
    free = occupied = 0
    for ts, state in latest:
        # Known until ts + stale_after. A reading stamped up to a few minutes in the future
        # (ingest refuses more) is a sensor clock running ahead: it is the newest news we have,
        # so it counts now rather than making the bay look unknown.
        if ts is None or state is None or not now < ts + stale_after:
            continue
        if state:
            occupied += 1
        else:
            free += 1
    if free + occupied > total:
        raise ValueError(f"{free + occupied} bays known but the lot has {total}")
    return CurrentCounts(free=free, occupied=occupied, unknown=total - free - occupied, total=total)
