"""GET /healthz: the state of each part; 503 when the database is unreachable."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify
from sqlalchemy import func, select, text

from ..extensions import db
from ..models import Bay, RollupDirty

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Database reachability, newest reading, pending rollup hours, registered parts."""
    parts: dict = {}
    try:
        db.session.execute(text("SELECT 1"))
        newest = db.session.scalar(select(func.max(Bay.last_seen)))
        pending = db.session.scalar(select(func.count()).select_from(RollupDirty))
        parts["database"] = {"status": "ok", "dialect": db.engine.dialect.name}
        parts["readings"] = {
            "newest_received_age_s": None if newest is None else round(time.time() - newest, 1)
        }
        parts["rollup"] = {"pending_hours": pending}
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
        db.session.rollback()
        parts["database"] = {"status": "unavailable", "error": type(exc).__name__}
        return jsonify({"status": "unavailable", "parts": parts}), 503
    for name, probe in current_app.extensions.get("parking_parts", {}).items():
        parts[name] = probe()
    return jsonify({"status": "ok", "parts": parts}), 200
