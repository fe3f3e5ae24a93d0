"""Shared pieces of the API: lot look-up (the date-range arguments live in .ranges)."""
from __future__ import annotations

from flask_smorest import abort
from marshmallow import fields

from ..extensions import db
from ..models import Lot
from ..validation import IdFormat, is_id


def lot_id_field(**kwargs) -> fields.String:
    """A lot id argument: refused with 400 unless of the id pattern (it is published with it)."""
    return fields.String(validate=IdFormat(), **kwargs)


def is_lot_id(text: str) -> bool:
    """Whether the text can be a lot id at all: anything else names no lot and is never sent to
    the database (PostgreSQL refuses text with NUL characters outright)."""
    return is_id(text)


def lot_or_404(lot_id: str) -> Lot:
    """The lot with that id; aborts with 404 naming it when there is none (or it cannot be one)."""
    lot = db.session.get(Lot, lot_id) if is_lot_id(lot_id) else None
    if lot is None:
        abort(404, message=f"unknown lot: {lot_id}")
    return lot
