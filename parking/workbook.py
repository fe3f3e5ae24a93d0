"""The XLSX report: an hourly sheet, a summary sheet per lot with a daily table and a native chart."""
from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import asdict

from openpyxl import Workbook
from openpyxl.chart import LineChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from .models import Lot
from .occupancy import HourFigures
from .reports import BUSY_PCT, CSV_COLUMNS, daily_rows, hour_row, summarize
from .rollup import utilization_of_lots

SUMMARY_LABELS = [
    ("mean_occupancy_pct", "Mean occupancy (%)"),
    ("peak_hour", "Peak hour"),
    ("peak_hour_occupancy_pct", "Peak hour occupancy (%)"),
    ("hours_above_85", f"Hours above {BUSY_PCT:.0f} %"),
    ("arrivals", "Arrivals"),
    ("mean_dwell_minutes", "Mean dwell of completed stays (min)"),
    ("median_dwell_minutes", "Median dwell of completed stays (min)"),
    ("completed_stays", "Completed stays"),
    ("turnover_per_bay_per_day", "Turnover (arrivals per bay per day)"),
    ("coverage_pct", "Coverage (% of bay-time with a known state)"),
    ("bays", "Bays"),
]


def build_workbook(lots: Sequence[Lot], start_for, end_for, title: str) -> bytes:
    """The whole workbook as bytes."""
    wb = Workbook()
    hourly = wb.active
    hourly.title = "Hourly"
    hourly.append(CSV_COLUMNS)
    for cell in hourly[1]:
        cell.font = Font(bold=True)
    per_lot: list[tuple[Lot, list[HourFigures]]] = []
    for lot, figures in utilization_of_lots(lots, start_for, end_for):
        per_lot.append((lot, figures))
        for f in figures:
            row = hour_row(f, lot.timezone)
            hourly.append([lot.id, lot.name] + [row[c] for c in CSV_COLUMNS[2:]])
    hourly.freeze_panes = "A2"
    for col, width in zip("ABCDEFGH", (18, 32, 27, 15, 14, 10, 14, 8)):
        hourly.column_dimensions[col].width = width
    used: set[str] = set()
    for lot, figures in per_lot:
        _summary_sheet(wb, lot, figures, start_for(lot), end_for(lot), title, used)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _sheet_title(lot: Lot, used: set[str]) -> str:
    """A unique sheet name of at most 31 characters without the characters Excel forbids."""
    base = re.sub(r"[\[\]:*?/\\]", "-", f"Summary {lot.id}")[:31]
    name, n = base, 2
    while name in used:
        name = f"{base[:28]}~{n}"
        n += 1
    used.add(name)
    return name


def _summary_sheet(wb: Workbook, lot: Lot, figures, start: float, end: float, title: str, used: set[str]) -> None:
    """Summary figures, a daily table and a line chart of daily mean and peak occupancy."""
    ws = wb.create_sheet(_sheet_title(lot, used))
    summary = asdict(summarize(lot, start, end, figures))
    ws.append([f"{lot.name} ({lot.id})"])
    ws["A1"].font = Font(bold=True, size=13)
    ws.append([title])
    ws.append([])
    for key, label in SUMMARY_LABELS:
        ws.append([label, summary[key]])
    ws.column_dimensions["A"].width = 42
    ws.column_dimensions["B"].width = 26

    first = ws.max_row + 2
    ws.cell(first, 1, "Date").font = Font(bold=True)
    ws.cell(first, 2, "Mean occupancy (%)").font = Font(bold=True)
    ws.cell(first, 3, "Peak hour occupancy (%)").font = Font(bold=True)
    ws.cell(first, 4, f"{BUSY_PCT:.0f} % line").font = Font(bold=True)
    row = first
    for day in daily_rows(figures, lot.timezone):
        row += 1
        ws.cell(row, 1, day["date"])
        ws.cell(row, 2, day["mean_pct"])
        ws.cell(row, 3, day["peak_pct"])
        ws.cell(row, 4, BUSY_PCT)
    if row == first:
        return
    chart = LineChart()
    chart.title = "Daily occupancy"
    chart.y_axis.title = "%"
    chart.y_axis.scaling.min = 0
    chart.y_axis.scaling.max = 100
    chart.height, chart.width = 8, 18
    data = Reference(ws, min_col=2, max_col=4, min_row=first, max_row=row)
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=first + 1, max_row=row))
    ws.add_chart(chart, f"{get_column_letter(6)}{first}")
