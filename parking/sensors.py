"""The operators' view of sensors: which are silent past stale_after or low on battery."""
from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import or_, select

from .extensions import db
from .models import Bay
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
        if bay.last_seen is None:
            problem = "never_seen"
        elif now - bay.last_seen >= stale:
            problem = "silent"
        elif bay.battery is not None and bay.battery <= low:
            problem = "low_battery"
        else:
            problem = None
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
