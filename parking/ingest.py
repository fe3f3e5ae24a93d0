"""The one write path for sensor readings.

Everything that stores a reading (the CoAP gateway's writer, the simulator's backfill, tests)
goes through here: validation, de-duplication, insertion in `ts` order semantics, the bay's
current state, and the dirty marks that tell the rollup which hours to recompute. Callers own
the transaction: `store` never commits, `ingest` and `ingest_bulk` do.
"""
from __future__ import annotations

import math
from contextlib import closing
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from .compaction import absorb_late
from .dbutil import Statements, chunks, fetch_together, one_of
from .history import newest_first
from .extensions import db
from .models import Bay, Lot, RollupDirty
from .models import StoredReading
from .occupancy import continues_run, hours_reached, run_start

# A sensor clock may run a little fast; more than this is a broken clock, and accepting it would
# freeze the bay's state until real time catches up.
FUTURE_TOLERANCE = 300.0
# Same bay and seq within this many seconds is a retransmission. seq wraps at 2**32 and restarts
# at 0 when a sensor reboots, so a seq seen long ago is a new reading, not a duplicate.
SEQ_DUPLICATE_WINDOW = 3600.0
SEQ_MAX = 2**32 - 1
BULK_CHUNK = 20_000
# A batch spanning at most this many seconds is checked for duplicates with one time window.
NARROW_BATCH = 6 * 3600.0
# Up to this many readings (the gateway's groups) the duplicate look-up names their ts and seq values.
SMALL_BATCH = 500
_OR_CHUNK = 200


@dataclass(frozen=True, slots=True)
class SensorReading:
    """One occupancy reading as a sensor reported it; ts None means 'at receipt'."""

    bay: str
    occupied: bool
    ts: float | None = None
    seq: int | None = None
    battery: int | None = None


class IngestError(Exception):
    """A request that cannot be stored; nothing of it was written."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidReading(IngestError):
    """A reading is malformed or implausible (e.g. from the future)."""


class UnknownBay(IngestError):
    """A reading names a bay that is not provisioned."""

    def __init__(self, bays: Sequence[str]):
        self.bays = sorted(set(bays))
        shown = ", ".join(self.bays[:5]) + (" …" if len(self.bays) > 5 else "")
        super().__init__(f"unknown bay: {shown}")


@dataclass
class StoreResult:
    """What a `store` call did."""

    received: int = 0
    stored: int = 0
    lots: set[str] = field(default_factory=set)

    @property
    def duplicates(self) -> int:
        """Readings that were already stored (retransmissions, replays)."""
        return self.received - self.stored


class BayDirectory:
    """Bay id → (lot id, lot time zone), cached; unknown ids are looked up again on a miss."""

    def __init__(self) -> None:
        self._bays: dict[str, tuple[str, str]] = {}

    def lookup(self, session: Session, bay_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The known bays among `bay_ids`; refreshes the cache for ids it has not seen."""
        missing = {b for b in bay_ids if b not in self._bays}
        for chunk in chunks(sorted(missing), 500):
            rows = session.execute(
                select(Bay.id, Bay.lot_id, Lot.timezone)
                .join(Lot, Lot.id == Bay.lot_id)
                .where(Bay.id.in_(chunk))
            )
            for bay_id, lot_id, tz in rows:
                self._bays[bay_id] = (lot_id, tz)
        return {b: self._bays[b] for b in bay_ids if b in self._bays}

    def forget(self) -> None:
        """Drop the cache (after lots are re-imported)."""
        self._bays.clear()


_directory = BayDirectory()


def prepare(
    session: Session,
    readings: Sequence[SensorReading],
    now: float | None = None,
    directory: BayDirectory | None = None,
    backlog_days: float | None = None,
) -> list[SensorReading]:
    """Validate one request's readings and fill in missing ts; raises IngestError for all-or-nothing.

    `backlog_days` (a sensor's request: PARKING_MAX_BACKLOG_DAYS) refuses a ts older than that;
    None (history an operator loads, such as the simulator's backfill) takes any past ts.
    """
    if not readings:
        raise InvalidReading("empty batch: send at least one reading")
    now = time.time() if now is None else now
    oldest = None if backlog_days is None else now - backlog_days * 86400.0
    prepared = []
    for index, r in enumerate(readings):
        ts = now if r.ts is None else float(r.ts)
        problem = _problem(r, ts, now, oldest)
        if problem:
            where = f"reading {index} (bay {r.bay})" if len(readings) > 1 else f"bay {r.bay}"
            raise InvalidReading(f"{where}: {problem}")
        prepared.append(r if r.ts is not None and type(r.ts) is float else SensorReading(r.bay, r.occupied, ts, r.seq, r.battery))
    known = (directory or _directory).lookup(session, {r.bay for r in prepared})
    unknown = [r.bay for r in prepared if r.bay not in known]
    if unknown:
        raise UnknownBay(unknown)
    return prepared


