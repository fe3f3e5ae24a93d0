"""One JSON error shape for HTTP: {"code", "status", "message"}, and a 500 handler that rolls back."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .extensions import db
from .validation import describe_errors

log = logging.getLogger(__name__)


def error_response(code: int, message: str, headers: dict | None = None):
    """The JSON error body every HTTP error uses."""
    from werkzeug.http import HTTP_STATUS_CODES

    body = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Error"), "message": message}
    return jsonify(body), code, headers or {}


def init_app(app: Flask) -> None:
    """Register handlers so HTML error pages never reach API clients."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # flask-smorest puts argument errors in exc.data["messages"]; fold them into the message.
        messages = getattr(exc, "data", {}).get("messages") if hasattr(exc, "data") else None
        message = exc.description or exc.name
        if messages:
            message = _describe(messages)
        elif getattr(exc, "data", None) and exc.data.get("message"):
            message = exc.data["message"]
        elif isinstance(exc, RequestEntityTooLarge):
            message = f"the request body is larger than this server's limit of {app.config['MAX_CONTENT_LENGTH']:,} bytes"
        return error_response(exc.code or 500, message, _kept_headers(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        db.session.rollback()
        if isinstance(exc, _database_errors()):
            log.warning("database unavailable: %s", exc)
            return error_response(503, "the database is unavailable; try again shortly")
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal error")


def _kept_headers(exc: HTTPException) -> dict:
    """Headers an error answer owes its client: a 405's Allow (RFC 9110 §15.5.6) and whatever the
    raiser asked for (`abort(401, headers={"WWW-Authenticate": ...})`)."""
    kept = {k: v for k, v in exc.get_headers() if k == "Allow"}
    data = getattr(exc, "data", None)
    if isinstance(data, dict) and isinstance(data.get("headers"), dict):
        kept.update(data["headers"])
    return kept


def _database_errors():
    """Errors that mean the database cannot be reached (answer 503, not 500)."""
    from sqlalchemy.exc import DisconnectionError, OperationalError

    return (OperationalError, DisconnectionError)


def _describe(messages) -> str:
    """flask-smorest's {location: {field: [msg]}} as 'field: msg; …' naming each argument
    (`parking.validation`; the location, query or json, goes without saying)."""
    return "; ".join(
        describe_errors(fields if isinstance(fields, dict) else {location: fields})
        for location, fields in messages.items()
    )
