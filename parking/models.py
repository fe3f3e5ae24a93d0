"""The database tables: lots, bays with their current state, readings, and the hourly rollup.

Instants are Unix seconds (UTC, float) throughout; see docs/architecture.md. Nothing here stores
anything about people or vehicles: only bay states.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

ID_LENGTH = 64


class Lot(db.Model):
    """A car park, surface lot or on-street segment, as imported from the lot file."""

    __tablename__ = "lots"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(300))
    url: Mapped[str | None] = mapped_column(String(500))
    opening_hours: Mapped[str | None] = mapped_column(String(200))
    # ISO 3166-2 subdivision whose holidays shape the forecast; None: PARKING_REGION.
    region: Mapped[str | None] = mapped_column(String(16))
    park_and_ride: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    geometry: Mapped[dict[str, Any]] = mapped_column(JSON)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    bays: Mapped[list[Bay]] = relationship(back_populates="lot", order_by="Bay.id")


class Bay(db.Model):
    """One parking bay with its sensor's current state (kept in step by parking.ingest)."""

    __tablename__ = "bays"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), index=True)
    # The newest reading by ts: its state and time, and the receipt time of the newest message.
    state: Mapped[bool | None] = mapped_column(Boolean)
    last_ts: Mapped[float | None] = mapped_column(Float)
    state_since: Mapped[float | None] = mapped_column(Float)
    last_seen: Mapped[float | None] = mapped_column(Float)
    battery: Mapped[int | None] = mapped_column(Integer)

    lot: Mapped[Lot] = relationship(back_populates="bays")


class StoredReading(db.Model):
    """One stored sensor reading. Never updated or deleted; ordered by ts, then id."""

    __tablename__ = "readings"
    __table_args__ = (
        # A retransmission or replay (same bay, ts and state) is stored once.
        # Also the index every look-up of a bay's history uses (bay, then time).
        UniqueConstraint("bay_id", "ts", "occupied", name="uq_readings_bay_ts_state"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    bay_id: Mapped[str] = mapped_column(ForeignKey("bays.id"))
    ts: Mapped[float] = mapped_column(Float)
    occupied: Mapped[bool] = mapped_column(Boolean)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[float] = mapped_column(Float)


class BayRun(db.Model):
    """A stretch of one bay's compacted history: readings of one state, each within `stale_after`
    of the one before, folded into their first and last instants (parking.compaction).

    Together with the raw readings not yet folded, runs say exactly what the raw readings said
    for every figure of contract §5 (the rule is `occupancy.fold`); a raw reading is either in
    `readings` or counted in one run, never both.
    """

    __tablename__ = "bay_runs"
    __table_args__ = (Index("ix_bay_runs_bay_ts", "bay_id", "ts"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    bay_id: Mapped[str] = mapped_column(ForeignKey("bays.id"))
    ts: Mapped[float] = mapped_column(Float)  # the first reading's ts
    last_ts: Mapped[float] = mapped_column(Float)  # the last reading's ts: the run is known until last_ts + stale_after
    occupied: Mapped[bool] = mapped_column(Boolean)
    readings: Mapped[int] = mapped_column(Integer)  # how many stored readings the run stands for


class HourlyUtilization(db.Model):
    """Rolled-up figures of one lot in one local hour; percentages are derived from the sums."""

    __tablename__ = "hourly_utilization"

    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), primary_key=True)
    hour_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bays: Mapped[int] = mapped_column(Integer)
    occupied_seconds: Mapped[float] = mapped_column(Float)
    known_seconds: Mapped[float] = mapped_column(Float)
    peak_occupied: Mapped[int] = mapped_column(Integer)
    arrivals: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[float] = mapped_column(Float)


class RollupDirty(db.Model):
    """An hour that a stored reading touched and whose rollup must be recomputed."""

    __tablename__ = "rollup_dirty"

    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), primary_key=True)
    hour_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Bumped on every re-mark, so a rollup deletes the mark only if nothing touched it meanwhile.
    version: Mapped[int] = mapped_column(Integer, default=1)


class ForecastCurve(db.Model):
    """A lot's newest forecast: occupied bays in 15-minute steps for the next day (parking.forecasting)."""

    __tablename__ = "forecast_curves"

    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"), primary_key=True)
    generated_at: Mapped[float] = mapped_column(Float)
    capacity: Mapped[int] = mapped_column(Integer)
    # Why there is no forecast (too little history), or None.
    reason: Mapped[str | None] = mapped_column(String(300))
    # [[ts, occupied, low, high], ...] in ts order; empty when `reason` is set.
    steps: Mapped[list[Any]] = mapped_column(JSON)


class ForecastCheck(db.Model):
    """A forecast the system made for one horizon, and (once the time has come) what happened."""

    __tablename__ = "forecast_checks"
    __table_args__ = (UniqueConstraint("lot_id", "made_at", "horizon", name="uq_forecast_checks_made"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    lot_id: Mapped[str] = mapped_column(ForeignKey("lots.id"))
    made_at: Mapped[float] = mapped_column(Float)
    horizon: Mapped[int] = mapped_column(Integer)  # seconds
    target_at: Mapped[float] = mapped_column(Float, index=True)
    capacity: Mapped[int] = mapped_column(Integer)
    occupied: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    actual: Mapped[float | None] = mapped_column(Float)  # occupied bays seen at target_at


class SensorCredential(db.Model):
    """One sensor's OSCORE security context (RFC 8613) and the bays it may report (contract §7).

    `kid` is the sensor's Sender ID, the key id the gateway finds the context by (unique index);
    `gateway_id` the gateway's Sender ID in this context. The master secret is wiped on
    revocation. `replay_index` / `replay_bits` are the gateway's replay window for the sensor's
    sequence numbers (aiocoap's ReplayWindow state), written in the same commit as the readings
    they let through, so that a replay is refused after a restart too.
    """

    __tablename__ = "sensor_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sensor_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    kid: Mapped[bytes] = mapped_column(LargeBinary(7), unique=True)
    gateway_id: Mapped[bytes] = mapped_column(LargeBinary(7))
    secret: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    salt: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    replay_index: Mapped[int] = mapped_column(BigInteger, default=0)
    replay_bits: Mapped[int] = mapped_column(BigInteger, default=0)

    bays: Mapped[list[CredentialBay]] = relationship(order_by="CredentialBay.bay_id", cascade="all, delete-orphan")


class CredentialBay(db.Model):
    """A bay a credential's sensor may report."""

    __tablename__ = "credential_bays"

    credential_id: Mapped[int] = mapped_column(ForeignKey("sensor_credentials.id"), primary_key=True)
    bay_id: Mapped[str] = mapped_column(ForeignKey("bays.id"), primary_key=True, index=True)


__all__ = ["Lot", "Bay", "StoredReading", "BayRun", "HourlyUtilization", "RollupDirty", "ForecastCurve", "ForecastCheck",
           "SensorCredential", "CredentialBay"]
