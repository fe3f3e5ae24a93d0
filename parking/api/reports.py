"""Hourly utilization per lot and the planners' reports: summary, pattern, CSV and XLSX."""
from __future__ import annotations

import io
from dataclasses import asdict

from flask import Response, request, stream_with_context
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields
from sqlalchemy import select
from werkzeug.wsgi import wrap_file

from ..extensions import Blueprint, db
from ..models import Lot
from ..reports import BUSY_PCT, csv_lines, hour_row, lots_in_order, pattern, summarize
from ..rollup import utilization
from ..workbook import MAX_HOURLY_ROWS, hourly_row_count, write_workbook
from .common import lot_id_field, lot_or_404
from .ranges import RangeArgsSchema, hour_range

blp = Blueprint("reports", __name__, url_prefix="/api", description="Hourly utilization and reports")

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReportArgsSchema(RangeArgsSchema):
    """Lots (repeat `lot`; none means every lot) and the date range."""

    lot = fields.List(lot_id_field(), load_default=list)


class HourRowSchema(Schema):
    """One local hour of one lot."""

    hour = fields.String(metadata={"description": "local hour start, ISO 8601 with offset"})
    occupancy_pct = fields.Float(allow_none=True)
    peak_occupied = fields.Integer()
    arrivals = fields.Integer()
    coverage_pct = fields.Float(allow_none=True)  # null: no bay, or an hour not begun
    bays = fields.Integer()


class UtilizationSchema(Schema):
    """A lot's hourly utilization."""

    lot = fields.String()
    timezone = fields.String()
    rows = fields.List(fields.Nested(HourRowSchema))


class LotSummarySchema(Schema):
    """Summary figures of one lot over the range."""

    lot = fields.String()
    name = fields.String()
    bays = fields.Integer()
    mean_occupancy_pct = fields.Float(allow_none=True)
    peak_hour = fields.String(allow_none=True)
    peak_hour_occupancy_pct = fields.Float(allow_none=True)
    busy_hours = fields.Integer(metadata={"description": "hours with occupancy above busy_pct"})
    arrivals = fields.Integer()
    mean_dwell_minutes = fields.Float(allow_none=True)
    median_dwell_minutes = fields.Float(allow_none=True)
    completed_stays = fields.Integer()
    turnover_per_bay_per_day = fields.Float(allow_none=True)
    coverage_pct = fields.Float(allow_none=True)


class SummarySchema(Schema):
    """Summaries of the chosen lots."""

    from_ = fields.String(data_key="from")
    to = fields.String()
    busy_pct = fields.Float(metadata={"description": "the occupancy % above which an hour is busy"})
    lots = fields.List(fields.Nested(LotSummarySchema))


class DayRowSchema(Schema):
    """One local day of the chosen lots together."""

    date = fields.String()
    mean_pct = fields.Float(allow_none=True)
    peak_pct = fields.Float(allow_none=True)
    coverage_pct = fields.Float(allow_none=True)


class PatternSchema(Schema):
    """Weekday × hour heatmap and the daily line of the chosen lots together."""

    lots = fields.List(fields.String())
    from_ = fields.String(data_key="from")
    to = fields.String()
    timezone = fields.String()
    heatmap = fields.List(fields.List(fields.Float(allow_none=True)))
    daily = fields.List(fields.Nested(DayRowSchema))


