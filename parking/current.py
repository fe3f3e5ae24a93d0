"""The present state of lots and bays (contract §4, "now" part of §5), read from `bays`.

Two ways to the same counts, one rule (`parking.occupancy.current_counts`; tests prove all three
agree): `lot_states` counts in SQL, for a few lots at a time (the gateway's entrance signs);
`state_of_bays` counts bay rows already read, as the lot list's snapshot does, which reads every
bay anyway to serve each lot's bays.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import case, func, select

from .extensions import db
from .models import Bay, Lot
from .occupancy import current_counts

ALMOST_FULL = 0.9


@dataclass(frozen=True)
class LotState:
    """Counts of one lot now."""

    total: int
    free: int
    occupied: int
    updated_at: float | None

    @property
    def unknown(self) -> int:
        """Bays with no fresh reading."""
        return self.total - self.free - self.occupied

    @property
    def occupancy(self) -> float | None:
        """occupied / (free + occupied), None when nothing is known."""
        known = self.free + self.occupied
        return round(self.occupied / known, 3) if known else None

    def status(self, closed: bool = False) -> str:
        """spacesAvailable, almostFull, full, closed or unknown."""
        if closed:
            return "closed"
        if self.free + self.occupied == 0:
            return "unknown"
        if self.free == 0:
            return "full"
        if self.occupancy >= ALMOST_FULL:
            return "almostFull"
        return "spacesAvailable"


def lot_states(stale_after: float, now: float | None = None, lot_ids=None) -> dict[str, LotState]:
    """LotState per lot id (lots without bays included)."""
    now = time.time() if now is None else now
    fresh = Bay.last_ts > now - stale_after
    query = (
        select(
            Lot.id,
            func.count(Bay.id),
            func.coalesce(func.sum(case((fresh & (Bay.state == False), 1), else_=0)), 0),  # noqa: E712
            func.coalesce(func.sum(case((fresh & (Bay.state == True), 1), else_=0)), 0),  # noqa: E712
            func.max(Bay.last_ts),
        )
        .select_from(Lot)
        .outerjoin(Bay, Bay.lot_id == Lot.id)
        .group_by(Lot.id)
    )
    if lot_ids is not None:
        query = query.where(Lot.id.in_(list(lot_ids)))
    return {
        lot_id: LotState(int(total), int(free), int(occ), updated)
        for lot_id, total, free, occ, updated in db.session.execute(query)
    }


def state_of_bays(bays, stale_after: float, now: float) -> LotState:
    """LotState of one lot from its bays (`Bay` objects or rows with `state` and `last_ts`)."""
    counts = current_counts(((bay.last_ts, bay.state) for bay in bays), len(bays), now, stale_after)
    newest = max((bay.last_ts for bay in bays if bay.last_ts is not None), default=None)
    return LotState(counts.total, counts.free, counts.occupied, newest)


def bay_status(bay, stale_after: float, now: float | None = None) -> str:
    """free, occupied or unknown for one bay (a `Bay` or a row with `state` and `last_ts`) now."""
    now = time.time() if now is None else now
    # The same comparison as current_counts, so a bay's status and its lot's counts never differ.
    if bay.last_ts is None or bay.state is None or not now < bay.last_ts + stale_after:
        return "unknown"
    return "occupied" if bay.state else "free"