def _problem(r: SensorReading, ts: float, now: float, oldest: float | None = None) -> str | None:
    """What is wrong with one reading, or None; `oldest`: the earliest ts taken (None: any)."""
    if not math.isfinite(ts) or ts < 0:
        return "ts must be a finite non-negative Unix time"
    if ts > now + FUTURE_TOLERANCE:
        return f"ts {ts:.0f} is {ts - now:.0f} s in the future (limit {FUTURE_TOLERANCE:.0f} s)"
    if oldest is not None and ts < oldest:
        return (f"ts {ts:.0f} is {(now - ts) / 86400:.1f} days old "
                f"(limit {(now - oldest) / 86400:g} days, PARKING_MAX_BACKLOG_DAYS)")
    if r.seq is not None and not 0 <= r.seq <= SEQ_MAX:
        return f"seq must be 0..{SEQ_MAX}"
    if r.battery is not None and not 0 <= r.battery <= 100:
        return "battery must be 0..100"
    if type(r.occupied) is not bool:
        return "occupied must be true or false"
    return None


def store(
    session: Session,
    readings: Sequence[SensorReading],
    received_at: float | None = None,
    stale_after: float | None = None,
    directory: BayDirectory | None = None,
    writes: Statements | None = None,
) -> StoreResult:
    """Store prepared readings (ts filled in, bays known) without committing.

    `received_at` None means each reading was received at its own ts (simulated history).
    `writes` given (the gateway's writer): the inserts and updates are added to it and may be
    left for the caller to send (`writes.run(commit=True)`: with the COMMIT, one round trip).
    """
    result = StoreResult(received=len(readings))
    if not readings:
        return result
    stale = float(stale_after if stale_after is not None else current_app.config["STALE_AFTER"])
    bays = (directory or _directory).lookup(session, {r.bay for r in readings})
    near, current = _look_up(session, readings)
    fresh = _drop_duplicates(readings, near)
    if fresh:
        # A reading older than anything compaction leaves raw meets compacted history first.
        fresh = absorb_late(session, fresh, time.time())
    if not fresh:
        return result
    rows = [
        (r.bay, r.ts, r.occupied, r.seq, r.ts if received_at is None else received_at)
        for r in fresh
    ]
    own = writes is None
    writes = Statements(session) if own else writes  # sent together: one round trip on PostgreSQL
    _insert_readings(writes, rows)
    inserted = fresh
    result.stored = len(inserted)
    # Battery and last_seen describe the newest message even when its reading is a duplicate.
    late = _update_bays(writes, readings, inserted, received_at, stale, current)
    marks = _dirty_hours(inserted, bays, stale)
    _mark_dirty(writes, marks)
    if own or late:
        writes.run()
    _restart_runs(session, late, stale)  # after the insert: a run's start is read from the history
    result.lots = {lot for lot, _ in marks}
    return result


_AT_RECEIPT = object()


def ingest(
    readings: Sequence[SensorReading], now: float | None = None, received_at=_AT_RECEIPT
) -> StoreResult:
    """Validate, store and commit one batch; all of it or nothing (inside an app context).

    Readings count as received `now` unless `received_at` says otherwise (None: each at its own
    ts, as for simulated history).
    """
    session = db.session
    now = time.time() if now is None else now
    try:
        prepared = prepare(session, readings, now)
        result = store(session, prepared, received_at=now if received_at is _AT_RECEIPT else received_at)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return result


def ingest_bulk(
    readings: Iterable[SensorReading], received_at: float | None = None, chunk: int = BULK_CHUNK
) -> int:
    """Store many readings (e.g. simulated history) in committed chunks; returns how many were new.

    Each chunk is validated as a whole; readings should come roughly in ts order so that each
    chunk's duplicate look-up covers a short time window.
    """
    stored = 0
    batch: list[SensorReading] = []
    for reading in readings:
        batch.append(reading)
        if len(batch) >= chunk:
            stored += ingest(batch, received_at=received_at).stored
            batch = []
    if batch:
        stored += ingest(batch, received_at=received_at).stored
    return stored


def forget_bays() -> None:
    """Forget cached bay→lot mappings (call after an import changes them)."""
    _directory.forget()


