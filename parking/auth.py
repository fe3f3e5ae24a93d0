"""Admin authentication: a bearer token from PARKING_ADMIN_TOKEN; no token configured, no writes."""
from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request
from flask_smorest import abort


def require_admin(view):
    """Decorator: 401 without the right bearer token, 403 when writes are switched off."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        token = current_app.config.get("ADMIN_TOKEN")
        if not token:
            abort(403, message="admin writes are disabled: no PARKING_ADMIN_TOKEN is configured")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            abort(401, message="a valid 'Authorization: Bearer <admin token>' header is required",
                  headers={"WWW-Authenticate": 'Bearer realm="parking admin"'})
        return view(*args, **kwargs)

    return wrapper
