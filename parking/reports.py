"""Planners' reports on top of `parking.rollup.utilization`: rows, summaries, patterns, CSV, XLSX.

Every figure is derived from the hourly raw sums (occupied and known seconds), so totals over
many hours or lots are time-weighted, never averages of percentages.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import current_app

from .models import Lot
from .occupancy import HourFigures, hour_label, percent, stays
from .rollup import hourly_rows_of_lots, lot_readings, utilization, utilization_of_lots

# An hour of a lot is busy above this occupancy: the summaries count such hours, the XLSX charts
# the line, and the planners' page outlines and draws it (it gets the figure from pages.py).
BUSY_PCT = 85.0
CSV_COLUMNS = [
    "lot_id", "lot_name", "hour", "occupancy_pct", "peak_occupied", "arrivals", "coverage_pct", "bays",
]


def hour_row(f: HourFigures, tz: str) -> dict:
    """One hour as the API's JSON row."""
    return {
        "hour": hour_label(f.hour_start, tz),
        "occupancy_pct": f.occupancy_pct,
        "peak_occupied": f.peak_occupied,
        "arrivals": f.arrivals,
        "coverage_pct": f.coverage_pct,
        "bays": f.bays,
    }


@dataclass
class LotSummary:
    """The summary figures of one lot over a range."""

    lot: str
    name: str
    bays: int
    mean_occupancy_pct: float | None
    peak_hour: str | None
    peak_hour_occupancy_pct: float | None
    busy_hours: int  # hours with occupancy above BUSY_PCT
    arrivals: int
    mean_dwell_minutes: float | None
    median_dwell_minutes: float | None
    completed_stays: int
    turnover_per_bay_per_day: float | None
    coverage_pct: float | None


def summarize(lot: Lot, start: float, end: float, figures: Sequence[HourFigures] | None = None) -> LotSummary:
    """Mean and peak occupancy, busy hours, arrivals, dwell and turnover of one lot."""
    figures = utilization(lot, start, end) if figures is None else figures
    occupied = sum(f.occupied_seconds for f in figures)
    known = sum(f.known_seconds for f in figures)
    capacity = sum(f.bays * f.span_seconds for f in figures)
    rated = [f for f in figures if f.occupancy_pct is not None]
    peak = max(rated, key=lambda f: (f.occupancy_pct, -f.hour_start), default=None)
    durations = _dwell_minutes(lot.id, start, end)
    bays = figures[-1].bays if figures else 0
    days = max((min(end, time.time()) - start) / 86400, 0)
    arrivals = sum(f.arrivals for f in figures)
    return LotSummary(
        lot=lot.id,
        name=lot.name,
        bays=bays,
        mean_occupancy_pct=percent(occupied, known),
        peak_hour=hour_label(peak.hour_start, lot.timezone) if peak else None,
        peak_hour_occupancy_pct=peak.occupancy_pct if peak else None,
        busy_hours=sum(1 for f in rated if f.occupancy_pct > BUSY_PCT),
        arrivals=arrivals,
        mean_dwell_minutes=round(statistics.fmean(durations), 1) if durations else None,
        median_dwell_minutes=round(statistics.median(durations), 1) if durations else None,
        completed_stays=len(durations),
        turnover_per_bay_per_day=round(arrivals / bays / days, 2) if bays and days >= 1 / 24 else None,
        coverage_pct=percent(known, capacity),
    )


def _dwell_minutes(lot_id: str, start: float, end: float) -> list[float]:
    """Durations of stays that began (an arrival) in [start, end) and completed before `end`."""
    stale = float(current_app.config["STALE_AFTER"])
    minutes = []
    for readings in lot_readings(lot_id, start - stale, end).values():
        minutes.extend((b - a) / 60 for a, b in stays(readings, stale) if start <= a < end)
    return minutes


