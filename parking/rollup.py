"""Hourly aggregates: kept current incrementally, and read back with on-the-fly gaps filled.

`run_rollup` recomputes exactly the hours that `parking.ingest` marked dirty and that have ended;
its cost grows with the new readings, not with the history. `utilization` answers a report:
stored rows where they are current, a fresh computation for dirty or unfinished hours, and an
empty row for an hour no reading could touch. So a report reflects every reading stored before
it was requested, whether or not the scheduler has run.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import and_, delete, func, or_, select

from .extensions import db
from .dbutil import upsert_insert
from .models import Bay, HourlyUtilization, Lot, RollupDirty
from .models import Reading as ReadingRow
from .occupancy import HOUR, HourFigures, floor_local_hour, hour_starts, hourly_figures

# On-the-fly and rollup work is done in windows of this many hours, to bound memory.
WINDOW_HOURS = 168


@dataclass
class RollupStats:
    """What one rollup run did."""

    lots: int = 0
    hours: int = 0
    seconds: float = 0.0


def bay_count(lot_id: str) -> int:
    """Bays of a lot, including those that never reported."""
    return db.session.scalar(select(func.count()).select_from(Bay).where(Bay.lot_id == lot_id))


def lot_readings(lot_id: str, start: float, end: float) -> dict[str, list[tuple[float, bool]]]:
    """(ts, occupied) per bay of the lot in [start, end), in storage order (ts, then id)."""
    by_bay: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    rows = db.session.execute(
        select(ReadingRow.bay_id, ReadingRow.ts, ReadingRow.occupied)
        .join(Bay, Bay.id == ReadingRow.bay_id)
        .where(Bay.lot_id == lot_id, ReadingRow.ts >= start, ReadingRow.ts < end)
        .order_by(ReadingRow.bay_id, ReadingRow.ts, ReadingRow.id)
    )
    for bay_id, ts, occupied in rows:
        by_bay[bay_id].append((ts, bool(occupied)))
    return by_bay


def compute_hours(
    lot_id: str, hours: Sequence[float], stale_after: float, now: float, bays: int | None = None
) -> list[HourFigures]:
    """Figures of the given hour starts of one lot, straight from its readings."""
    if not hours:
        return []
    bays = bay_count(lot_id) if bays is None else bays
    figures: list[HourFigures] = []
    for window in _windows(sorted(hours)):
        readings = lot_readings(lot_id, window[0] - stale_after, window[-1] + HOUR)
        figures.extend(hourly_figures(readings, bays, window, stale_after, now=now))
    return figures


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
    """Recompute every dirty hour that has ended, lot by lot; returns what it did."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    stale = float(stale_after if stale_after is not None else current_app.config["STALE_AFTER"])
    marks = db.session.execute(
        select(RollupDirty.lot_id, RollupDirty.hour_start, RollupDirty.version)
        .where(RollupDirty.hour_start + HOUR <= now)
        .order_by(RollupDirty.lot_id, RollupDirty.hour_start)
    ).all()
    db.session.commit()  # end the read snapshot; each lot gets its own transaction below
    by_lot: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for lot_id, hour, version in marks:
        by_lot[lot_id].append((hour, version))
    stats = RollupStats(lots=len(by_lot))
    bays = _bay_counts(list(by_lot))
    try:
        for lot_id, hours in by_lot.items():
            stats.hours += _rollup_lot(lot_id, hours, stale, now, bays.get(lot_id, 0))
        # One commit for the run: a commit per lot cost more than the arithmetic.
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    stats.seconds = time.perf_counter() - started
    return stats


def _bay_counts(lot_ids: list[str]) -> dict[str, int]:
    """Bays per lot for many lots in one query."""
    counts: dict[str, int] = {}
    for start in range(0, len(lot_ids), 500):
        chunk = lot_ids[start : start + 500]
        counts.update(
            db.session.execute(
                select(Bay.lot_id, func.count()).where(Bay.lot_id.in_(chunk)).group_by(Bay.lot_id)
            ).all()
        )
    return counts


