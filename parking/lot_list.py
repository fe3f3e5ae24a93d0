"""The live lot list behind `GET /api/lots` and `GET /api/lots/<id>`: every lot as a GeoJSON
feature with its counts now, and each lot's bays.

Counting 100,000 bays and building 1,000 features takes ~100 ms, far too long to do per request
(docs/benchmarks.md). So the list is a snapshot: `LotList` keeps the features and their encoded
JSON body, and a request older than `LOTS_SNAPSHOT_SECONDS`
(default 2 s, well inside the minute within which the contract lets free counts change) starts
one refresh in the background and is answered from the snapshot it already has. Only the first
request, or one that finds the snapshot older than `HARD_MAX_AGE_FACTOR` × the interval (the
background refresh failing), waits for a fresh one, and so fails visibly instead of serving old
counts. `LOTS_SNAPSHOT_SECONDS = 0` disables the snapshot (every request counts; the tests use that).

A lot's detail (its feature with every bay) is read and encoded on the lot's first request after
a refresh and then kept with that snapshot, so it lags as the list does, by at most an interval,
and a popular lot costs one small query per interval instead of one per request. Its counts are
counted from the very bay rows it lists, so those two always agree. (Reading every bay of the
city into each snapshot instead would make the refresh ten times slower: docs/benchmarks.md.)

`init_app` makes the app's one `LotList` with the real app object: the refresh thread has no app
context of its own to find the app through (handing it the `current_app` proxy fails there).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from .current import LotState, bay_status, lot_states, state_of_bays
from .extensions import db
from .models import Bay, Lot
from .opening_hours import is_open
from .timefmt import iso_utc

log = logging.getLogger("parking.lot_list")

EXTENSION_KEY = "parking.lot_list"
# A snapshot older than this many refresh intervals is never served (the refresh must be failing).
HARD_MAX_AGE_FACTOR = 10
# What a feature needs of a lot: read as plain rows, no ORM objects and no outline geometry.
_LOT_COLUMNS = (
    Lot.id, Lot.name, Lot.category, Lot.lon, Lot.lat, Lot.park_and_ride, Lot.url, Lot.address,
    Lot.opening_hours, Lot.timezone,
)
# What a lot's detail needs of a bay.
_BAY_COLUMNS = (Bay.lot_id, Bay.id, Bay.state, Bay.last_ts, Bay.state_since, Bay.last_seen, Bay.battery)


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


def bay_entry(bay, stale_after: float, now: float) -> dict:
    """One bay (a `Bay` or a row of its columns) as the lot detail lists it (contract §4)."""
    return {
        "id": bay.id,
        "status": bay_status(bay, stale_after, now),
        "since": iso_utc(bay.state_since),
        "last_seen": iso_utc(bay.last_seen),
        "battery": bay.battery,
    }


def encode(document: dict) -> bytes:
    """A JSON document as compact UTF-8."""
    return json.dumps(document, separators=(",", ":")).encode()


def encode_collection(features: list[dict]) -> bytes:
    """A FeatureCollection as compact JSON."""
    return encode({"type": "FeatureCollection", "features": features})


@dataclass(frozen=True)
class Snapshot:
    """Every lot's feature at one instant, in lot id order, and the whole collection encoded;
    and the details of the lots asked for since (each lot's bays, read on its first request)."""

    taken_at: float
    features: dict[str, dict]  # lot id -> feature, in lot id order
    body: bytes
    details: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


def take_snapshot(stale_after: float, now: float | None = None) -> Snapshot:
    """Count every lot now (needs an app context)."""
    now = time.time() if now is None else now
    lots = db.session.execute(select(*_LOT_COLUMNS).order_by(Lot.id)).all()
    states = lot_states(stale_after, now)
    features = {lot.id: lot_feature(lot, states[lot.id], now) for lot in lots}
    return Snapshot(now, features, encode_collection(list(features.values())))


def lot_detail(lot_id: str, stale_after: float, now: float) -> bytes | None:
    """One lot's feature with `properties.bays`, encoded; None for an unknown lot (app context).

    Its counts are counted from the very bay rows it lists, so the two always agree.
    """
    lot = db.session.execute(select(*_LOT_COLUMNS).where(Lot.id == lot_id)).first()
    if lot is None:
        return None
    bays = db.session.execute(select(*_BAY_COLUMNS).where(Bay.lot_id == lot_id).order_by(Bay.id)).all()
    feature = lot_feature(lot, state_of_bays(bays, stale_after, now), now)
    feature["properties"]["bays"] = [bay_entry(bay, stale_after, now) for bay in bays]
    return encode(feature)


class LotList:
    """The app's lot list snapshot (one per app, in `app.extensions`); thread-safe."""

    def __init__(self, app: Flask, clock: Callable[[], float] = time.time):
        self.app = app
        self.clock = clock  # what "now" is, for the counts and the snapshot's age (tests set it)
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # held while a refresh is running
        self.refreshes = 0  # counted for tests and the benchmark
        self.failures = 0  # background refreshes that failed

    @property
    def max_age(self) -> float:
        """The refresh interval in seconds (0: no snapshot)."""
        return float(self.app.config.get("LOTS_SNAPSHOT_SECONDS", 2))

    def get(self) -> Snapshot:
        """A snapshot no older than the interval, or, while a refresh runs, the one before it."""
        stale_after = float(self.app.config["STALE_AFTER"])
        if self.max_age <= 0:
            return take_snapshot(stale_after, self.clock())
        snapshot = self._snapshot
        age = self.clock() - snapshot.taken_at if snapshot is not None else None
        if age is None or age >= self.max_age * HARD_MAX_AGE_FACTOR:
            return self._wait_for_fresh(stale_after)
        if age >= self.max_age and self._lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, args=(stale_after,),
                             name="lot-list-refresh", daemon=True).start()
        return snapshot

    def detail(self, lot_id: str) -> bytes | None:
        """One lot with its bays, encoded; None for a lot that does not exist. Read on the lot's
        first request after each refresh and then kept with the snapshot, so it lags as the list does."""
        stale_after = float(self.app.config["STALE_AFTER"])
        if self.max_age <= 0:
            return lot_detail(lot_id, stale_after, self.clock())
        snapshot = self.get()
        body = snapshot.details.get(lot_id)
        if body is None:
            body = lot_detail(lot_id, stale_after, self.clock())
            if body is not None:  # unknown ids are not kept: the cache holds at most every lot
                snapshot.details[lot_id] = body  # two requests racing here store the same bytes
        return body

    def clear(self) -> None:
        """Forget the snapshot (after an import changed the lots)."""
        with self._lock:
            self._snapshot = None

    def _wait_for_fresh(self, stale_after: float) -> Snapshot:
        """A snapshot younger than the interval, taken on this thread unless another just took one."""
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or self.clock() - snapshot.taken_at >= self.max_age:
                snapshot = self._refresh(stale_after)
            return snapshot

    def _refresh(self, stale_after: float) -> Snapshot:
        """Take and keep a new snapshot (the caller holds the lock and an app context)."""
        return self._keep(take_snapshot(stale_after, self.clock()))

    def _keep(self, snapshot: Snapshot) -> Snapshot:
        """Make the snapshot the one served."""
        self._snapshot = snapshot
        self.refreshes += 1
        return snapshot

    def _refresh_in_background(self, stale_after: float) -> None:
        """Refresh on this thread with its own app context, then release the lock."""
        try:
            with self.app.app_context():
                snapshot = take_snapshot(stale_after, self.clock())
            # Kept only once the context has closed its session: whoever sees the new snapshot
            # (a test tearing the database down) finds no connection still out.
            self._keep(snapshot)
        except DBAPIError as exc:  # the database is down or refusing: one line, not a traceback each time
            first_line = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("could not refresh the lot list, serving the previous one: %s", first_line)
            self.failures += 1  # counted after the log line: whoever waits for the count finds it
        except Exception:  # noqa: BLE001 - requests keep the old snapshot until the hard limit
            log.exception("could not refresh the lot list")
            self.failures += 1
        finally:
            self._lock.release()


def init_app(app: Flask, clock: Callable[[], float] = time.time) -> LotList:
    """Give the app its LotList, bound to the app object itself (never the `current_app` proxy)."""
    lots = LotList(app, clock)
    app.extensions[EXTENSION_KEY] = lots
    return lots


def lot_list(app: Flask) -> LotList:
    """The app's LotList (made by `init_app`; `current_app` works as the argument)."""
    return app.extensions[EXTENSION_KEY]
