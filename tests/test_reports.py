"""Utilization JSON, CSV, XLSX, summary and pattern over HTTP, with exact local-hour calendars."""
import csv
import datetime as dt
import io
import zipfile
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from .hypothesis_profiles import examples
from openpyxl import load_workbook

from parking.ingest import SensorReading, ingest
from parking.occupancy import coverage_pct, local_midnight, occupancy_pct
from parking.reports import _pct_cell
from parking.rollup import run_rollup

SPRING = local_midnight(__import__("datetime").date(2026, 3, 29), "Europe/Berlin")


def test_spring_forward_day_has_23_rows(city, client):
    body = client.get("/api/lots/GARAGE/utilization?from=2026-03-29&to=2026-03-30").json
    assert body["lot"] == "GARAGE" and body["timezone"] == "Europe/Berlin"
    hours = [r["hour"] for r in body["rows"]]
    assert len(hours) == 23
    assert hours[:4] == ["2026-03-29T00:00:00+01:00", "2026-03-29T01:00:00+01:00",
                         "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


def test_fall_back_day_has_25_rows(city, client):
    rows = client.get("/api/lots/GARAGE/utilization?from=2026-10-25&to=2026-10-26").json["rows"]
    hours = [r["hour"] for r in rows]
    assert len(hours) == 25
    assert hours[2:4] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]


def test_utilization_numbers(city, client):
    # 01:00-02:00 local on 29 March: GAR-001 occupied 01:00-01:30, free 01:30-02:00 (stale 1800).
    h1 = SPRING + 3600
    ingest([SensorReading("GAR-001", False, h1 - 60), SensorReading("GAR-001", True, h1),
            SensorReading("GAR-001", False, h1 + 1800)], now=h1 + 86400)
    rows = client.get("/api/lots/GARAGE/utilization?from=2026-03-29T01:00:00%2B01:00"
                      "&to=2026-03-29T03:00:00%2B02:00").json["rows"]
    assert len(rows) == 1
    assert rows[0] == {"hour": "2026-03-29T01:00:00+01:00", "occupancy_pct": 50.0, "peak_occupied": 1,
                       "arrivals": 1, "coverage_pct": 16.7, "bays": 6}


@pytest.mark.parametrize(
    "query, status, names",
    [
        ("from=2026-03-30&to=2026-03-29", 400, "from"),
        ("from=yesterday&to=2026-03-29", 400, "from"),
        ("from=2026-03-29T00:00:00&to=2026-03-30", 400, "from"),  # no offset
        ("to=2026-03-29", 400, "from"),
        ("from=2026-03-29", 400, "to"),
    ],
)
def test_bad_range_arguments(city, client, query, status, names):
    response = client.get(f"/api/lots/GARAGE/utilization?{query}")
    assert response.status_code == status
    assert response.json["code"] == status and names in response.json["message"]


def test_unknown_lot_in_reports(city, client):
    response = client.get("/api/reports/utilization.csv?lot=GARAGE&lot=NOPE&from=2026-03-29&to=2026-03-30")
    assert response.status_code == 404 and "NOPE" in response.json["message"]
    assert client.get("/api/lots/NOPE/utilization?from=2026-03-29&to=2026-03-30").status_code == 404


def _day_of_readings():
    for i, bay in enumerate(["GAR-001", "GAR-002", "PRW-001"]):
        t = SPRING + 8 * 3600 + i * 300
        ingest([SensorReading(bay, False, t), SensorReading(bay, True, t + 600), SensorReading(bay, True, t + 1800),
                SensorReading(bay, False, t + 3000)], now=SPRING + 3 * 86400)


def test_csv_for_several_lots(city, client):
    _day_of_readings()
    response = client.get("/api/reports/utilization.csv?lot=GARAGE&lot=PR-WEST&from=2026-03-29&to=2026-03-30")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    assert list(rows[0]) == ["lot_id", "lot_name", "hour", "occupancy_pct", "peak_occupied",
                             "arrivals", "coverage_pct", "bays"]
    assert len(rows) == 46 and {r["lot_id"] for r in rows} == {"GARAGE", "PR-WEST"}
    json_rows = client.get("/api/lots/GARAGE/utilization?from=2026-03-29&to=2026-03-30").json["rows"]
    for row, expected in zip([r for r in rows if r["lot_id"] == "GARAGE"], json_rows):
        assert row["hour"] == expected["hour"] and row["lot_name"] == "Garage Mitte"
        assert row["occupancy_pct"] == ("" if expected["occupancy_pct"] is None else str(expected["occupancy_pct"]))
        assert int(row["arrivals"]) == expected["arrivals"]


