"""What the operators' page (`/operators`) shows: the health of every sensor, lot and the gateway.

This module owns `overview`: per bay sensor its state (silent past stale_after, never seen, low
battery, ok), the sensor credential it reports through and its refused attempts of the last
hour; per lot the share of bays reporting; refused attempts (4.01 / 4.03) by sensor and by
source address in the last hour; the gateway's queue, group commit latency and whether the
database is reachable. One query for the bays, one for the lots: fine for 10,000 sensors.
The gateway's figures are those of the gateway running in this process (`parking-run`), as
/healthz has them; a gateway started on its own shows there as not running here.
"""
from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import and_, select, text

from .extensions import db
from .models import Bay, CredentialBay, Lot, SensorCredential
from .sensors import problem_of
from .timefmt import iso_utc


def overview(now: float | None = None) -> dict:
    """{"generated_at", "stale_after", "sensors", "lots", "refused", "gateway"} for the page."""
    now = time.time() if now is None else now
    stale = current_app.config["STALE_AFTER"]
    gateway = current_app.extensions.get("parking_gateway")
    refused = gateway.refusal_log.summary(now) if gateway is not None else {"by_sensor": [], "by_source": []}
    refused_by_sensor = {row["name"]: row["total"] for row in refused["by_sensor"]}
    sensors = _sensors(now, stale, refused_by_sensor)
    return {
        "generated_at": iso_utc(now),
        "stale_after": stale,
        "sensors": sensors,
        "lots": _lots(sensors),
        "refused": refused,
        "gateway": _gateway(gateway),
    }


def _sensors(now: float, stale: float, refused_by_sensor: dict[str, int]) -> list[dict]:
    """One row per bay sensor, with the credential it reports through (if any)."""
    low = current_app.config["LOW_BATTERY"]
    query = (
        select(Bay.id, Bay.lot_id, Bay.last_seen, Bay.battery, SensorCredential.sensor_id)
        .outerjoin(CredentialBay, CredentialBay.bay_id == Bay.id)
        .outerjoin(SensorCredential, and_(SensorCredential.id == CredentialBay.credential_id,
                                          SensorCredential.revoked_at.is_(None)))
        .order_by(Bay.lot_id, Bay.id)
    )
    rows: dict[str, dict] = {}
    for bay, lot, last_seen, battery, sensor in db.session.execute(query):
        row = rows.get(bay)
        if row is not None:  # a revoked binding besides the one in force: keep the one in force
            row["sensor"] = row["sensor"] or sensor
            continue
        rows[bay] = {
            "bay": bay, "lot": lot, "sensor": sensor,
            "status": problem_of(last_seen, battery, now, stale, low) or "ok",
            "last_seen": iso_utc(last_seen),
            "silent_for_s": None if last_seen is None else round(now - last_seen),
            "battery": battery,
        }
    for row in rows.values():
        row["refused"] = refused_by_sensor.get(row["sensor"], 0) if row["sensor"] else 0
    return list(rows.values())


def _lots(sensors: list[dict]) -> list[dict]:
    """Per lot: bays, bays reporting (a reading within stale_after) and the share."""
    names = dict(db.session.execute(select(Lot.id, Lot.name)).all())
    counts: dict[str, list[int]] = {lot: [0, 0] for lot in names}
    for row in sensors:
        count = counts.setdefault(row["lot"], [0, 0])
        count[0] += 1
        count[1] += row["status"] in ("ok", "low_battery")
    return [
        {"lot": lot, "name": names.get(lot, lot), "bays": total, "reporting": reporting,
         "share": round(reporting / total, 3) if total else None}
        for lot, (total, reporting) in sorted(counts.items())
    ]


def _gateway(gateway) -> dict:
    """The gateway's queue, commit latency and the database's reachability."""
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - any failure means unreachable, as /healthz says
        db.session.rollback()
        database = "unavailable"
    if gateway is None or gateway.writer is None:
        return {"running": False, "database": database}
    stats = gateway.writer.stats
    return {
        "running": True,
        "database": database,
        "storing": "ok" if gateway.writer.available else "storage_unavailable",
        "sensor_auth": "oscore" if gateway.require_oscore else "none",
        "queue": gateway.writer.queued,
        "commit_ms_mean": round(stats.commit_seconds / stats.groups * 1000, 1) if stats.groups else None,
        "commit_ms_max": round(stats.commit_max * 1000, 1),
        "answered": dict(gateway.answers),
    }
