"""Settings: one class reading environment variables, each with a default that works on one machine."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Relative SQLite paths are taken from here (the checkout), never from the working directory,
# so a process supervisor starting us elsewhere opens the same database.
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_DATABASE_URL = "sqlite:///instance/parking.db"  # <PROJECT_DIR>/instance: Flask's instance folder
DEFAULT_LOTS_FILE = PACKAGE_DIR / "data" / "regensburg.geojson"


def _env_int(name: str, default: int) -> int:
    """Read an integer setting, failing loudly on a typo rather than silently using the default."""
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


class Config:
    """Production defaults, overridable per setting by environment variables (contract §1)."""

    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    HTTP_HOST = os.environ.get("PARKING_HTTP_HOST", "127.0.0.1")
    HTTP_PORT = _env_int("PARKING_HTTP_PORT", 8000)
    COAP_HOST = os.environ.get("PARKING_COAP_HOST", "127.0.0.1")
    COAP_PORT = _env_int("PARKING_COAP_PORT", 5683)
    LOTS_FILE = os.environ.get("PARKING_LOTS_FILE", str(DEFAULT_LOTS_FILE))
    TIMEZONE = os.environ.get("PARKING_TIMEZONE", "Europe/Berlin")
    # ISO 3166-2 subdivision whose public and school holidays shape forecasts (a lot may name its own).
    REGION = os.environ.get("PARKING_REGION", "DE-BY")
    STALE_AFTER = _env_int("PARKING_STALE_AFTER", 1800)
    # A sensor's reading may be this many days old (a buffer kept through an outage); older ones
    # are refused (contract §3). History an operator loads (the simulator's backfill) is not bound.
    MAX_BACKLOG_DAYS = _env_int("PARKING_MAX_BACKLOG_DAYS", 30)
    # Raw readings are kept this many days, then folded into runs (parking/compaction.py): a late
    # reading within this window lands exactly, so it should be at least MAX_BACKLOG_DAYS.
    RAW_RETENTION_DAYS = _env_int("PARKING_RAW_RETENTION_DAYS", 31)
    # Seconds between compaction runs of the scheduler (each folds what has settled since).
    COMPACT_INTERVAL = _env_int("PARKING_COMPACT_INTERVAL", 3600)
    # No token configured means admin writes are off, never open.
    ADMIN_TOKEN = os.environ.get("PARKING_ADMIN_TOKEN") or None
    # "oscore" (the default): readings only from sensors holding their own OSCORE context
    # (contract §7; the simulator provisions its sensors, so `make demo` runs protected);
    # "none": unprotected readings accepted (a closed network), said so in the gateway's log.
    SENSOR_AUTH = os.environ.get("PARKING_SENSOR_AUTH", "oscore")
    TILE_URL = os.environ.get("PARKING_TILE_URL", "")
    TILE_ATTRIBUTION = os.environ.get(
        "PARKING_TILE_ATTRIBUTION", "&copy; OpenStreetMap contributors"
    )
    LOW_BATTERY = _env_int("PARKING_LOW_BATTERY", 20)
    ROLLUP_INTERVAL = _env_int("PARKING_ROLLUP_INTERVAL", 60)
    # Seconds between forecast runs (every lot's forecaster brought up to date; parking/forecasting.py).
    FORECAST_INTERVAL = _env_int("PARKING_FORECAST_INTERVAL", 120)
    # GET /api/lots answers from a snapshot refreshed in the background at most this often
    # (seconds; 0: count on every request). See parking/lot_list.py.
    LOTS_SNAPSHOT_SECONDS = _env_int("PARKING_LOTS_SNAPSHOT_SECONDS", 2)
    # Open data (docs/open-data.md): who publishes the feeds, and the language of lot names.
    PUBLISHER = os.environ.get("PARKING_PUBLISHER", "parking-occupancy")
    OPEN_DATA_LANG = os.environ.get("PARKING_OPEN_DATA_LANG", "de")
    REGION = os.environ.get("PARKING_REGION", "DE-BY")

    # Largest HTTP request body (bytes) before a 413 (README); the biggest body is a lot file
    # import, and a city's lots with all their bay ids fit in a few MB.
    MAX_CONTENT_LENGTH = _env_int("PARKING_MAX_REQUEST_BYTES", 16 * 1024 * 1024)

    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

    API_TITLE = "Parking occupancy"
    API_VERSION = "1.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api"
    OPENAPI_JSON_PATH = "openapi.json"
    JSON_SORT_KEYS = False


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (a wildcard: loopback),
    bracketed when it is an IPv6 address, as URIs and HOST:PORT want it."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def coap_target(config) -> str:
    """HOST:PORT of the gateway the settings describe, as a client on this machine reaches it."""
    return f"{client_host(config['COAP_HOST'])}:{config['COAP_PORT']}"


def settings_from(config: dict | None) -> dict:
    """The Config class as a dict, with a test mapping applied on top."""
    values = {k: getattr(Config, k) for k in dir(Config) if k.isupper()}
    values.update(config or {})
    return values