def test_csv_without_lot_means_every_lot(city, client):
    """Every lot, in id order, each with its 23 hours of the spring-forward day and its own figures."""
    _day_of_readings()
    response = client.get("/api/reports/utilization.csv?from=2026-03-29&to=2026-03-30")
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    assert [r["lot_id"] for r in rows] == ["GARAGE"] * 23 + ["PR-WEST"] * 23 + ["STREET"] * 23
    for lot, name, bays in (("GARAGE", "Garage Mitte", 6), ("PR-WEST", "P+R West", 4), ("STREET", "Gesandtenstraße", 2)):
        lot_rows = [r for r in rows if r["lot_id"] == lot]
        json_rows = client.get(f"/api/lots/{lot}/utilization?from=2026-03-29&to=2026-03-30").json["rows"]
        assert [r["hour"] for r in lot_rows] == [r["hour"] for r in json_rows]
        assert {r["lot_name"] for r in lot_rows} == {name} and {r["bays"] for r in lot_rows} == {str(bays)}
    nine = {r["lot_id"]: r for r in rows if r["hour"] == "2026-03-29T09:00:00+02:00"}
    # GAR-001 occupied 09:10-09:50 of a known hour, GAR-002 09:15-09:55 of 09:05-10:00 (4,800 of 6,900 s);
    # PRW-001 09:20-10:00 of 09:10-10:00; STREET heard nothing.
    assert (nine["GARAGE"]["occupancy_pct"], nine["GARAGE"]["arrivals"], nine["GARAGE"]["peak_occupied"]) == ("69.6", "2", "2")
    assert nine["GARAGE"]["coverage_pct"] == "31.9"  # 6,900 of 6 × 3,600 bay-seconds
    assert (nine["PR-WEST"]["occupancy_pct"], nine["PR-WEST"]["arrivals"], nine["PR-WEST"]["coverage_pct"]) == ("80.0", "1", "20.8")
    assert (nine["STREET"]["occupancy_pct"], nine["STREET"]["coverage_pct"]) == ("", "0.0")
    assert sum(int(r["arrivals"]) for r in rows) == 3


def _workbook(client, query):
    response = client.get(f"/api/reports/utilization.xlsx?{query}")
    assert response.status_code == 200 and response.data[:2] == b"PK", response.data[:300]
    assert response.headers["Content-Length"] == str(len(response.data))
    response.close()  # a WSGI server closes the answer: that closes its temporary file
    return load_workbook(io.BytesIO(response.data))


def test_summary_and_xlsx_agree(city, client):
    _day_of_readings()
    query = "lot=GARAGE&from=2026-03-29&to=2026-03-30"
    summary = client.get(f"/api/reports/summary?{query}").json["lots"][0]
    assert summary["arrivals"] == 2 and summary["completed_stays"] == 2
    assert summary["mean_dwell_minutes"] == 40.0 and summary["median_dwell_minutes"] == 40.0
    assert summary["peak_hour"] == "2026-03-29T09:00:00+02:00"  # 8 h after midnight on a 23-hour day
    wb = _workbook(client, query)
    assert wb.sheetnames == ["Hourly", "Summary GARAGE"]
    hourly = list(wb["Hourly"].values)
    assert hourly[0] == ("Lot id", "Lot", "Hour (local time)", "UTC offset", "Occupancy (%)",
                         "Peak occupied bays", "Arrivals", "Coverage (%)", "Bays")
    assert len(hourly) == 1 + 23
    json_rows = client.get(f"/api/lots/GARAGE/utilization?from=2026-03-29&to=2026-03-30").json["rows"]
    for row, expected in zip(hourly[1:], json_rows):
        local = dt.datetime.fromisoformat(expected["hour"])
        assert row == ("GARAGE", "Garage Mitte", local.replace(tzinfo=None), expected["hour"][-6:],
                       expected["occupancy_pct"], expected["peak_occupied"], expected["arrivals"],
                       expected["coverage_pct"], expected["bays"])
    sheet = wb["Summary GARAGE"]
    values = {row[0]: row[1] for row in sheet.iter_rows(min_row=4, max_row=14, values_only=True)}
    assert values["Mean occupancy (%)"] == summary["mean_occupancy_pct"]
    assert values["Peak hour (local time)"] == dt.datetime(2026, 3, 29, 9, 0)
    assert values["Arrivals"] == summary["arrivals"]
    assert values["Mean dwell of completed stays (min)"] == 40.0
    assert sheet["A2"].value == "Sunday 29 March 2026, local time (Europe/Berlin)"
    assert sheet["A16"].value == "Date" and sheet["A17"].value == dt.datetime(2026, 3, 29)
    assert len(sheet._charts) == 1


