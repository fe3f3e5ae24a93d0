"""Hourly aggregates: kept current incrementally, and read back with on-the-fly gaps filled.

`run_rollup` recomputes exactly the hours that `parking.ingest` marked dirty and that have ended;
its cost grows with the new readings, not with the history. `utilization` (one lot) and
`utilization_of_lots` (many, a few queries per batch of lots) answer a report: stored rows where
they are current, a fresh computation for dirty or unfinished hours, and an empty row for an hour
no reading could touch. So a report reflects every reading stored before it was requested,
whether or not the scheduler has run.
"""
from __future__ import annotations

import time
from bisect import bisect_right
from collections import defaultdict
from itertools import chain, groupby
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app
from sqlalchemy import Float, bindparam, delete, func, literal, select

from .extensions import db
from .dbutil import chunks, driver_tuples, upsert_insert
from .models import Bay, HourlyUtilization, Lot, RollupDirty
from .models import StoredReading
from .history import readings_of_lots
from .models import BayRun
from .occupancy import HOUR, HourFigures, StateRun, hour_starts, hourly_figures, reach_hours

# On-the-fly and rollup work is done in windows of this many hours, to bound memory.
WINDOW_HOURS = 168
# Readings of several lots are fetched in one query, up to this many lot-hours at a time (about
# 60,000 readings at a live rate of 6 readings per bay and hour in 100-bay lots): one round trip
# for a city's new hour instead of one per lot, with memory still bounded.
LOT_HOURS_PER_QUERY = 1_000
# A multi-lot report holds the figures of at most about this many lot-hours at once.
BATCH_ROWS = 50_000
IN_CHUNK = 500  # ids per IN (...) list
T = TypeVar("T")


@dataclass
class RollupStats:
    """What one rollup run did."""

    lots: int = 0
    hours: int = 0
    seconds: float = 0.0


def bay_count(lot_id: str) -> int:
    """Bays of a lot, including those that never reported."""
    return db.session.scalar(select(func.count()).select_from(Bay).where(Bay.lot_id == lot_id))


def _bay_counts(lot_ids: Sequence[str]) -> dict[str, int]:
    """Bays per lot for many lots (0 for a lot without bays)."""
    counts = dict.fromkeys(lot_ids, 0)
    for chunk in chunks(lot_ids, IN_CHUNK):
        counts.update(
            db.session.execute(
                select(Bay.lot_id, func.count()).where(Bay.lot_id.in_(chunk)).group_by(Bay.lot_id)
            ).all()
        )
    return counts


def lot_readings(lot_id: str, start: float, end: float) -> dict[str, list[StateRun]]:
    """Runs (`parking.history`) per bay of the lot that say something about [start, end)."""
    return readings_of_lots([lot_id], start, end).get(lot_id, {})


def compute_hours(
    lot_id: str, hours: Sequence[float], stale_after: float, now: float, bays: int | None = None
) -> list[HourFigures]:
    """Figures of the given hour starts of one lot, straight from its readings."""
    bays = bay_count(lot_id) if bays is None else bays
    return compute_lots_hours({lot_id: hours}, stale_after, now, {lot_id: bays}).get(lot_id, [])


