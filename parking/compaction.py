"""Compaction: folding raw readings that have settled into runs (`bay_runs`), exact for §5.

Raw readings stay raw for `PARKING_RAW_RETENTION_DAYS` (the settle window, at least as long as
a sensor may be late: `PARKING_MAX_BACKLOG_DAYS`), so a late reading lands among raw ones and
every figure comes out as if it had been on time. Older readings are folded by
`occupancy.fold` into runs of one state (first and last instant, how many readings), which give
every figure of contract §4-§5 exactly as the readings did, and the raw rows are removed: on
PostgreSQL by dropping a whole day's partition (parking.partitions), otherwise by deleting them.
`compact(everything=True)` (`flask compact --all`) folds all but the last two hours.

A reading that arrives later than the settle window (history an operator loads) lands in
compacted history (`absorb_late`, called by parking.ingest): it is stored raw, and if it falls
inside a run it either repeats the run's state (it adds nothing and counts as a duplicate) or
contradicts it, and then the run ends at the reading (see `occupancy.fold`).

Compaction and late readings serialize on one lock, so a late reading is never folded past.
"""
from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from .partitions import drop_partition, is_partitioned, lock_partition, raw_partitions_before
from .dbutil import chunks
from .extensions import db
from .history import MAX_RUN_SECONDS
from .models import Bay, BayRun, StoredReading
from .occupancy import fold

log = logging.getLogger(__name__)

# Readings stamped within this long before now are never folded, even by `--all`: the duplicate
# rule by seq (parking.ingest, one hour either side of a reading's ts) still needs them raw.
COMPACT_HORIZON = 2 * 3600.0
BAYS_PER_STEP = 100  # bays folded per transaction, a day of theirs at a time: short write locks, bounded memory
SLICE_SECONDS = 86400.0
SQLITE_RETRIES = 3  # a step that met a concurrent write (SQLite's stale snapshot) is tried again
LOCK_KEY = 0x70617263  # PostgreSQL advisory lock: compaction (exclusive) against late readings (shared)


@dataclass
class CompactResult:
    """What one compaction did."""

    cutoff: float
    readings: int = 0  # raw readings folded and removed
    runs_removed: int = 0  # runs refolded (extended or split by what was folded into them)
    runs_written: int = 0
    bay_ids: set[str] = field(default_factory=set, repr=False)  # bays that had readings to fold
    partitions_dropped: int = 0  # PostgreSQL: whole days of raw readings folded and dropped
    seconds: float = 0.0
    stopped: bool = False  # ended early because the process is stopping

    @property
    def bays(self) -> int:
        """How many bays had readings folded."""
        return len(self.bay_ids)


def settle_cutoff(now: float, everything: bool = False) -> float:
    """Readings stamped before this instant are folded: the settle window before now, or for
    `everything` all but the last COMPACT_HORIZON."""
    if everything:
        return now - COMPACT_HORIZON
    days = float(current_app.config["RAW_RETENTION_DAYS"])
    return now - max(days * 86400.0, COMPACT_HORIZON)