def chosen_lots(ids: list[str]) -> list[Lot]:
    """The lots named (404 naming the unknown ones), or every lot when none is named."""
    if not ids:
        return list(db.session.scalars(select(Lot).order_by(Lot.id)))
    found = {lot.id: lot for lot in db.session.scalars(select(Lot).where(Lot.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        abort(404, message=f"lot: unknown lot {', '.join(missing)}")
    return lots_in_order(found[i] for i in dict.fromkeys(ids))


def _selection(args):
    """The chosen lots and per-lot range functions (dates are each lot's own local midnight).

    Every lot's range is resolved here, before a streamed answer starts: a range that cannot be
    reported is a 400 now, never a download cut off after its 200."""
    lots = chosen_lots(args["lot"])
    ranges = {lot.id: hour_range(args, lot.timezone) for lot in lots}
    return lots, lambda lot: ranges[lot.id][0], lambda lot: ranges[lot.id][1]


def _attachment(args, ext: str) -> str:
    """A download file name naming the range."""
    name = f"utilization-{args['from']}-{args['to']}.{ext}"
    return "attachment; filename=\"" + "".join(c for c in name if c.isalnum() or c in "-_.") + '"'


@blp.route("/lots/<lot_id>/utilization")
class UtilizationView(MethodView):
    """Hourly utilization of one lot."""

    @blp.arguments(RangeArgsSchema, location="query")
    @blp.response(200, UtilizationSchema)
    def get(self, args, lot_id):
        """One row per local hour in [from, to): occupancy, peak, arrivals, coverage."""
        lot = lot_or_404(lot_id)
        start, end = hour_range(args, lot.timezone)
        rows = [hour_row(f, lot.timezone) for f in utilization(lot, start, end)]
        return {"lot": lot.id, "timezone": lot.timezone, "rows": rows}


@blp.route("/reports/summary")
class SummaryView(MethodView):
    """Summary figures per lot."""

    @blp.arguments(ReportArgsSchema, location="query")
    @blp.response(200, SummarySchema)
    def get(self, args):
        """Mean and peak occupancy, busy hours, arrivals, dwell, turnover and coverage per lot."""
        lots, start_for, end_for = _selection(args)
        return {
            "from_": args["from"],
            "to": args["to"],
            "busy_pct": BUSY_PCT,
            "lots": [asdict(summarize(lot, start_for(lot), end_for(lot))) for lot in lots],
        }


@blp.route("/reports/pattern")
class PatternView(MethodView):
    """The weekly pattern."""

    @blp.arguments(ReportArgsSchema, location="query")
    @blp.response(200, PatternSchema)
    def get(self, args):
        """Occupancy by weekday and hour of day, and the daily mean and peak, over the lots."""
        lots, start_for, end_for = _selection(args)
        return {"lots": [l.id for l in lots], "from_": args["from"], "to": args["to"],
                **pattern(lots, start_for, end_for)}


@blp.route("/reports/utilization.csv")
class UtilizationCsvView(MethodView):
    """Hourly utilization as CSV."""

    @blp.arguments(ReportArgsSchema, location="query")
    @blp.response(200, content_type="text/csv")
    def get(self, args):
        """The hourly rows of the lots with lot_id and lot_name in front (streamed download)."""
        lots, start_for, end_for = _selection(args)
        return Response(
            stream_with_context(csv_lines(lots, start_for, end_for)),
            mimetype="text/csv",
            headers={"Content-Disposition": _attachment(args, "csv")},
        )


@blp.route("/reports/utilization.xlsx")
class UtilizationXlsxView(MethodView):
    """Hourly utilization as a workbook."""

    @blp.arguments(ReportArgsSchema, location="query")
    @blp.response(200, content_type=XLSX_TYPE)
    def get(self, args):
        """An hourly sheet, a summary sheet per lot and a chart of daily occupancy."""
        lots, start_for, end_for = _selection(args)
        rows = hourly_row_count(lots, start_for, end_for)
        if rows > MAX_HOURLY_ROWS:
            abort(400, message=f"the workbook would have {rows:,} hourly rows, more than a worksheet's "
                               f"{MAX_HOURLY_ROWS:,}: choose fewer lots or a shorter range, or take the CSV")
        # Built whole before the answer starts, in a temporary file, then sent from it in chunks:
        # a failure is still an error answer, and memory stays flat.
        body = write_workbook(lots, start_for, end_for)
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        return Response(wrap_file(request.environ, body), mimetype=XLSX_TYPE, direct_passthrough=True,
                        headers={"Content-Disposition": _attachment(args, "xlsx"), "Content-Length": str(size)})
