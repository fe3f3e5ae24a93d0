"""Shared pieces of the API: date-range arguments and lot look-up."""
from __future__ import annotations

import datetime as dt

from flask_smorest import abort
from marshmallow import Schema, ValidationError, fields, validates_schema

from ..extensions import db
from ..models import Lot
from ..occupancy import local_midnight

MAX_RANGE_DAYS = 3 * 366


def parse_instant(value: str, tz_name: str) -> float:
    """An ISO date (local midnight in tz_name) or an ISO datetime with offset, as Unix seconds."""
    value = value.strip()
    if len(value) == 10:
        return local_midnight(dt.date.fromisoformat(value), tz_name)
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("a datetime needs an offset, e.g. 2026-03-29T00:00:00+01:00")
    return moment.timestamp()


def _check(value: str) -> None:
    """Validate a from/to value with a zone-independent parse."""
    try:
        parse_instant(value, "UTC")
    except ValueError as exc:
        raise ValidationError(
            str(exc) if "offset" in str(exc) else "must be an ISO date (2026-03-29) or datetime with offset"
        ) from exc


class RangeArgsSchema(Schema):
    """`from` (inclusive) and `to` (exclusive): ISO dates mean local midnight of the lot."""

    start = fields.String(data_key="from", required=True, validate=_check)
    end = fields.String(data_key="to", required=True, validate=_check)

    @validates_schema
    def _ordered(self, data: dict, **kwargs) -> None:
        """from must be before to, and the range not absurdly long."""
        if "start" not in data or "end" not in data:
            return
        start, end = parse_instant(data["start"], "UTC"), parse_instant(data["end"], "UTC")
        if start >= end:
            raise ValidationError("'from' must be before 'to'", "from")
        if end - start > MAX_RANGE_DAYS * 86400:
            raise ValidationError(f"the range may span at most {MAX_RANGE_DAYS} days", "to")

    def load(self, data, *args, **kwargs):
        """Keep the original text under 'from'/'to' too (for file names)."""
        loaded = super().load(data, *args, **kwargs)
        loaded["from"], loaded["to"] = loaded["start"], loaded["end"]
        return loaded


def resolve_range(args: dict, tz_name: str) -> tuple[float, float]:
    """The [from, to) of parsed arguments as Unix seconds in a lot's time zone."""
    return parse_instant(args["start"], tz_name), parse_instant(args["end"], tz_name)


def lot_or_404(lot_id: str) -> Lot:
    """The lot with that id; aborts with 404 naming it when there is none."""
    lot = db.session.get(Lot, lot_id)
    if lot is None:
        abort(404, message=f"unknown lot: {lot_id}")
    return lot