def compact(now: float | None = None, everything: bool = False, stop: threading.Event | None = None,
            progress: Callable[[float, CompactResult], None] | None = None) -> CompactResult:
    """Fold every raw reading stamped before the cutoff into runs, bay by bay (inside an app context).

    `stop` set (the process is shutting down) ends it after the transaction under way: what was
    committed is folded, the rest waits for the next run (result.stopped). `progress(edge, result)`
    is called after each day (or partition) folded, `edge` the instant folded up to."""
    stop = stop or threading.Event()
    started = time.monotonic()
    now = time.time() if now is None else now
    result = CompactResult(cutoff=settle_cutoff(now, everything))
    stale = float(current_app.config["STALE_AFTER"])
    bay_ids = db.session.scalars(select(Bay.id).order_by(Bay.id)).all()
    partitioned = is_partitioned(db.session)
    db.session.commit()
    if partitioned:
        for name, lo, hi in raw_partitions_before(db.session, result.cutoff):
            if stop.is_set():
                break
            if not _fold_partition(name, lo, hi, bay_ids, stale, result):
                break  # the day's locks were not to be had: the next run goes on from here
            if progress is not None:
                progress(hi, result)
    oldest = db.session.scalar(select(func.min(StoredReading.ts)).where(StoredReading.ts < result.cutoff))
    db.session.commit()
    if oldest is not None:
        # A day at a time, oldest first (folding in parts gives the same runs): a first compaction
        # of months of history is many short transactions, not one that holds the writers off.
        edges = [oldest + SLICE_SECONDS * k for k in range(1, int((result.cutoff - oldest) // SLICE_SECONDS) + 1)]
        for edge in [*edges, result.cutoff]:
            for step in chunks(bay_ids, BAYS_PER_STEP):
                if stop.is_set():
                    break
                _fold_step(step, edge, stale, result)
            if progress is not None and not stop.is_set():
                progress(edge, result)
    result.stopped = stop.is_set()
    result.seconds = time.monotonic() - started
    return result


def _fold_step(bay_ids: Sequence[str], cutoff: float, stale: float, result: CompactResult) -> None:
    """One transaction of `_fold_bays`; on SQLite, tried again after meeting a concurrent write."""
    for attempt in range(SQLITE_RETRIES):
        try:
            _fold_bays(db.session, bay_ids, cutoff, stale, result)
            db.session.commit()
            return
        except OperationalError:
            db.session.rollback()
            if db.engine.dialect.name != "sqlite" or attempt == SQLITE_RETRIES - 1:
                raise
            log.info("compaction: a concurrent write; folding %d bays again", len(bay_ids))


def _fold_partition(name: str, lo: float, hi: float, bay_ids: Sequence[str], stale: float,
                    result: CompactResult) -> bool:
    """Fold everything stamped before `hi` and drop the day's raw partition, in one transaction
    (PostgreSQL): the runs appear and the rows they stand for vanish at the same commit.

    The partition is locked first (SHARE keeps late inserts out while it is read; readers go on),
    then dropped, which needs the whole table for an instant: when a lock is not had within
    partitions.LOCK_TIMEOUT (or a reader deadlocks with the drop) everything rolls back and the
    day waits for the next run. False then."""
    session = db.session
    folded = CompactResult(cutoff=hi)
    try:
        _lock(session, shared=False)  # first: a late reading holding it shared may be about to insert here
        lock_partition(session, name)
        for step in chunks(bay_ids, BAYS_PER_STEP):
            # Rows of this day go with the partition; older ones (late, in the default partition) are deleted.
            _fold_bays(session, step, hi, stale, folded, delete_before=lo)
        drop_partition(session, name)
        session.commit()
    except OperationalError:
        session.rollback()
        log.warning("compaction: %s could not be folded and dropped now (a lock was not had); "
                    "the next run tries again", name, exc_info=True)
        return False
    log.info("compaction: folded %d readings of %s and dropped it", folded.readings, name)
    result.readings += folded.readings
    result.runs_removed += folded.runs_removed
    result.runs_written += folded.runs_written
    result.bay_ids |= folded.bay_ids
    result.partitions_dropped += 1
    return True


def _fold_bays(session: Session, bay_ids: Sequence[str], cutoff: float, stale: float, result: CompactResult,
               delete_before: float | None = None) -> None:
    """Fold the raw readings of these bays stamped before `cutoff` into their runs (no commit);
    the folded rows stamped before `delete_before` (default: all of them) are deleted."""
    _lock(session, shared=False)
    raw: dict[str, list[tuple[float, bool, float, int]]] = defaultdict(list)
    for bay_id, ts, occupied in session.execute(
        select(StoredReading.bay_id, StoredReading.ts, StoredReading.occupied)
        .where(StoredReading.bay_id.in_(bay_ids), StoredReading.ts < cutoff)
        .order_by(StoredReading.bay_id, StoredReading.ts, StoredReading.id)
    ):
        raw[bay_id].append((ts, bool(occupied), ts, 1))
    if not raw:
        return
    first = {bay_id: items[0][0] for bay_id, items in raw.items()}
    # Every run the folded readings can continue, absorb or end: those reaching to within
    # stale_after of a bay's first folded reading, and all after it.
    earliest = min(first.values()) - stale
    runs: dict[str, list[tuple[int, float, bool, float, int]]] = defaultdict(list)
    for run_id, bay_id, ts, occupied, last_ts, count in session.execute(
        select(BayRun.id, BayRun.bay_id, BayRun.ts, BayRun.occupied, BayRun.last_ts, BayRun.readings)
        # Only runs before the cutoff: what is folded is always a beginning of each bay's history
        # (to the cutoff), never a stretch with unfolded readings inside it.
        .where(BayRun.bay_id.in_(list(raw)), BayRun.ts >= earliest - MAX_RUN_SECONDS, BayRun.ts < cutoff,
               BayRun.last_ts >= earliest)
        .order_by(BayRun.bay_id, BayRun.ts, BayRun.id)
    ):
        if last_ts >= first[bay_id] - stale:
            runs[bay_id].append((run_id, ts, bool(occupied), last_ts, count))
    new_runs = []
    old_ids = []
    for bay_id, items in raw.items():
        old = runs.get(bay_id, [])
        old_ids.extend(run[0] for run in old)
        # Runs first at equal ts: they were folded from readings stored before these.
        merged = [run[1:] for run in old] + items
        merged.sort(key=lambda item: item[0])  # stable
        for ts, occupied, last_ts, count in fold(merged, stale, MAX_RUN_SECONDS):
            new_runs.append({"bay_id": bay_id, "ts": ts, "occupied": occupied, "last_ts": last_ts, "readings": count})
        result.readings += len(items)
    for ids in chunks(old_ids, 500):
        session.execute(delete(BayRun).where(BayRun.id.in_(ids)))
    if new_runs:
        session.execute(insert(BayRun), new_runs)
    session.execute(
        delete(StoredReading).where(StoredReading.bay_id.in_(list(raw)),
                                    StoredReading.ts < (cutoff if delete_before is None else delete_before))
    )
    result.runs_removed += len(old_ids)
    result.runs_written += len(new_runs)
    result.bay_ids.update(raw)


def absorb_late(session: Session, readings: Sequence, now: float) -> list:
    """Readings that still need storing after meeting compacted history (no commit).

    Only readings stamped before now - COMPACT_HORIZON can fall inside a run. One inside a run of
    its own state is already accounted for (dropped, a duplicate); one inside a run of the other
    state ends that run at its ts (`occupancy.fold`), so a reader starting after it does not
    see the run reach past it. Takes the compaction lock (shared) first: a compaction cannot
    fold past a late reading between this look-up and its commit.
    """
    late = sorted((r for r in readings if r.ts < now - COMPACT_HORIZON), key=lambda r: r.ts)
    if not late:
        return list(readings)
    _lock(session, shared=True)
    lo, hi = late[0].ts, late[-1].ts
    runs: dict[str, list[list]] = defaultdict(list)
    for run_id, bay_id, ts, occupied, last_ts in session.execute(
        select(BayRun.id, BayRun.bay_id, BayRun.ts, BayRun.occupied, BayRun.last_ts)
        .where(BayRun.bay_id.in_(sorted({r.bay for r in late})), BayRun.ts >= lo - MAX_RUN_SECONDS,
               BayRun.ts <= hi, BayRun.last_ts >= lo)
        .order_by(BayRun.bay_id, BayRun.ts, BayRun.id)
    ):
        runs[bay_id].append([ts, bool(occupied), last_ts, run_id])
    if not runs:
        return list(readings)
    absorbed: set[int] = set()
    ended: dict[int, float] = {}
    for r in late:  # in ts order: a run ended by one reading no longer holds the ones after it
        bay_runs = runs.get(r.bay)
        if not bay_runs:
            continue
        i = bisect_right(bay_runs, r.ts, key=lambda run: run[0]) - 1
        if i < 0 or r.ts > bay_runs[i][2]:
            continue  # not inside a run
        run = bay_runs[i]
        if run[1] is bool(r.occupied):
            absorbed.add(id(r))
        elif r.ts < run[2]:
            run[2] = r.ts
            ended[run[3]] = r.ts
    if ended:
        session.execute(update(BayRun), [{"id": run_id, "last_ts": ts} for run_id, ts in ended.items()])
    return [r for r in readings if id(r) not in absorbed]


def _lock(session: Session, shared: bool) -> None:
    """The compaction lock for this transaction (PostgreSQL; SQLite serializes writers itself)."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {function}(:key)"), {"key": LOCK_KEY})
