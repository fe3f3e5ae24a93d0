"""Reading a bay's history: raw readings and compacted runs, merged in storage order.

A bay's history lives in two tables: `readings` (raw, as received) and `bay_runs` (what
parking.compaction folded, `occupancy.fold`). Every reader of history goes through here and
gets runs `(ts, occupied, last_ts)`, a raw reading being the run `(ts, occupied, ts)`, so the
arithmetic of parking.occupancy sees one sequence whatever was folded. For equal ts a run comes
before a raw reading: compaction folds only what was stored before it runs, so a raw reading
with the same ts as a run was stored after it.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import and_, func, literal, select
from sqlalchemy.orm import Session

from .dbutil import chunks, in_subquery
from .extensions import db
from .models import Bay, BayRun, StoredReading
from .occupancy import StateRun, fold

# A run spans at most this long (`occupancy.fold`'s max_span): the run that reaches into a window
# starting at t began after t - MAX_RUN_SECONDS, which keeps every look-up an index range.
MAX_RUN_SECONDS = 86400.0
IN_CHUNK = 500


def readings_of_lots(
    lot_ids: Sequence[str], start: float, end: float
) -> dict[str, dict[str, list[StateRun]]]:
    """Runs per bay per lot that say something about [start, end): raw readings with ts in it,
    and compacted runs that begin before `end` and whose last reading is at or after `start`."""
    by_lot: dict[str, dict[str, list[StateRun]]] = {}
    runs: dict[str, list[tuple]] = {}
    for chunk in chunks(lot_ids, IN_CHUNK):
        bays_of_lots = select(Bay.id).where(Bay.lot_id.in_(chunk))
        rows = db.session.execute(
            select(Bay.lot_id, StoredReading.bay_id, StoredReading.ts, StoredReading.occupied)
            .join(Bay, Bay.id == StoredReading.bay_id)
            # One index range on (bay_id, ts) per bay, never a scan of the history: see in_subquery.
            .where(in_subquery(db.session, StoredReading.bay_id, bays_of_lots),
                   StoredReading.ts >= start, StoredReading.ts < end)
            .order_by(StoredReading.bay_id, StoredReading.ts, StoredReading.id)
        )
        bay_id_seen, readings = None, None
        for lot_id, bay_id, ts, occupied in rows:
            if bay_id != bay_id_seen:  # rows come bay by bay
                readings = by_lot.setdefault(lot_id, {}).setdefault(bay_id, [])
                bay_id_seen = bay_id
            readings.append((ts, bool(occupied), ts))
        for lot_id, bay_id, ts, occupied, last_ts, count in db.session.execute(
            select(Bay.lot_id, BayRun.bay_id, BayRun.ts, BayRun.occupied, BayRun.last_ts, BayRun.readings)
            .join(Bay, Bay.id == BayRun.bay_id)
            .where(in_subquery(db.session, BayRun.bay_id, bays_of_lots),
                   BayRun.ts >= start - MAX_RUN_SECONDS, BayRun.ts < end, BayRun.last_ts >= start)
            .order_by(BayRun.bay_id, BayRun.ts, BayRun.id)
        ):
            runs.setdefault(bay_id, []).append((lot_id, ts, bool(occupied), last_ts, count))
    for bay_id, bay_runs in runs.items():
        lot_bays = by_lot.setdefault(bay_runs[0][0], {})
        raw = lot_bays.get(bay_id, [])
        lot_bays[bay_id] = merged(((ts, occupied, last, count) for _, ts, occupied, last, count in bay_runs), raw)
    return by_lot


def merged(runs: Iterable[tuple[float, bool, float, int]], raw: Iterable[StateRun]) -> list[StateRun]:
    """One bay's runs and raw readings (each in storage order) as one folded sequence."""
    items = list(runs)
    items.extend((ts, occupied, last, 1) for ts, occupied, last in raw)
    items.sort(key=_ts)  # stable: at equal ts runs stay first, each source in its own order
    return [(ts, occupied, last) for ts, occupied, last, _ in fold(items, 0.0, 0.0)]


def newest_first(session: Session, bay_id: str) -> Iterator[StateRun]:
    """The bay's history newest first, raw readings and runs interleaved (for `run_start`)."""
    raw = session.execute(
        select(StoredReading.ts, StoredReading.occupied)
        .where(StoredReading.bay_id == bay_id)
        .order_by(StoredReading.ts.desc(), StoredReading.id.desc())
        .execution_options(yield_per=500)
    )
    folded = session.execute(
        select(BayRun.ts, BayRun.occupied, BayRun.last_ts)
        .where(BayRun.bay_id == bay_id)
        .order_by(BayRun.ts.desc(), BayRun.id.desc())
        .execution_options(yield_per=500)
    )
    # Closed explicitly: run_start stops early, which must not leave server-side cursors open.
    with raw, folded:
        next_raw, next_run = next(raw, None), next(folded, None)
        while next_raw is not None or next_run is not None:
            # Newest first, so at equal ts the raw reading (stored later) comes first.
            if next_run is None or (next_raw is not None and next_raw[0] >= next_run[0]):
                yield (next_raw[0], bool(next_raw[1]), next_raw[0])
                next_raw = next(raw, None)
            else:
                yield (next_run[0], bool(next_run[1]), next_run[2])
                next_run = next(folded, None)


def states_before(lot_id: str, start: float) -> dict[str, bool]:
    """Each bay's state by its newest reading or run stamped before `start` (equal ts: the
    later-stored wins, a raw reading over a run)."""
    newest: dict[str, tuple[float, int, int, bool]] = {}
    for source, table in enumerate((BayRun, StoredReading)):
        last_before = (
            select(table.bay_id, func.max(table.ts).label("ts"))
            .join(Bay, Bay.id == table.bay_id)
            .where(Bay.lot_id == lot_id, table.ts < start)
            .group_by(table.bay_id)
            .subquery()
        )
        rows = db.session.execute(
            select(table.bay_id, table.ts, table.id, table.occupied)
            .join(last_before, and_(table.bay_id == last_before.c.bay_id, table.ts == last_before.c.ts))
        )
        for bay_id, ts, row_id, occupied in rows:
            key = (ts, source, row_id, bool(occupied))
            if bay_id not in newest or key > newest[bay_id]:
                newest[bay_id] = key
    return {bay_id: key[3] for bay_id, key in newest.items()}


def lot_stream(lot_id: str, start: float, end: float, batch: int = 1000) -> Iterator[list[tuple[str, float, bool]]]:
    """(bay, ts, occupied) of every reading and run of the lot stamped in [start, end), in ts
    order, in lists of about `batch`: streamed, as a year of a lot is millions of readings.

    Equal ts of several bays come in bay order, and of one bay in storage order: what compaction
    changes (the ids of runs are new) never reorders the answer."""
    def rows(table, source: int):
        query = (
            select(table.ts, table.bay_id, literal(source), table.id, table.occupied)
            .join(Bay, Bay.id == table.bay_id)
            .where(Bay.lot_id == lot_id, table.ts >= start, table.ts < end)
            .order_by(table.ts, table.bay_id, table.id)
            .execution_options(yield_per=5000)
        )
        with db.session.execute(query) as result:
            yield from result

    out: list[tuple[str, float, bool]] = []
    for ts, bay_id, _, _, occupied in heapq.merge(rows(BayRun, 0), rows(StoredReading, 1)):
        out.append((bay_id, ts, bool(occupied)))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def _ts(item: tuple) -> float:
    return item[0]