def compute_lots_hours(
    hours_by_lot: Mapping[str, Sequence[float]], stale_after: float, now: float, bays: Mapping[str, int]
) -> dict[str, list[HourFigures]]:
    """Figures of the given hour starts of many lots, straight from their readings.

    Lots whose hours form the same window (typically: the same new hour of the whole city) share
    one readings query, in groups of at most LOT_HOURS_PER_QUERY lot-hours.
    """
    lots_by_window: dict[tuple[float, ...], list[str]] = defaultdict(list)
    for lot_id, hours in hours_by_lot.items():
        for window in _windows(sorted(hours)):
            lots_by_window[tuple(window)].append(lot_id)
    figures: dict[str, list[HourFigures]] = defaultdict(list)
    for window, lot_ids in lots_by_window.items():
        for group in chunks(lot_ids, max(1, LOT_HOURS_PER_QUERY // len(window))):
            readings = readings_of_lots(group, window[0] - stale_after, window[-1] + HOUR)
            for lot_id in group:
                figures[lot_id].extend(
                    hourly_figures(readings.get(lot_id, {}), bays[lot_id], window, stale_after, now=now)
                )
    for lot_figures in figures.values():  # windows of one lot may have come in any order
        lot_figures.sort(key=lambda f: f.hour_start)
    return dict(figures)


def _windows(hours: Sequence[float]) -> Iterable[list[float]]:
    """Runs of consecutive hours, each at most WINDOW_HOURS long."""
    run: list[float] = []
    for h in hours:
        if run and (h - run[-1] != HOUR or len(run) >= WINDOW_HOURS):
            yield run
            run = []
        run.append(h)
    if run:
        yield run


def run_rollup(now: float | None = None, stale_after: float | None = None) -> RollupStats:
    """Recompute every dirty hour that has ended, in one transaction; returns what it did."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    stale = float(stale_after if stale_after is not None else current_app.config["STALE_AFTER"])
    marks = db.session.execute(
        select(RollupDirty.lot_id, RollupDirty.hour_start, RollupDirty.version)
        .where(RollupDirty.hour_start + HOUR <= now)
        .order_by(RollupDirty.lot_id, RollupDirty.hour_start)
    ).all()
    db.session.commit()  # end the read snapshot; the work below is one transaction of its own
    hours_by_lot: dict[str, list[float]] = defaultdict(list)
    for lot_id, hour, _version in marks:
        hours_by_lot[lot_id].append(float(hour))
    stats = RollupStats(lots=len(hours_by_lot))
    try:
        # One commit for the run: a commit per lot cost more than the arithmetic.
        for batch in _batches(hours_by_lot, lambda lot_id: len(hours_by_lot[lot_id])):
            figures = compute_lots_hours(
                {l: hours_by_lot[l] for l in batch}, stale, now, _bay_counts(batch)
            )
            stats.hours += _store_figures(figures, now)
        _clear_marks(marks)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    stats.seconds = time.perf_counter() - started
    return stats


def _batches(items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive items in groups whose sizes add up to about BATCH_ROWS (an item is never split)."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and total + n > BATCH_ROWS:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


def _store_figures(figures: Mapping[str, Sequence[HourFigures]], now: float) -> int:
    """Upsert the aggregates (the caller commits); returns the number of rows."""
    rows = [
        {
            "lot_id": lot_id,
            "hour_start": int(f.hour_start),
            "bays": f.bays,
            "occupied_seconds": f.occupied_seconds,
            "known_seconds": f.known_seconds,
            "peak_occupied": f.peak_occupied,
            "arrivals": f.arrivals,
            "computed_at": now,
        }
        for lot_id, lot_figures in figures.items()
        for f in lot_figures
    ]
    if not rows:
        return 0
    table = HourlyUtilization.__table__
    stmt = upsert_insert(db.session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["lot_id", "hour_start"],
        set_={c: stmt.excluded[c] for c in rows[0] if c not in ("lot_id", "hour_start")},
    )
    for chunk in chunks(rows, 1000):
        db.session.execute(stmt, chunk)
    return len(rows)


def _clear_marks(marks: Sequence[tuple[str, int, int]]) -> None:
    """Delete the marks this run read, unless ingest re-set one meanwhile (its version moved on)."""
    if not marks:
        return
    table = RollupDirty.__table__
    stmt = delete(table).where(
        table.c.lot_id == bindparam("l"), table.c.hour_start == bindparam("h"), table.c.version == bindparam("v")
    )
    db.session.execute(stmt, [{"l": l, "h": h, "v": v} for l, h, v in marks])


def mark_all() -> int:
    """Mark every hour of every lot that has readings (after a change of stale_after)."""
    stale = float(current_app.config["STALE_AFTER"])
    spans = [
        db.session.execute(
            select(Bay.lot_id, Lot.timezone, func.min(first), func.max(last))
            .join(Bay, Bay.id == bay_id)
            .join(Lot, Lot.id == Bay.lot_id)
            .group_by(Bay.lot_id, Lot.timezone)
        ).all()
        for bay_id, first, last in ((StoredReading.bay_id, StoredReading.ts, StoredReading.ts),
                                    (BayRun.bay_id, BayRun.ts, BayRun.last_ts))
    ]
    marks = {  # a set: a lot with raw and compacted history would otherwise mark hours twice
        (lot_id, int(h))
        for lot_id, tz, first, last in chain(*spans)
        for h in reach_hours(first, last, stale, tz)
    }
    rows = [{"lot_id": lot_id, "hour_start": h, "version": 1} for lot_id, h in sorted(marks)]
    table = RollupDirty.__table__
    stmt = upsert_insert(db.session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["lot_id", "hour_start"], set_={"version": table.c.version + 1}
    )
    for start in range(0, len(rows), 1000):
        db.session.execute(stmt, rows[start : start + 1000])
    db.session.commit()
    return len(rows)


def utilization(lot: Lot, start: float, end: float, now: float | None = None) -> list[HourFigures]:
    """Hourly figures of a lot for the local hours in [start, end), never staler than the readings."""
    return next(utilization_of_lots([lot], lambda _: start, lambda _: end, now))[1]


def utilization_of_lots(
    lots: Iterable[Lot],
    start_for: Callable[[Lot], float],
    end_for: Callable[[Lot], float],
    now: float | None = None,
) -> Iterator[tuple[Lot, list[HourFigures]]]:
    """(lot, hourly figures for its local hours in [start_for(lot), end_for(lot))) per lot, in
    order; a few queries per batch of lots instead of several per lot."""
    for lot, rows in hourly_rows_of_lots(lots, start_for, end_for, now):
        yield lot, [HourFigures(*row) for row in rows]


def hourly_rows_of_lots(
    lots: Iterable[Lot],
    start_for: Callable[[Lot], float],
    end_for: Callable[[Lot], float],
    now: float | None = None,
) -> Iterator[tuple[Lot, list[tuple]]]:
    """As `utilization_of_lots`, each hour as the plain tuple of HourFigures' fields
    (`HourFigures.as_tuple`): a report of 720,000 lot-hours cannot afford an object per hour."""
    now = time.time() if now is None else now
    stale = float(current_app.config["STALE_AFTER"])
    for batch in _batches(_calendars(lots, start_for, end_for), lambda lot_hours: len(lot_hours[1])):
        yield from _hourly_rows_batch(batch, stale, now)


def _calendars(lots: Iterable[Lot], start_for, end_for) -> Iterator[tuple[Lot, list[float]]]:
    """(lot, its local hour starts in range) per lot; the lots of a city share one list."""
    calendars: dict[tuple, list[float]] = {}
    for lot in lots:
        key = (lot.timezone, start_for(lot), end_for(lot))
        hours = calendars.get(key)
        if hours is None:
            if len(calendars) >= 16:  # lots in many zones or ranges: keep memory bounded
                calendars.clear()
            hours = calendars[key] = hour_starts(*key)
        yield lot, hours


def _hourly_rows_batch(
    batch: Sequence[tuple[Lot, list[float]]], stale: float, now: float
) -> Iterator[tuple[Lot, list[tuple]]]:
    """Rows for a batch of (lot, hour starts): stored, fresh or empty per hour."""
    spans = [(lot.id, int(hours[0]), int(hours[-1])) for lot, hours in batch if hours]
    lot_ids = [lot_id for lot_id, _, _ in spans]
    dirty: dict[str, set[int]] = defaultdict(set)
    stored: dict[str, dict[int, tuple]] = {}
    if spans:
        lo, hi = min(s[1] for s in spans), max(s[2] for s in spans)
        # Core, not ORM: rows straight from the driver (the ORM's loading cost more than the rest).
        connection = db.session.connection()
        for chunk in chunks(lot_ids, IN_CHUNK):
            # Marks first: a mark missing now was cleared by a rollup that had already committed
            # its aggregate (same transaction), so the stored row read next is the current one.
            for lot_id, hour in connection.execute(
                select(RollupDirty.lot_id, RollupDirty.hour_start).where(
                    RollupDirty.lot_id.in_(chunk), RollupDirty.hour_start.between(lo, hi)
                )
            ):
                dirty[lot_id].add(hour)
            rows = driver_tuples(
                db.session,
                select(HourlyUtilization.lot_id, *_STORED_COLUMNS)
                .where(HourlyUtilization.lot_id.in_(chunk), HourlyUtilization.hour_start.between(lo, hi))
                .order_by(HourlyUtilization.lot_id, HourlyUtilization.hour_start),
            )
            for lot_id, lot_rows in groupby(rows, key=itemgetter(0)):
                stored[lot_id] = {row[1]: row[1:] for row in lot_rows}
            del rows
    bays = _bay_counts(lot_ids)
    fresh_hours = {}
    for lot, hours in batch:
        # Dirty hours, and the hours not over yet (a tail: hours are ascending).
        unfinished = bisect_right(hours, now - HOUR)
        marked = dirty.get(lot.id, ())
        chosen = [h for h in hours[:unfinished] if h in marked] if marked else []
        chosen += hours[unfinished:]
        if chosen:
            fresh_hours[lot.id] = chosen
    fresh = compute_lots_hours(fresh_hours, stale, now, bays)
    for lot, hours in batch:
        lot_bays = bays.get(lot.id, 0)
        stored_row = stored.get(lot.id, {}).get
        fresh_row = {f.hour_start: f.as_tuple() for f in fresh.get(lot.id, ())}.get
        # Hour starts are whole numbers, so the float h finds the int key of the stored row.
        rows = [
            fresh_row(h) or stored_row(h) or (h, lot_bays, 0.0, 0.0, HOUR, 0, 0)  # empty: nothing known
            for h in hours
        ]
        yield lot, rows


# A stored aggregate read as the tuple of HourFigures' fields (a stored hour is a whole one).
_STORED_COLUMNS = (
    HourlyUtilization.hour_start,
    HourlyUtilization.bays,
    HourlyUtilization.occupied_seconds,
    HourlyUtilization.known_seconds,
    literal(float(HOUR), Float).label("span_seconds"),
    HourlyUtilization.peak_occupied,
    HourlyUtilization.arrivals,
)
