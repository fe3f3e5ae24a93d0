"""GET /healthz: the state of each part; 503 when the database is unreachable or not answering.

The database check runs on a thread of its own and is given `DEADLINE` seconds: a database that
has gone silent with its connection open answers 503 in time instead of holding the probe (and
the load balancer asking it). One check at a time per app: while one is still stuck, the next
probe answers 503 at once rather than stacking up another thread.
"""
from __future__ import annotations

import threading
import time

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import func, select, text

from ..extensions import db
from ..models import Bay, RollupDirty

bp = Blueprint("health", __name__)

# Seconds the database check may take; the whole answer stays well under 2 s.
DEADLINE = 1.5


@bp.get("/healthz")
def healthz():
    """Database reachability, newest reading, pending rollup hours, registered parts."""
    parts: dict = {}
    checked = _checker(current_app._get_current_object()).check()
    if "error" in checked:
        parts["database"] = {"status": "unavailable", "error": checked["error"]}
        return jsonify({"status": "unavailable", "parts": parts}), 503
    parts.update(checked)
    for name, probe in current_app.extensions.get("parking_parts", {}).items():
        parts[name] = probe()
    return jsonify({"status": "ok", "parts": parts}), 200


def _database_parts() -> dict:
    """The database's parts of the answer (inside an app context); raises when it is unreachable."""
    db.session.execute(text("SELECT 1"))
    newest = db.session.scalar(select(func.max(Bay.last_seen)))
    pending = db.session.scalar(select(func.count()).select_from(RollupDirty))
    return {
        "database": {"status": "ok", "dialect": db.engine.dialect.name},
        "readings": {"newest_received_age_s": None if newest is None else round(time.time() - newest, 1)},
        "rollup": {"pending_hours": pending},
    }


class _Checker:
    """Runs `_database_parts` on a daemon thread, at most one at a time, and waits `DEADLINE` for it."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    def check(self) -> dict:
        """The database's parts, or {"error": <what went wrong>}."""
        with self._lock:
            if self._running is not None and self._running.is_alive():
                return {"error": "NotAnswering"}  # the previous check is still waiting
            result: dict = {}
            thread = threading.Thread(target=self._run, args=(result,), name="healthz", daemon=True)
            self._running = thread
            thread.start()
        thread.join(DEADLINE)
        if thread.is_alive():
            return {"error": "NotAnswering"}
        return result

    def _run(self, result: dict) -> None:
        with self.app.app_context():
            try:
                result.update(_database_parts())
            except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
                result.clear()
                result["error"] = type(exc).__name__
            finally:
                db.session.remove()


def _checker(app: Flask) -> _Checker:
    """The app's one checker."""
    checker = app.extensions.get("parking_health")
    if checker is None:
        checker = app.extensions.setdefault("parking_health", _Checker(app))
    return checker