def merge_lots(per_lot: Iterable[Sequence[HourFigures]]) -> list[HourFigures]:
    """Several lots' hours as one: sums per hour instant (peaks add up as an upper bound)."""
    merged: dict[float, HourFigures] = {}
    for figures in per_lot:
        for f in figures:
            m = merged.get(f.hour_start)
            if m is None:
                merged[f.hour_start] = HourFigures(
                    f.hour_start, f.bays, f.occupied_seconds, f.known_seconds,
                    f.span_seconds, f.peak_occupied, f.arrivals,
                )
                continue
            # Spans differ only in the unfinished hour; weight capacity by each lot's own span.
            capacity = m.bays * m.span_seconds + f.bays * f.span_seconds
            m.bays += f.bays
            m.span_seconds = capacity / m.bays if m.bays else 0.0
            m.occupied_seconds += f.occupied_seconds
            m.known_seconds += f.known_seconds
            m.peak_occupied += f.peak_occupied
            m.arrivals += f.arrivals
    return [merged[h] for h in sorted(merged)]


def daily_rows(figures: Sequence[HourFigures], tz: str) -> list[dict]:
    """Per local day: time-weighted mean occupancy, the highest hourly occupancy, coverage."""
    zone = ZoneInfo(tz)
    days: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    for f in figures:
        date = dt.datetime.fromtimestamp(f.hour_start, zone).date().isoformat()
        day = days.setdefault(date, [0.0, 0.0, 0.0])
        day[0] += f.occupied_seconds
        day[1] += f.known_seconds
        day[2] += f.bays * f.span_seconds
        if f.occupancy_pct is not None:
            peaks[date] = max(peaks.get(date, f.occupancy_pct), f.occupancy_pct)
    return [
        {"date": date, "mean_pct": percent(occ, known), "peak_pct": peaks.get(date), "coverage_pct": percent(known, cap)}
        for date, (occ, known, cap) in sorted(days.items())
    ]


def heatmap(figures: Sequence[HourFigures], tz: str) -> list[list[float | None]]:
    """Time-weighted occupancy by local weekday (0 = Monday) and hour of day."""
    zone = ZoneInfo(tz)
    cells = defaultdict(lambda: [0.0, 0.0])
    for f in figures:
        local = dt.datetime.fromtimestamp(f.hour_start, zone)
        cell = cells[(local.weekday(), local.hour)]
        cell[0] += f.occupied_seconds
        cell[1] += f.known_seconds
    return [[percent(*cells[(wd, h)]) for h in range(24)] for wd in range(7)]


def pattern(lots: Sequence[Lot], start_for, end_for) -> dict:
    """Heatmap and daily line over the lots, in the first lot's time zone (a city shares one)."""
    merged = merge_lots(figures for _, figures in utilization_of_lots(lots, start_for, end_for))
    tz = lots[0].timezone if lots else "UTC"
    return {"timezone": tz, "heatmap": heatmap(merged, tz), "daily": daily_rows(merged, tz)}


def csv_lines(lots: Sequence[Lot], start_for, end_for) -> Iterator[str]:
    """The hourly CSV, streamed a lot at a time (figures come a batch of lots at a time)."""
    yield ",".join(CSV_COLUMNS) + "\n"
    for lot, rows in hourly_rows_of_lots(lots, start_for, end_for):
        # Only the two text cells can need quoting; every other cell is a number or an ISO time.
        prefix = _csv_cells(lot.id, lot.name)
        tz = lot.timezone
        # Plain tuples and f-strings rather than HourFigures and round(): this loop runs 720,000
        # times for a month of a 1,000-lot city (docs/benchmarks.md). `_pct_cell` gives exactly
        # the text of HourFigures' percentages (tests/test_reports.py proves it).
        yield "".join([
            f"{prefix},{hour_label(h, tz)},{_pct_cell(occupied, known)},{peak},{arrivals},"
            f"{_pct_cell(known, bays * span)},{bays}\n"
            for h, bays, occupied, known, span, peak, arrivals in rows
        ])


def _pct_cell(part: float, whole: float) -> str:
    """`occupancy.percent` as CSV text: one decimal, empty when whole is 0 (no figure).

    '%.1f' rounds the exact binary value half-to-even, as round(x, 1) does, so this is the text
    of `occupancy.percent` without building the rounded float."""
    return f"{100.0 * part / whole:.1f}" if whole > 0 else ""


def _csv_cells(*values: str) -> str:
    """Text cells quoted as the csv module does, joined without the line end."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def lots_in_order(lots: Iterable[Lot]) -> list[Lot]:
    """Lots sorted by id, the order of every report."""
    return sorted(lots, key=lambda l: l.id)
