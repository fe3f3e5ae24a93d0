"""Forecasts of a lot (contract §6): the next hours in 15-minute steps, and how good they were.

Both read what the scheduler stored (parking/forecasting.py); nothing is computed per request.
"""
from __future__ import annotations

import time

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from ..extensions import Blueprint
from ..forecasting import accuracy, forecast_rows
from .common import lot_or_404

blp = Blueprint("forecast", __name__, url_prefix="/api/lots", description="Forecasts of free spaces")


class ForecastArgsSchema(Schema):
    """How far ahead."""

    hours = fields.Integer(load_default=24, validate=validate.Range(min=1, max=24))


class AccuracyArgsSchema(Schema):
    """Over how many past days."""

    days = fields.Integer(load_default=28, validate=validate.Range(min=1, max=90))


@blp.route("/<lot_id>/forecast")
class ForecastView(MethodView):
    """A lot's forecast."""

    @blp.arguments(ForecastArgsSchema, location="query")
    @blp.response(200)
    def get(self, args, lot_id):
        """Expected free spaces with an 80 % band, in 15-minute steps from now to `hours` ahead."""
        return forecast_rows(lot_or_404(lot_id), args["hours"], time.time())


@blp.route("/<lot_id>/forecast/accuracy")
class AccuracyView(MethodView):
    """How good a lot's forecasts were."""

    @blp.arguments(AccuracyArgsSchema, location="query")
    @blp.response(200)
    def get(self, args, lot_id):
        """MAE (bays, % of capacity) and share inside the band at 1, 3 and 24 h, from stored forecasts."""
        return accuracy(lot_or_404(lot_id), args["days"], time.time())
