"""Forecasting in the running system (contract §6): one `LotForecaster` per lot, kept current by
the scheduler, never on a request's path.

- A lot's forecaster is built from its stored history: the hourly figures (mean occupancy of
  each complete local hour, observed at the hour's middle; the last 35 days), then fed the live
  count (occupied / known bays x bays, §5) at every run.
- Each run stores the lot's newest curve (occupied bays in 15-minute steps for the next 24 h, or
  the reason there is none) in `forecast_curves`, which the HTTP endpoints read.
- Once per 15-minute slot it also stores what it forecast for 1, 3 and 24 h ahead in
  `forecast_checks`; when a target time has come, the live count seen then (within 15 minutes)
  is stored beside it, and `accuracy` compares the two. Checks older than 90 days are dropped.

The forecasters live in the process that runs the scheduler; any process can serve the stored
curves.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import Flask, current_app
from sqlalchemy import and_, case, delete, func, select, update

from .current import lot_states
from .extensions import db
from .forecast import LotForecaster
from .models import ForecastCheck, ForecastCurve, HourlyUtilization, Lot

log = logging.getLogger(__name__)

STEP = 900
CHECK_HORIZONS = (3600, 10800, 86400)
CURVE_SECONDS = 24 * 3600
BUILD_DAYS = 35
RETAIN_DAYS = 90
OUTCOME_WINDOW = 900  # a target's outcome is the live count seen at most this long after it


@dataclass
class _Entry:
    forecaster: LotForecaster
    capacity: int
    region: str
    timezone: str


@dataclass
class UpdateStats:
    lots: int = 0
    forecasting: int = 0
    outcomes: int = 0
    seconds: float = 0.0


class Forecasters:
    """The forecasters of one process, by lot id (the scheduler's thread is their only user)."""

    def __init__(self) -> None:
        self.by_lot: dict[str, _Entry] = {}
        self.lock = threading.Lock()


def forecasters(app: Flask) -> Forecasters:
    """This app's forecasters (created on first use)."""
    return app.extensions.setdefault("parking_forecasters", Forecasters())


def lot_region(lot: Lot) -> str:
    """The lot's holiday region: its own, else PARKING_REGION."""
    return lot.region or current_app.config["REGION"]


def build_forecaster(lot: Lot, capacity: int, region: str, now: float) -> LotForecaster:
    """A forecaster fed the lot's hourly figures of the last BUILD_DAYS days (complete hours)."""
    f = LotForecaster(capacity=capacity, timezone=lot.timezone, region=region)
    rows = db.session.execute(
        select(HourlyUtilization.hour_start, HourlyUtilization.occupied_seconds, HourlyUtilization.known_seconds)
        .where(
            HourlyUtilization.lot_id == lot.id,
            HourlyUtilization.hour_start >= now - BUILD_DAYS * 86400,
            HourlyUtilization.hour_start <= now - 3600,
        )
        .order_by(HourlyUtilization.hour_start)
    )
    for hour_start, occupied_s, known_s in rows:
        if known_s > 0:
            f.observe(hour_start + 1800, occupied_s / known_s * capacity)
    return f


def update_forecasts(now: float | None = None) -> UpdateStats:
    """Bring every lot's forecaster up to `now`; store curves, checks and outcomes (idempotent)."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    reg = forecasters(current_app)
    stats = UpdateStats()
    states = lot_states(current_app.config["STALE_AFTER"], now)
    with reg.lock:
        for lot in db.session.scalars(select(Lot).order_by(Lot.id)):
            stats.lots += 1
            state = states.get(lot.id)
            made = _update_lot(reg, lot, state, now, stats)
            stats.forecasting += made
            db.session.commit()
        db.session.execute(delete(ForecastCheck).where(ForecastCheck.target_at < now - RETAIN_DAYS * 86400))
        db.session.commit()
    stats.seconds = time.perf_counter() - started
    return stats


def _update_lot(reg: Forecasters, lot: Lot, state, now: float, stats: UpdateStats) -> bool:
    """One lot's run; True when it has a forecast."""
    capacity = state.total if state else 0
    if capacity == 0:
        _store_curve(lot.id, now, 0, "the lot has no bays", [])
        return False
    region = lot_region(lot)
    entry = reg.by_lot.get(lot.id)
    if (
        entry is None
        or (entry.capacity, entry.region, entry.timezone) != (capacity, region, lot.timezone)
        or entry.forecaster.reason() is not None  # short history: the rollup may have added hours
    ):
        entry = _Entry(build_forecaster(lot, capacity, region, now), capacity, region, lot.timezone)
        reg.by_lot[lot.id] = entry
    f = entry.forecaster
    known = state.free + state.occupied
    if known and now >= (f.last_ts or -math.inf):
        occupied = state.occupied / known * capacity
        f.observe(now, occupied)
        stats.outcomes += _store_outcomes(lot.id, now, occupied)
    reason = f.reason()
    if reason is not None:
        _store_curve(lot.id, now, capacity, reason, [])
        return False
    first = math.ceil(now / STEP) * STEP
    times = [first + k * STEP for k in range(CURVE_SECONDS // STEP + 1)]
    preds = f.predict(now, [t - now for t in times])
    _store_curve(
        lot.id, now, capacity, None,
        [[t, round(p.occupied, 2), round(p.low, 2), round(p.high, 2)] for t, p in zip(times, preds)],
    )
    _store_checks(lot.id, f, capacity, now)
    return True


def _store_curve(lot_id: str, now: float, capacity: int, reason: str | None, steps: list) -> None:
    curve = db.session.get(ForecastCurve, lot_id)
    if curve is None:
        curve = ForecastCurve(lot_id=lot_id)
        db.session.add(curve)
    curve.generated_at, curve.capacity, curve.reason, curve.steps = now, capacity, reason, steps


def _store_checks(lot_id: str, f: LotForecaster, capacity: int, now: float) -> None:
    """Once per 15-minute slot: the forecasts for 1, 3 and 24 h after the slot's start."""
    made = math.floor(now / STEP) * STEP
    exists = db.session.scalar(
        select(func.count()).select_from(ForecastCheck).where(ForecastCheck.lot_id == lot_id, ForecastCheck.made_at == made)
    )
    if exists:
        return
    preds = f.predict(now, [made + h - now for h in CHECK_HORIZONS])
    for h, p in zip(CHECK_HORIZONS, preds):
        db.session.add(ForecastCheck(
            lot_id=lot_id, made_at=made, horizon=h, target_at=made + h, capacity=capacity,
            occupied=p.occupied, low=p.low, high=p.high,
        ))


def _store_outcomes(lot_id: str, now: float, occupied: float) -> int:
    """What happened, for the checks whose target time came within the last OUTCOME_WINDOW."""
    result = db.session.execute(
        update(ForecastCheck)
        .where(
            ForecastCheck.lot_id == lot_id,
            ForecastCheck.actual.is_(None),
            ForecastCheck.target_at <= now,
            ForecastCheck.target_at > now - OUTCOME_WINDOW,
        )
        .values(actual=occupied)
    )
    return result.rowcount or 0


# ---- reading what was stored (the HTTP endpoints) ----------------------------------------------

def _iso_local(ts: float, timezone: str) -> str:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat(timespec="seconds")


def _curve_problem(curve: ForecastCurve | None, now: float) -> str | None:
    """Why a stored curve cannot be served now, or None."""
    interval = current_app.config["FORECAST_INTERVAL"]
    if curve is None:
        return f"no forecast made yet: the scheduler makes one every {interval} s"
    if curve.reason:
        return curve.reason
    if now - curve.generated_at > max(3 * interval, STEP):
        return f"the newest forecast was made at {_iso_local(curve.generated_at, 'UTC')}: too old to serve (is the scheduler running?)"
    return None


def _free_row(step: list, capacity: int) -> dict:
    t, occ, low, high = step
    return {"expected_free": round(capacity - occ), "free_low": round(capacity - high), "free_high": round(capacity - low)}


def forecast_rows(lot: Lot, hours: int, now: float) -> dict:
    """The body of GET /api/lots/<id>/forecast: rows from now to `hours` ahead, or [] and a reason."""
    curve = db.session.get(ForecastCurve, lot.id)
    body = {
        "lot": lot.id,
        "timezone": lot.timezone,
        "generated_at": _iso_local(curve.generated_at, "UTC") if curve else None,
        "capacity": curve.capacity if curve else None,
        "rows": [],
    }
    problem = _curve_problem(curve, now)
    if problem:
        body["reason"] = problem
        return body
    end = now + hours * 3600
    body["rows"] = [
        {"at": _iso_local(s[0], lot.timezone), **_free_row(s, curve.capacity)}
        for s in curve.steps
        if now <= s[0] <= end
    ]
    return body


def forecast_at(lots: list[Lot], at: float, now: float) -> dict[str, dict | None]:
    """properties.forecast of GET /api/lots?at=: per lot id, the forecast for `at` or None."""
    curves = {c.lot_id: c for c in db.session.scalars(select(ForecastCurve).where(ForecastCurve.lot_id.in_([l.id for l in lots])))}
    out: dict[str, dict | None] = {}
    for lot in lots:
        curve = curves.get(lot.id)
        out[lot.id] = None
        if _curve_problem(curve, now) or not curve.steps:
            continue
        step = _interpolate(curve.steps, at)
        if step is not None:
            out[lot.id] = {"at": _iso_local(at, lot.timezone), **_free_row(step, curve.capacity)}
    return out


def _interpolate(steps: list, at: float) -> list | None:
    """The curve at `at`, linear between its 15-minute steps; the first step before it; None after."""
    if at <= steps[0][0]:
        return steps[0]
    for a, b in zip(steps, steps[1:]):
        if a[0] <= at <= b[0]:
            w = (at - a[0]) / (b[0] - a[0])
            return [at] + [x + w * (y - x) for x, y in zip(a[1:], b[1:])]
    return None


def accuracy(lot: Lot, days: int, now: float) -> dict:
    """How good the stored forecasts were: per horizon MAE in bays and % of capacity, band share."""
    err = func.abs(ForecastCheck.occupied - ForecastCheck.actual)
    inside = case((and_(ForecastCheck.actual >= ForecastCheck.low, ForecastCheck.actual <= ForecastCheck.high), 1), else_=0)
    rows = db.session.execute(
        select(
            ForecastCheck.horizon,
            func.count(),
            func.avg(err),
            func.avg(err * 100.0 / ForecastCheck.capacity),
            func.sum(inside),
        )
        .where(
            ForecastCheck.lot_id == lot.id,
            ForecastCheck.actual.is_not(None),
            ForecastCheck.target_at > now - days * 86400,
            ForecastCheck.target_at <= now,
        )
        .group_by(ForecastCheck.horizon)
    )
    found = {h: (n, mae, pct, ins) for h, n, mae, pct, ins in rows}
    horizons = []
    for h in CHECK_HORIZONS:
        n, mae, pct, ins = found.get(h, (0, None, None, 0))
        horizons.append({
            "horizon_hours": h // 3600,
            "n": int(n),
            "mae_bays": round(float(mae), 2) if n else None,
            "mae_pct": round(float(pct), 2) if n else None,
            "inside_band_pct": round(100.0 * int(ins) / int(n), 1) if n else None,
        })
    body = {"lot": lot.id, "days": days, "from": _iso_local(now - days * 86400, lot.timezone),
            "to": _iso_local(now, lot.timezone), "horizons": horizons}
    if not any(r["n"] for r in horizons):
        body["reason"] = "no stored forecast has come due in this period yet"
    return body