def _look_up(session: Session, readings: Sequence[SensorReading]) -> tuple[list[tuple], dict[str, tuple]]:
    """What storing the readings must know first: the stored (bay, ts, occupied, seq) that could
    duplicate one of them (`_stored_near`) and the current (id, state, last_ts, state_since,
    last_seen, battery) of their bays, by id.

    A gateway group on PostgreSQL asks both in one round trip (the transaction's BEGIN with them);
    the SQL is PostgreSQL's own there (arrays), the same rows as the portable queries return.
    """
    bay_ids = sorted({r.bay for r in readings})
    lo, hi = min(r.ts for r in readings), max(r.ts for r in readings)
    if session.get_bind().dialect.name == "postgresql" and hi - lo <= NARROW_BATCH and len(readings) <= SMALL_BATCH:
        # Each reading looks for its own duplicates (its bay, its ts or its seq within the
        # window) instead of every stored row of the group's bays being compared with all the
        # group's ts and seq values: that filter grew with the square of the group (a 192-request
        # group cost the server 3.5 times a 64-request one per request).
        near, bays = fetch_together(session, [
            ("SELECT r.bay_id, r.ts, r.occupied, r.seq FROM unnest(%s::varchar[], %s::float8[], %s::bigint[]) "
             "AS n(bay, ts, seq) JOIN readings r ON r.bay_id = n.bay AND r.ts BETWEEN n.ts - %s AND n.ts + %s "
             "AND (r.ts = n.ts OR r.seq = n.seq)",
             ([r.bay for r in readings], [r.ts for r in readings], [r.seq for r in readings],
              SEQ_DUPLICATE_WINDOW, SEQ_DUPLICATE_WINDOW)),
            ("SELECT id, state, last_ts, state_since, last_seen, battery FROM bays WHERE id = ANY(%s::varchar[])",
             (bay_ids,)),
        ])
        return near, {row[0]: row for row in bays}
    current = {
        row[0]: tuple(row)
        for chunk in chunks(bay_ids, 500)
        for row in session.execute(
            select(Bay.id, Bay.state, Bay.last_ts, Bay.state_since, Bay.last_seen, Bay.battery).where(
                one_of(session, Bay.id, chunk)
            )
        )
    }
    return list(_stored_near(session, readings)), current


def _drop_duplicates(readings: Sequence[SensorReading], near: Iterable[tuple]) -> list[SensorReading]:
    """Readings not already stored (`near`: the stored rows that could match) and not repeated
    within the batch (seq or ts+state)."""
    seen_state: set[tuple[str, float, bool]] = set()
    seen_seq: dict[tuple[str, int], list[float]] = {}
    for bay, ts, occupied, seq in near:
        seen_state.add((bay, ts, occupied))
        if seq is not None:
            seen_seq.setdefault((bay, seq), []).append(ts)
    fresh = []
    for r in readings:
        if (r.bay, r.ts, r.occupied) in seen_state:
            continue
        if r.seq is not None:
            key = (r.bay, r.seq)
            earlier = seen_seq.get(key)
            if earlier is None:
                seen_seq[key] = [r.ts]
            elif any(abs(r.ts - t) <= SEQ_DUPLICATE_WINDOW for t in earlier):
                continue
            else:
                earlier.append(r.ts)
        seen_state.add((r.bay, r.ts, r.occupied))
        fresh.append(r)
    return fresh


def _stored_near(session: Session, readings: Sequence[SensorReading]):
    """Stored (bay, ts, occupied, seq) that could duplicate one of the readings.

    A batch spanning a few hours (the gateway's groups, a bulk chunk) is looked up with one
    time window for all its bays; a batch mixing a late reading with fresh ones gets one window
    per bay, so a day-old reading does not pull in a day of every other bay's history.
    """
    lo = min(r.ts for r in readings)
    hi = max(r.ts for r in readings)
    columns = (StoredReading.bay_id, StoredReading.ts, StoredReading.occupied, StoredReading.seq)
    if hi - lo <= NARROW_BATCH:
        bays = sorted({r.bay for r in readings})
        near = StoredReading.ts.between(lo - SEQ_DUPLICATE_WINDOW, hi + SEQ_DUPLICATE_WINDOW)
        if len(readings) <= SMALL_BATCH:
            # Only rows that can match: the same ts (a ts+state duplicate) or one of the batch's
            # seqs (a seq duplicate). The whole window would return every reading of these bays
            # within an hour: thousands of rows for busy sensors, for each group of the gateway.
            ts_values = sorted({r.ts for r in readings})
            seqs = sorted({r.seq for r in readings if r.seq is not None})
            match = one_of(session, StoredReading.ts, ts_values)
            near = near & (or_(match, one_of(session, StoredReading.seq, seqs)) if seqs else match)
        for chunk in chunks(bays, 500):
            yield from session.execute(select(*columns).where(one_of(session, StoredReading.bay_id, chunk), near))
        return
    windows: dict[str, list[float]] = {}
    for r in readings:
        lo_hi = windows.setdefault(r.bay, [r.ts, r.ts])
        lo_hi[0] = min(lo_hi[0], r.ts)
        lo_hi[1] = max(lo_hi[1], r.ts)
    for chunk in chunks(sorted(windows.items()), _OR_CHUNK):
        condition = or_(
            *(
                and_(
                    StoredReading.bay_id == bay,
                    StoredReading.ts.between(lo - SEQ_DUPLICATE_WINDOW, hi + SEQ_DUPLICATE_WINDOW),
                )
                for bay, (lo, hi) in chunk
            )
        )
        yield from session.execute(select(*columns).where(condition))


