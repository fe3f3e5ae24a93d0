"""Lots as GeoJSON: the live list, one lot with its bays, the events export and the admin import."""
from __future__ import annotations

import csv
import io
import re
import time

from flask import Response, current_app, request, stream_with_context
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, ValidationError, fields, validate, validates
from sqlalchemy import select

from ..auth import require_admin
from ..lot_list import encode_collection, lot_list
from ..extensions import Blueprint, ErrorSchema, db
from ..forecasting import forecast_at
from ..lots import FeatureSchema, LotFileError, import_lots
from ..models import Bay, Lot
from ..history import lot_stream, states_before
from ..occupancy import changes_by_bay
from ..timefmt import iso_utc
from .common import is_lot_id, lot_or_404
from .ranges import DATETIME_PATTERN, RangeArgsSchema, resolve_range

FORECAST_AHEAD = 24 * 3600

blp = Blueprint("lots", __name__, url_prefix="/api/lots", description="Lots and their live state")


_LON = r"-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)"
_LAT = r"-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?)"
# Four plain decimals in range (no nan, inf, exponents or spaces): what the OpenAPI document says.
BBOX_RE = re.compile(f"{_LON},{_LAT},{_LON},{_LAT}")
BBOX_HELP = "minlon,minlat,maxlon,maxlat: decimal degrees, min ≤ max"


class LotsQueryArgsSchema(Schema):
    """Filters of the lot list."""

    bbox = fields.String(metadata={"description": BBOX_HELP, "pattern": f"^{BBOX_RE.pattern}$"})
    park_and_ride = fields.Boolean(metadata={"description": "only park-and-ride lots"})
    min_free = fields.Integer(validate=validate.Range(min=0))
    at = fields.AwareDateTime(
        metadata={"description": "ISO 8601 datetime with offset, up to 24 h ahead: adds properties.forecast",
                  "pattern": DATETIME_PATTERN}
    )

    @validates("at")
    def _at(self, value, **kwargs) -> None:
        """Between now (a few minutes of clock skew allowed) and 24 h ahead."""
        ahead = value.timestamp() - time.time()
        if not -300 <= ahead <= FORECAST_AHEAD:
            raise ValidationError("must be between now and 24 hours ahead")

    @validates("bbox")
    def _bbox(self, value: str, **kwargs) -> None:
        """Four numbers in range, min before max."""
        parse_bbox(value)


def parse_bbox(value: str) -> tuple[float, float, float, float]:
    """minlon,minlat,maxlon,maxlat as floats; ValidationError when malformed."""
    if not BBOX_RE.fullmatch(value):
        raise ValidationError(f"bbox must be {BBOX_HELP}")
    minlon, minlat, maxlon, maxlat = (float(p) for p in value.split(","))
    if minlon > maxlon or minlat > maxlat:
        raise ValidationError(f"bbox must be {BBOX_HELP}")
    return minlon, minlat, maxlon, maxlat


LOT_FILE_BODY = {
    "required": True,
    "description": "A GeoJSON FeatureCollection, one Feature per lot (contract §2). Also refused: a bay "
                   "in two lots, a lot id twice, a bay that already belongs to another lot.",
    "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["type", "features"],
        "properties": {"type": {"type": "string", "enum": ["FeatureCollection"]},
                       "features": {"type": "array", "items": FeatureSchema}},
    }}},
}


class FeatureCollectionSchema(Schema):
    """A GeoJSON FeatureCollection of lots."""

    type = fields.String(dump_default="FeatureCollection")
    features = fields.List(fields.Dict())


class ImportResultSchema(Schema):
    """What an import changed."""

    lots_added = fields.Integer()
    lots_updated = fields.Integer()
    bays_added = fields.Integer()