def test_workbook_cells_are_numbers_and_dates(city, client):
    """Hours and dates are spreadsheet date-times with a date format, figures are numbers:
    what a planner can sort, filter and chart (not text that looks like it)."""
    _day_of_readings()
    wb = _workbook(client, "lot=GARAGE&lot=PR-WEST&from=2026-10-25&to=2026-10-27")
    rows = list(wb["Hourly"].iter_rows(min_row=2))
    assert len(rows) == 2 * (25 + 24)
    for row in rows:
        hour, offset = row[2], row[3]
        assert hour.is_date and hour.data_type == "d" and hour.number_format == "yyyy-mm-dd hh:mm"
        assert isinstance(hour.value, dt.datetime) and offset.value in ("+01:00", "+02:00")
        assert all(c.data_type == "n" for c in row[5:])
        assert row[4].value is None or row[4].data_type == "n"
    # The fall-back night: two 02:00 hours, told apart by their offsets.
    twos = [(r[2].value, r[3].value) for r in rows[:25] if r[2].value.hour == 2]
    assert twos == [(dt.datetime(2026, 10, 25, 2), "+02:00"), (dt.datetime(2026, 10, 25, 2), "+01:00")]
    sheet = wb["Summary PR-WEST"]
    dates = [c for c in sheet["A"][16:] if c.value is not None]
    assert [c.value for c in dates] == [dt.datetime(2026, 10, 25), dt.datetime(2026, 10, 26)]
    assert all(c.is_date and c.number_format == "yyyy-mm-dd" for c in dates)
    assert sheet["A2"].value == "Sunday 25 October 2026 to Monday 26 October 2026 (2 days), local time (Europe/Berlin)"
    texts = [c.value for ws in wb for r in ws.iter_rows() for c in r if isinstance(c.value, str)]
    assert not any("exclusive" in t for t in texts)


def test_workbook_hours_are_stored_as_serial_numbers(city, client):
    """In the file itself (not only as openpyxl reads it back): the hour cells are numbers with a
    date style, the serial days since 1899-12-30 that Excel and LibreOffice compute with."""
    response = client.get("/api/reports/utilization.xlsx?lot=GARAGE&from=2026-03-29&to=2026-03-30")
    body = response.data
    response.close()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        sheet = ElementTree.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    cells = {c.get("r"): c for c in sheet.iterfind(".//m:c", ns)}
    first, second = cells["C2"], cells["C3"]
    assert first.get("t") in (None, "n") and first.get("s") not in (None, "0")
    assert float(first.find("m:v", ns).text) == (dt.datetime(2026, 3, 29) - dt.datetime(1899, 12, 30)).days
    assert float(second.find("m:v", ns).text) == pytest.approx(float(first.find("m:v", ns).text) + 1 / 24)


def test_workbook_title_of_a_range_of_hours(city, client):
    wb = _workbook(client, "lot=STREET&from=2026-03-29T08:00:00%2B02:00&to=2026-03-29T10:30:00%2B02:00")
    assert wb["Summary STREET"]["A2"].value == (
        "From Sunday 29 March 2026 08:00 until Sunday 29 March 2026 10:30, local time (Europe/Berlin)")
    assert [r[2] for r in wb["Hourly"].iter_rows(min_row=2, values_only=True)] == [
        dt.datetime(2026, 3, 29, 8), dt.datetime(2026, 3, 29, 9), dt.datetime(2026, 3, 29, 10)]


def test_workbook_over_a_worksheets_rows_is_refused(city, client, monkeypatch):
    from parking.api import reports as reports_api

    monkeypatch.setattr(reports_api, "MAX_HOURLY_ROWS", 3 * 24 - 1)
    response = client.get("/api/reports/utilization.xlsx?from=2026-03-30&to=2026-03-31")
    assert response.status_code == 400 and "72 hourly rows" in response.json["message"]
    assert _workbook(client, "lot=GARAGE&lot=STREET&from=2026-03-30&to=2026-03-31").sheetnames[0] == "Hourly"


