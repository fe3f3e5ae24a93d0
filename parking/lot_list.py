"""The live lot list behind `GET /api/lots`: every lot as a GeoJSON feature with its counts now.

Counting 100,000 bays and building 1,000 features takes ~100 ms, far too long to do per request
(docs/benchmarks.md). So the list is a snapshot: `LotList` keeps the features and their encoded
JSON body, and a request older than `LOTS_SNAPSHOT_SECONDS` (default 2 s, well inside the minute
within which the contract lets free counts change) starts one refresh in the background and is
answered from the snapshot it already has. Only the first request, or one that finds the snapshot
older than `HARD_MAX_AGE_FACTOR` × the interval (the background refresh failing), waits for a
fresh one, and so fails visibly instead of serving old counts. `LOTS_SNAPSHOT_SECONDS = 0`
disables the snapshot (every request counts; the tests use that).

`lot_feature` (one lot as a feature) lives here too; `GET /api/lots/<id>` uses it without the snapshot.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import select

from .current import LotState, lot_states
from .extensions import db
from .models import Lot
from .opening_hours import is_open
from .timefmt import iso_utc

log = logging.getLogger("parking.lot_list")

# A snapshot older than this many refresh intervals is never served (the refresh must be failing).
HARD_MAX_AGE_FACTOR = 10
# What a feature needs of a lot: read as plain rows, no ORM objects and no outline geometry.
_LOT_COLUMNS = (
    Lot.id, Lot.name, Lot.category, Lot.lon, Lot.lat, Lot.park_and_ride, Lot.url, Lot.address,
    Lot.opening_hours, Lot.timezone,
)


def lot_closed(lot, now: float) -> bool:
    """Whether the lot's opening hours say it is closed now (unknown hours: not closed)."""
    local = dt.datetime.fromtimestamp(now, ZoneInfo(lot.timezone))
    return is_open(lot.opening_hours, local) is False


def lot_feature(lot, state: LotState, now: float) -> dict:
    """One lot (a `Lot` or a row of its columns) as a GeoJSON Point feature with its live counts."""
    return {
        "type": "Feature",
        "id": lot.id,
        "geometry": {"type": "Point", "coordinates": [lot.lon, lot.lat]},
        "properties": {
            "name": lot.name,
            "category": lot.category,
            "total": state.total,
            "free": state.free,
            "occupied": state.occupied,
            "unknown": state.unknown,
            "occupancy": state.occupancy,
            "status": state.status(closed=lot_closed(lot, now)),
            "updated_at": iso_utc(state.updated_at),
            "park_and_ride": lot.park_and_ride,
            "url": lot.url,
            "address": lot.address,
            "opening_hours": lot.opening_hours,
            "timezone": lot.timezone,
        },
    }


def encode_collection(features: list[dict]) -> bytes:
    """A FeatureCollection as compact JSON."""
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Snapshot:
    """Every lot's feature at one instant, in lot id order, and the whole collection encoded."""

    taken_at: float
    features: list[dict]
    body: bytes


def take_snapshot(stale_after: float, now: float | None = None) -> Snapshot:
    """Count every lot now (needs an app context)."""
    now = time.time() if now is None else now
    lots = db.session.execute(select(*_LOT_COLUMNS).order_by(Lot.id)).all()
    states = lot_states(stale_after, now)
    features = [lot_feature(lot, states[lot.id], now) for lot in lots]
    return Snapshot(now, features, encode_collection(features))


class LotList:
    """The app's lot list snapshot (one per app, in `app.extensions`); thread-safe."""

    def __init__(self, app: Flask):
        self.app = app
        self.max_age = float(app.config.get("LOTS_SNAPSHOT_SECONDS", 2))
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # held while a refresh is running
        self.refreshes = 0  # counted for tests and the benchmark

    def get(self) -> Snapshot:
        """A snapshot no older than the interval, or, while a refresh runs, the one before it."""
        stale_after = float(self.app.config["STALE_AFTER"])
        if self.max_age <= 0:
            return take_snapshot(stale_after)
        snapshot = self._snapshot
        age = time.time() - snapshot.taken_at if snapshot is not None else None
        if age is None or age >= self.max_age * HARD_MAX_AGE_FACTOR:
            with self._lock:  # whoever waited here may find that another request just refreshed
                snapshot = self._snapshot
                if snapshot is None or time.time() - snapshot.taken_at >= self.max_age:
                    snapshot = self._refresh(stale_after)
            return snapshot
        if age >= self.max_age and self._lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, args=(stale_after,),
                             name="lot-list-refresh", daemon=True).start()
        return snapshot

    def clear(self) -> None:
        """Forget the snapshot (after an import changed the lots)."""
        with self._lock:
            self._snapshot = None

    def _refresh(self, stale_after: float) -> Snapshot:
        """Take and keep a new snapshot (the caller holds the lock and an app context)."""
        snapshot = take_snapshot(stale_after)
        self._snapshot = snapshot
        self.refreshes += 1
        return snapshot

    def _refresh_in_background(self, stale_after: float) -> None:
        """Refresh on this thread with its own app context, then release the lock."""
        try:
            with self.app.app_context():
                self._refresh(stale_after)
        except Exception:  # noqa: BLE001 - requests keep the old snapshot until the hard limit
            log.exception("could not refresh the lot list")
        finally:
            self._lock.release()


def lot_list(app: Flask) -> LotList:
    """The app's LotList, made on first use."""
    existing = app.extensions.get("parking.lot_list")
    if existing is None:
        existing = app.extensions.setdefault("parking.lot_list", LotList(app))
    return existing
