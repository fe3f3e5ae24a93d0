"""Shared pieces of the API: lot look-up (the date-range arguments live in .ranges)."""
from __future__ import annotations

from flask_smorest import abort

from ..extensions import db
from ..models import Lot


def lot_or_404(lot_id: str) -> Lot:
    """The lot with that id; aborts with 404 naming it when there is none."""
    lot = db.session.get(Lot, lot_id)
    if lot is None:
        abort(404, message=f"unknown lot: {lot_id}")
    return lot
