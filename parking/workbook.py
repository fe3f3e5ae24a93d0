"""The XLSX report: an hourly sheet, a summary sheet per lot with a daily table and a native chart.

Written with openpyxl's write-only mode: rows go to temporary files as they are made and each
lot's figures are dropped once its rows and its summary sheet are written, so memory stays flat
however long the range (a year of the sample city is 113,880 rows: docs/benchmarks.md). Hours and
dates are real spreadsheet date-times in the lot's local time (a spreadsheet has no time zones;
the UTC offset beside each hour tells the two 02:00 hours of a fall-back night apart).
"""
from __future__ import annotations

import datetime as dt
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from typing import IO
from zoneinfo import ZoneInfo

# openpyxl is imported where a workbook is written, not here: it takes a quarter of a second to
# import, and every process that builds the app (the gateway's writer process, each command)
# would pay it without ever writing a workbook.

from .models import Lot
from .occupancy import HOUR, HourFigures, local_midnight
from .reports import BUSY_PCT, daily_rows, summarize
from .rollup import utilization_of_lots

# A worksheet holds 1,048,576 rows; the hourly sheet's first one is its header.
MAX_HOURLY_ROWS = 1_048_575
HOUR_FORMAT = "yyyy-mm-dd hh:mm"
DATE_FORMAT = "yyyy-mm-dd"
HOURLY_COLUMNS = [  # (header, column width)
    ("Lot id", 18), ("Lot", 32), ("Hour (local time)", 18), ("UTC offset", 11), ("Occupancy (%)", 15),
    ("Peak occupied bays", 19), ("Arrivals", 10), ("Coverage (%)", 14), ("Bays", 8),
]
SUMMARY_LABELS = [
    ("mean_occupancy_pct", "Mean occupancy (%)"),
    ("peak_hour", "Peak hour (local time)"),
    ("peak_hour_occupancy_pct", "Peak hour occupancy (%)"),
    ("busy_hours", f"Hours above {BUSY_PCT:g} %"),
    ("arrivals", "Arrivals"),
    ("mean_dwell_minutes", "Mean dwell of completed stays (min)"),
    ("median_dwell_minutes", "Median dwell of completed stays (min)"),
    ("completed_stays", "Completed stays"),
    ("turnover_per_bay_per_day", "Turnover (arrivals per bay per day)"),
    ("coverage_pct", "Coverage (% of bay-time with a known state)"),
    ("bays", "Bays"),
]


def hourly_row_count(lots: Sequence[Lot], start_for, end_for) -> int:
    """Rows the hourly sheet would get: one per local hour of each lot in its range."""
    return sum(max(0, math.ceil((end_for(lot) - start_for(lot)) / HOUR)) for lot in lots)


def write_workbook(lots: Sequence[Lot], start_for, end_for) -> IO[bytes]:
    """The whole workbook in a temporary file, positioned at its start (the caller closes it)."""
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    hourly = wb.create_sheet("Hourly")
    hourly.freeze_panes = "A2"
    for index, (_, width) in enumerate(HOURLY_COLUMNS):
        hourly.column_dimensions[get_column_letter(index + 1)].width = width
    hourly.append([_bold(hourly, header) for header, _ in HOURLY_COLUMNS])
    used: set[str] = set()
    for lot, figures in utilization_of_lots(lots, start_for, end_for):
        _hourly_rows(hourly, lot, figures)
        _summary_sheet(wb, lot, figures, start_for(lot), end_for(lot), used)
    out = tempfile.TemporaryFile()
    wb.save(out)
    out.seek(0)
    return out


def describe_range(start: float, end: float, tz: str) -> str:
    """The range as a person reads it: whole local days by their dates, else from … until …."""
    zone = ZoneInfo(tz)
    first, last = (dt.datetime.fromtimestamp(t, zone) for t in (start, end))
    if local_midnight(first.date(), zone) == start and local_midnight(last.date(), zone) == end:
        final = (last - dt.timedelta(days=1)).date()
        days = (final - first.date()).days + 1
        if days == 1:
            return f"{_day(first.date())}, local time ({tz})"
        return f"{_day(first.date())} to {_day(final)} ({days} days), local time ({tz})"
    return f"From {_day(first.date())} {first:%H:%M} until {_day(last.date())} {last:%H:%M}, local time ({tz})"