def _insert_readings(writes: Statements, rows: list[tuple]) -> None:
    """Insert (bay_id, ts, occupied, seq, received_at) rows: one statement on PostgreSQL, one
    executemany on SQLite (`dbutil.Statements`).

    ON CONFLICT DO NOTHING covers a concurrent writer that stored a row first; it carries the
    same data, so treating it as ours changes nothing.
    """
    writes.insert_rows(StoredReading.__table__, ("bay_id", "ts", "occupied", "seq", "received_at"), rows,
                       "ON CONFLICT (bay_id, ts, occupied) DO NOTHING")


def _update_bays(
    writes: Statements,
    readings: Sequence[SensorReading],
    inserted: Sequence[SensorReading],
    received_at: float | None,
    stale: float,
    current: dict[str, tuple],
) -> set[str]:
    """Bring each touched bay's current state (newest reading by ts) up to date from its
    `current` row; returns the bays whose run start a late reading may have moved."""
    bay_ids = sorted({r.bay for r in readings})
    new_by_bay: dict[str, list[SensorReading]] = defaultdict(list)
    for r in inserted:
        new_by_bay[r.bay].append(r)
    newest_msg: dict[str, SensorReading] = {}
    seen: dict[str, float] = {}
    for r in readings:  # battery of the newest message by ts, duplicates included
        t = r.ts if received_at is None else received_at
        seen[r.bay] = max(seen.get(r.bay, t), t)
        if r.battery is not None and (r.bay not in newest_msg or r.ts >= newest_msg[r.bay].ts):
            newest_msg[r.bay] = r

    updates = []
    needs_since: list[str] = []
    for bay_id in bay_ids:
        _, state, last_ts, since, row_last_seen, row_battery = current[bay_id]
        row_last_ts = last_ts
        for r in sorted(new_by_bay.get(bay_id, ()), key=lambda x: x.ts):
            if last_ts is None or r.ts >= last_ts:
                if not continues_run(state, last_ts, r.occupied, r.ts, stale):
                    since = r.ts
                state, last_ts = r.occupied, r.ts
            elif since is None or r.ts >= since - stale:
                # A late reading inside the current run can split or extend it.
                needs_since.append(bay_id)
        last_seen = max(seen[bay_id], row_last_seen or seen[bay_id])
        battery = row_battery
        msg = newest_msg.get(bay_id)
        if msg is not None and (row_last_ts is None or msg.ts >= row_last_ts):
            battery = msg.battery
        updates.append((bay_id, state, last_ts, since, last_seen, battery))
    # One statement (PostgreSQL) or one executemany (SQLite), not the ORM's bulk update by
    # primary key: that was one UPDATE per bay and most of the writer's Python time per group.
    writes.update_rows(Bay.__table__, "id", ("state", "last_ts", "state_since", "last_seen", "battery"), updates)
    return set(needs_since)


def _restart_runs(session: Session, bay_ids: set[str], stale: float) -> None:
    """Set state_since of bays whose current run a late reading split or extended, from history."""
    for bay_id in sorted(bay_ids):
        session.execute(
            update(Bay).where(Bay.id == bay_id).values(state_since=_run_start(session, bay_id, stale))
        )


def _run_start(session: Session, bay_id: str, stale: float) -> float | None:
    """Start of the bay's current run (`occupancy.run_start`) from its stored history."""
    with closing(newest_first(session, bay_id)) as history:
        return run_start(history, stale)


def _dirty_hours(
    inserted: Sequence[SensorReading], bays: dict[str, tuple[str, str]], stale: float
) -> set[tuple[str, int]]:
    """(lot, local hour start) of every hour a reading can change (`occupancy.hours_reached`)."""
    by_lot: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in inserted:
        by_lot[bays[r.bay]].append(r.ts)
    return {
        (lot_id, int(h))
        for (lot_id, tz), stamps in by_lot.items()
        for h in hours_reached(stamps, stale, tz)
    }


def _mark_dirty(writes: Statements, marks: set[tuple[str, int]]) -> None:
    """Upsert dirty marks, bumping the version of any already there (in key order: no deadlocks)."""
    writes.insert_rows(RollupDirty.__table__, ("lot_id", "hour_start", "version"),
                       [(lot, hour, 1) for lot, hour in sorted(marks)],
                       "ON CONFLICT (lot_id, hour_start) DO UPDATE SET version = rollup_dirty.version + 1")
