"""The operators' listing: sensors silent past stale_after, never seen, or low on battery."""
from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields

from ..extensions import Blueprint
from ..sensors import sensor_report
from .common import lot_id_field, lot_or_404

blp = Blueprint("sensors", __name__, url_prefix="/api/sensors", description="Sensor health for operators")


class SensorArgsSchema(Schema):
    """Which sensors to list."""

    lot = lot_id_field(metadata={"description": "only this lot"})
    all = fields.Boolean(load_default=False, metadata={"description": "every sensor, not only problems"})


class SensorSchema(Schema):
    """One sensor's health."""

    bay = fields.String()
    lot = fields.String()
    problem = fields.String(allow_none=True, metadata={"description": "silent, never_seen, low_battery or null"})
    last_seen = fields.String(allow_none=True)
    silent_for_s = fields.Integer(allow_none=True)
    battery = fields.Integer(allow_none=True)


@blp.route("")
class SensorsView(MethodView):
    """Sensors needing attention."""

    @blp.arguments(SensorArgsSchema, location="query")
    @blp.response(200, SensorSchema(many=True))
    def get(self, args):
        """Sensors that are silent, never seen or low on battery (all with all=true)."""
        if args.get("lot"):
            lot_or_404(args["lot"])
        return sensor_report(only_problems=not args["all"], lot_id=args.get("lot"))