def _day(day: dt.date) -> str:
    """'Sunday 29 March 2026'."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def _bold(ws, value, size: float | None = None) -> WriteOnlyCell:
    """A header cell."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    cell = WriteOnlyCell(ws, value)
    cell.font = Font(bold=True, size=size)
    return cell


def _formatted(ws, value, number_format: str) -> WriteOnlyCell:
    """A cell shown with that number format (a date-time, a date)."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value)
    cell.number_format = number_format
    return cell


def _local(ts: float, zone: dt.tzinfo) -> tuple[dt.datetime, str]:
    """Local wall-clock time without zone (what a spreadsheet holds) and its UTC offset as text."""
    moment = dt.datetime.fromtimestamp(ts, zone)
    offset = moment.isoformat()[-6:]  # "+01:00"
    return moment.replace(tzinfo=None), offset


def _hourly_rows(ws, lot: Lot, figures: Sequence[HourFigures]) -> None:
    """One row per hour of the lot."""
    zone = ZoneInfo(lot.timezone)
    # One styled cell for every row's hour: append() writes a row out before it returns, so the
    # cell can take the next value (a new cell and style look-up per row cost a fifth of the time).
    hour_cell = _formatted(ws, None, HOUR_FORMAT)
    for f in figures:
        hour_cell.value, offset = _local(f.hour_start, zone)
        ws.append([lot.id, lot.name, hour_cell, offset, f.occupancy_pct,
                   f.peak_occupied, f.arrivals, f.coverage_pct, f.bays])


def _sheet_title(lot: Lot, used: set[str]) -> str:
    """A unique sheet name of at most 31 characters without the characters Excel forbids."""
    base = re.sub(r"[\[\]:*?/\\]", "-", f"Summary {lot.id}")[:31]
    name, n = base, 2
    while name in used:
        name = f"{base[:28]}~{n}"
        n += 1
    used.add(name)
    return name


def _summary_sheet(wb, lot: Lot, figures, start: float, end: float, used: set[str]) -> None:
    """Summary figures, a daily table and a line chart of daily mean and peak occupancy."""
    from openpyxl.chart import LineChart, Reference

    ws = wb.create_sheet(_sheet_title(lot, used))
    ws.column_dimensions["A"].width = 42
    ws.column_dimensions["B"].width = 26
    summary = asdict(summarize(lot, start, end, figures))
    if summary["peak_hour"] is not None:
        summary["peak_hour"] = _formatted(ws, dt.datetime.fromisoformat(summary["peak_hour"]).replace(tzinfo=None),
                                          HOUR_FORMAT)
    ws.append([_bold(ws, f"{lot.name} ({lot.id})", size=13)])
    ws.append([describe_range(start, end, lot.timezone)])
    ws.append([])
    for key, label in SUMMARY_LABELS:
        ws.append([label, summary[key]])
    ws.append([])
    first = len(SUMMARY_LABELS) + 5  # the daily table's header row
    ws.append([_bold(ws, text) for text in
               ("Date", "Mean occupancy (%)", "Peak hour occupancy (%)", f"{BUSY_PCT:g} % line")])
    days = daily_rows(figures, lot.timezone)
    for day in days:
        ws.append([_formatted(ws, dt.date.fromisoformat(day["date"]), DATE_FORMAT),
                   day["mean_pct"], day["peak_pct"], BUSY_PCT])
    if days:
        last = first + len(days)
        chart = LineChart()
        chart.title = "Daily occupancy"
        chart.y_axis.title = "%"
        chart.y_axis.scaling.min = 0
        chart.y_axis.scaling.max = 100
        chart.x_axis.number_format = "d mmm"
        chart.height, chart.width = 8, 18
        chart.add_data(Reference(ws, min_col=2, max_col=4, min_row=first, max_row=last), titles_from_data=True)
        chart.set_categories(Reference(ws, min_col=1, min_row=first + 1, max_row=last))
        ws.add_chart(chart, f"F{first}")
    ws.close()  # written out now: a sheet per lot must not keep a file open each