def test_pattern(city, client):
    """The heatmap cells and the daily line, time-weighted over the chosen lots together."""
    _day_of_readings()
    body = client.get("/api/reports/pattern?lot=GARAGE&from=2026-03-29&to=2026-03-30").json
    assert body["lots"] == ["GARAGE"] and body["timezone"] == "Europe/Berlin"
    assert len(body["heatmap"]) == 7 and all(len(day) == 24 for day in body["heatmap"])
    sunday = body["heatmap"][6]
    # 09:00: 4,800 occupied of 6,900 known bay-seconds; 10:00: free until the readings go stale.
    assert sunday[9] == 69.6 and sunday[10] == 0.0
    assert [h for h, cell in enumerate(sunday) if cell is not None] == [9, 10]
    assert all(cell is None for day in body["heatmap"][:6] for cell in day)
    # The day: 4,800 of 9,600 known seconds; coverage 9,600 of 6 bays × 23 hours.
    assert body["daily"] == [{"date": "2026-03-29", "mean_pct": 50.0, "peak_pct": 69.6, "coverage_pct": 1.9}]
    both = client.get("/api/reports/pattern?lot=PR-WEST&lot=GARAGE&from=2026-03-29&to=2026-03-30").json
    assert both["lots"] == ["GARAGE", "PR-WEST"]
    # PRW-001 adds 2,400 occupied of 3,000 known seconds at 09:00 and 1,800 free ones at 10:00:
    # 7,200 of 14,400 known, of 10 bays × 23 hours.
    assert both["heatmap"][6][9] == 72.7 and both["heatmap"][6][10] == 0.0
    assert both["daily"] == [{"date": "2026-03-29", "mean_pct": 50.0, "peak_pct": 72.7, "coverage_pct": 1.7}]


@settings(max_examples=examples(300), deadline=None)
@given(whole=st.one_of(st.integers(0, 3600 * 500), st.floats(0, 3600 * 500)), share=st.floats(0, 1))
def test_csv_percent_text_is_the_rounded_figure(whole, share):
    part = whole * share
    occupancy = occupancy_pct(part, whole)
    assert _pct_cell(part, whole) == ("" if occupancy is None else str(occupancy))
    bays, span = 100, whole / 100
    coverage = coverage_pct(part, bays, span)
    assert _pct_cell(part, bays * span) == ("" if coverage is None else str(coverage))


def test_csv_rows_equal_json_rows_stored_fresh_and_empty(city, client):
    """Every cell of the CSV is the JSON row's value, for hours read from the stored aggregates
    (after a rollup), computed on the fly (dirty) and with nothing known."""
    _day_of_readings()
    run_rollup()
    ingest([SensorReading("GAR-003", True, SPRING + 12 * 3600)], now=SPRING + 3 * 86400)  # one dirty hour again
    query = "lot=GARAGE&lot=PR-WEST&from=2026-03-29&to=2026-03-30"
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/reports/utilization.csv?{query}").data.decode())))
    checked = 0
    for lot in ("GARAGE", "PR-WEST"):
        json_rows = client.get(f"/api/lots/{lot}/utilization?from=2026-03-29&to=2026-03-30").json["rows"]
        csv_rows = [r for r in rows if r["lot_id"] == lot]
        assert len(csv_rows) == len(json_rows) == 23
        for row, expected in zip(csv_rows, json_rows):
            for column, value in expected.items():
                assert row[column] == ("" if value is None else str(value)), (lot, column)
                checked += 1
    assert checked == 2 * 23 * 6


def test_the_busy_threshold_is_the_servers_in_summary_and_planner_page(city, client, monkeypatch):
    """One busy threshold: the summary counts hours above it and says which it is, and the
    planners' page is handed the same figure (planner.js draws and outlines by it)."""
    _day_of_readings()
    query = "lot=GARAGE&from=2026-03-29&to=2026-03-30"
    body = client.get(f"/api/reports/summary?{query}").json
    assert body["busy_pct"] == 85.0 and body["lots"][0]["busy_hours"] == 0  # the peak hour is 69.6 %
    for module in ("parking.reports", "parking.api.reports", "parking.pages"):  # each takes reports'
        monkeypatch.setattr(f"{module}.BUSY_PCT", 60.0)
    body = client.get(f"/api/reports/summary?{query}").json
    assert body["busy_pct"] == 60.0 and body["lots"][0]["busy_hours"] == 1
    page = client.get("/planner").get_data(as_text=True)
    assert 'data-busy-pct="60"' in page and "above 60 %" in page and "85" not in page