@blp.route("")
class LotsView(MethodView):
    """The lot list."""

    @blp.arguments(LotsQueryArgsSchema, location="query")
    @blp.response(200, FeatureCollectionSchema)
    def get(self, args):
        """Every lot with its free, occupied and unknown bays now (a snapshot at most
        LOTS_SNAPSHOT_SECONDS old: see parking.lot_list)."""
        snapshot = lot_list(current_app).get()
        if not args:  # the map's request: the whole collection, encoded once per snapshot
            return Response(snapshot.body, mimetype="application/json")
        features = list(snapshot.features.values())
        if "bbox" in args:
            minlon, minlat, maxlon, maxlat = parse_bbox(args["bbox"])
            features = [f for f in features
                        if minlon <= f["geometry"]["coordinates"][0] <= maxlon
                        and minlat <= f["geometry"]["coordinates"][1] <= maxlat]
        if args.get("park_and_ride"):
            features = [f for f in features if f["properties"]["park_and_ride"]]
        if "min_free" in args:
            features = [f for f in features if f["properties"]["free"] >= args["min_free"]]
        if "at" in args:
            features = with_forecasts(features, args["at"].timestamp())
        return Response(encode_collection(features), mimetype="application/json")

    @require_admin
    @blp.response(200, ImportResultSchema)
    @blp.alt_response(400, schema=ErrorSchema, description="not a valid lot file: the message names feature and field")
    @blp.alt_response(401, schema=ErrorSchema, description="no or a wrong bearer token")
    @blp.alt_response(403, schema=ErrorSchema, description="admin writes are off (no PARKING_ADMIN_TOKEN)")
    @blp.alt_response(413, schema=ErrorSchema, description="the body is over the size limit")
    @blp.doc(security=[{"bearerAuth": []}], requestBody=LOT_FILE_BODY)
    def post(self):
        """Import or update lots from a GeoJSON FeatureCollection (admin; contract §2)."""
        doc = request.get_json(silent=True)
        if doc is None:
            abort(400, message="the body must be a GeoJSON FeatureCollection (application/json)")
        try:
            result = import_lots(doc, current_app.config["TIMEZONE"])
        except LotFileError as exc:
            abort(400, message=exc.message)
        lot_list(current_app).clear()
        return result


def with_forecasts(features: list[dict], at: float) -> list[dict]:
    """Copies of the features with properties.forecast for `at` (contract §6; null without one)."""
    lots = db.session.scalars(select(Lot).where(Lot.id.in_([f["id"] for f in features]))).all()
    found = forecast_at(list(lots), at, time.time())
    return [{**f, "properties": {**f["properties"], "forecast": found.get(f["id"])}} for f in features]


@blp.route("/<lot_id>")
class LotView(MethodView):
    """One lot."""

    @blp.response(200)
    def get(self, lot_id):
        """The lot with the status of each of its bays (from the same snapshot as the list)."""
        body = lot_list(current_app).detail(lot_id) if is_lot_id(lot_id) else None
        if body is None:
            abort(404, message=f"unknown lot: {lot_id}")
        return Response(body, mimetype="application/json")


@blp.route("/<lot_id>/events.csv")
class LotEventsView(MethodView):
    """Raw state changes of a lot's bays."""

    @blp.arguments(RangeArgsSchema, location="query")
    @blp.response(200, content_type="text/csv")
    def get(self, args, lot_id):
        """Every stored reading that changed a bay's state, in ts order (CSV)."""
        lot = lot_or_404(lot_id)
        start, end = resolve_range(args, lot.timezone)
        filename = f"events-{lot.id}-{args['from']}-{args['to']}.csv".replace(":", "")
        return Response(
            stream_with_context(_event_rows(lot.id, start, end)),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def _event_rows(lot_id: str, start: float, end: float):
    """CSV lines of state changes (`occupancy.changes_by_bay`) in [start, end); each bay's state
    before start decides whether its first reading in the range is one."""
    previous: dict[str, bool | None] = dict(states_before(lot_id, start))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["bay_id", "ts", "occupied"])
    for chunk in lot_stream(lot_id, start, end):
        for bay_id, ts, occupied in changes_by_bay(chunk, previous):
            writer.writerow([bay_id, iso_utc(ts), "true" if occupied else "false"])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
