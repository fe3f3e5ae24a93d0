"""The stored sensors: the operators' view (which are silent past stale_after or low on battery)
and the snapshot a simulator continues from (`sensor_snapshot`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import and_, func, or_, select

from .extensions import db
from .models import Bay, Lot, StoredReading
from .timefmt import iso_utc


def sensor_report(only_problems: bool = True, lot_id: str | None = None, now: float | None = None) -> list[dict]:
    """One row per sensor: bay, lot, last_seen, battery and its problem (silent, low_battery, never_seen)."""
    now = time.time() if now is None else now
    stale = current_app.config["STALE_AFTER"]
    low = current_app.config["LOW_BATTERY"]
    query = select(Bay).order_by(Bay.lot_id, Bay.id)
    if lot_id:
        query = query.where(Bay.lot_id == lot_id)
    if only_problems:
        query = query.where(
            or_(Bay.last_seen.is_(None), Bay.last_seen <= now - stale, Bay.battery <= low)
        )
    rows = []
    for bay in db.session.scalars(query):
        problem = problem_of(bay.last_seen, bay.battery, now, stale, low)
        rows.append(
            {
                "bay": bay.id,
                "lot": bay.lot_id,
                "problem": problem,
                "last_seen": iso_utc(bay.last_seen),
                "silent_for_s": None if bay.last_seen is None else round(now - bay.last_seen),
                "battery": bay.battery,
            }
        )
    return rows


@dataclass(frozen=True)
class LotBays:
    """One stored lot as a simulator needs it: what kind of lot, where, which bays."""

    id: str
    category: str | None
    park_and_ride: dict | None
    timezone: str
    bays: tuple[str, ...]


@dataclass(frozen=True)
class SensorSnapshot:
    """The stored lots and, per bay, its last state and seq; the newest stored reading's ts."""

    lots: list[LotBays]
    states: dict[str, bool | None]
    last_seqs: dict[str, int]
    newest_ts: float | None


def sensor_snapshot() -> SensorSnapshot:
    """What the stored sensors last said, for a simulator to continue from (app context needed)."""
    lots = [
        LotBays(lot.id, lot.category, lot.park_and_ride, lot.timezone, tuple(bay.id for bay in lot.bays))
        for lot in db.session.scalars(select(Lot).order_by(Lot.id))
    ]
    states = dict(db.session.execute(select(Bay.id, Bay.state)).all())
    seqs = db.session.execute(
        select(Bay.id, func.max(StoredReading.seq))
        .join(StoredReading, and_(StoredReading.bay_id == Bay.id, StoredReading.ts == Bay.last_ts))
        .group_by(Bay.id)
    ).all()
    # The bays carry their newest reading's ts, whether or not its row has been compacted since.
    newest = db.session.scalar(select(func.max(Bay.last_ts)))
    return SensorSnapshot(lots, states, {bay: seq for bay, seq in seqs if seq is not None}, newest)


def problem_of(last_seen: float | None, battery: int | None, now: float, stale: float, low: int) -> str | None:
    """never_seen, silent (nothing for stale_after), low_battery, or None for a sensor that is fine."""
    if last_seen is None:
        return "never_seen"
    if now - last_seen >= stale:
        return "silent"
    if battery is not None and battery <= low:
        return "low_battery"
    return None