def _rollup_lot(lot_id: str, marks: list[tuple[int, int]], stale: float, now: float, bays: int) -> int:
    """Recompute and store one lot's marked hours and clear the marks nobody re-set meanwhile
    (the caller commits)."""
    figures = compute_hours(lot_id, [h for h, _ in marks], stale, now, bays)
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
        for f in figures
    ]
    table = HourlyUtilization.__table__
    stmt = upsert_insert(db.session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["lot_id", "hour_start"],
        set_={c: stmt.excluded[c] for c in rows[0] if c not in ("lot_id", "hour_start")},
    )
    for start in range(0, len(rows), 1000):
        db.session.execute(stmt, rows[start : start + 1000])
    for start in range(0, len(marks), 500):
        chunk = marks[start : start + 500]
        db.session.execute(
            delete(RollupDirty).where(
                RollupDirty.lot_id == lot_id,
                or_(*(and_(RollupDirty.hour_start == h, RollupDirty.version == v) for h, v in chunk)),
            )
        )
    return len(rows)


def mark_all() -> int:
    """Mark every hour of every lot that has readings (after a change of stale_after)."""
    stale = float(current_app.config["STALE_AFTER"])
    spans = db.session.execute(
        select(Bay.lot_id, Lot.timezone, func.min(ReadingRow.ts), func.max(ReadingRow.ts))
        .join(Bay, Bay.id == ReadingRow.bay_id)
        .join(Lot, Lot.id == Bay.lot_id)
        .group_by(Bay.lot_id, Lot.timezone)
    ).all()
    rows = []
    for lot_id, tz, first, last in spans:
        h = floor_local_hour(first, tz)
        while h <= last + stale:
            rows.append({"lot_id": lot_id, "hour_start": int(h), "version": 1})
            h += HOUR
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
    now = time.time() if now is None else now
    stale = float(current_app.config["STALE_AFTER"])
    hours = hour_starts(lot.timezone, start, end)
    if not hours:
        return []
    bays = bay_count(lot.id)
    results: list[HourFigures] = []
    for window in _windows(hours):
        lo, hi = int(window[0]), int(window[-1])
        # Marks first: a mark missing now was cleared by a rollup that had already committed
        # its aggregate (same transaction), so the stored row read next is the current one.
        dirty = set(
            db.session.scalars(
                select(RollupDirty.hour_start).where(
                    RollupDirty.lot_id == lot.id, RollupDirty.hour_start.between(lo, hi)
                )
            )
        )
        stored = {
            row[0]: row
            for row in db.session.execute(
                select(*_STORED_COLUMNS).where(
                    HourlyUtilization.lot_id == lot.id,
                    HourlyUtilization.hour_start.between(lo, hi),
                )
            )
        }
        fresh_hours = [h for h in window if int(h) in dirty or h + HOUR > now]
        fresh = {int(f.hour_start): f for f in compute_hours(lot.id, fresh_hours, stale, now, bays)}
        for h in window:
            key = int(h)
            if key in fresh:
                results.append(fresh[key])
            elif key in stored:
                results.append(_from_row(stored[key]))
            else:  # no reading could touch this hour: nothing known
                results.append(HourFigures(h, bays, 0.0, 0.0, HOUR, 0, 0))
    return results


# Read as plain tuples: ORM entities cost more per row than everything else a report does.
_STORED_COLUMNS = (
    HourlyUtilization.hour_start,
    HourlyUtilization.bays,
    HourlyUtilization.occupied_seconds,
    HourlyUtilization.known_seconds,
    HourlyUtilization.peak_occupied,
    HourlyUtilization.arrivals,
)


def _from_row(row) -> HourFigures:
    """A stored aggregate (a row of _STORED_COLUMNS) as HourFigures."""
    hour_start, bays, occupied, known, peak, arrivals = row
    return HourFigures(float(hour_start), bays, occupied, known, HOUR, peak, arrivals)
