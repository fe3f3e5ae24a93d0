"""The planners' page (`/planner`) in a real browser: Debian's Chromium driven by Playwright against
the real app over loopback, with history stored through the one write path. Every request to a
host other than 127.0.0.1 is aborted, so these tests also prove the page needs no internet.

Locally the module skips when there is no Chromium; with CI set it fails instead.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest

from playwright.sync_api import Page, expect

from .conftest import require_chromium

require_chromium()
TZ = ZoneInfo("Europe/Berlin")
CSV_HEADER = "lot_id,lot_name,hour,occupancy_pct,peak_occupied,arrivals,coverage_pct,bays"
# The summary columns and the decimals the page shows: the API's own precision.
SUMMARY_DECIMALS = {
    "bays": 0, "mean_occupancy_pct": 1, "peak_hour_occupancy_pct": 1, "busy_hours": 0,
    "arrivals": 0, "completed_stays": 0, "mean_dwell_minutes": 1, "median_dwell_minutes": 1,
    "turnover_per_bay_per_day": 2, "coverage_pct": 1,
}


@pytest.fixture
def backend() -> str:
    """SQLite only: the page sees nothing but JSON, and the API tests cover PostgreSQL."""
    return "sqlite"


@pytest.fixture
def days(city) -> dict:
    """Three full local days of history, the three days before yesterday's end, stored through
    `ingest`: GARAGE bay k is occupied from 08:00 for 2k hours, PR-WEST bays 07:00–09:00, STREET
    says nothing. The range handed to the page is six days, so half of it has no data."""
    from parking.ingest import SensorReading, ingest

    today = dt.datetime.now(TZ).date()
    first = today - dt.timedelta(days=3)
    readings = []
    for day in range(3):
        date = first + dt.timedelta(days=day)
        for quarter in range(96):
            local = dt.datetime.combine(date, dt.time(), TZ) + dt.timedelta(minutes=15 * quarter)
            ts = local.timestamp()
            hour = local.hour
            for k in range(1, 7):
                readings.append(SensorReading(f"GAR-00{k}", 8 <= hour < 8 + 2 * k, ts))
            for k in range(1, 5):
                readings.append(SensorReading(f"PRW-00{k}", 7 <= hour < 9, ts))
    readings.sort(key=lambda r: r.ts)
    ingest(readings)
    return {"from": (today - dt.timedelta(days=6)).isoformat(), "to": today.isoformat(),
            "last": (today - dt.timedelta(days=1)).isoformat(), "today": today.isoformat()}


LONG_NAME = "Tiefgarage Hauptbahnhof / Castra-Regina-Center, Zufahrt über die Friedenstraße (Ebenen −2 bis +4)"
CITY_NAMES = ["Parkhaus Dachauplatz", "Parkhaus Regensburg Arcaden", "Parkhaus St.-Peters-Weg",
              "Tiefgarage Arnulfsplatz", LONG_NAME, "Tiefgarage am Theater (Bismarckplatz)",
              "Parkplatz Dultplatz", "P+R Unterer Wöhrd", "P+R Universität / Klinikum",
              "Dr.-Martin-Luther-Straße (on-street)"]
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def all_lots(city) -> list[str]:
    """Ten more lots named as a city names them (one very long), so the page lays out a whole city."""
    from parking.lots import import_lots

    features = [{"type": "Feature", "id": f"C{i:02d}", "geometry": {"type": "Point", "coordinates": [12.1, 49.0]},
                 "properties": {"name": name, "category": "parkingGarage", "bays": [f"C{i:02d}-{b}" for b in range(40)]}}
                for i, name in enumerate(CITY_NAMES)]
    import_lots({"type": "FeatureCollection", "features": features}, "Europe/Berlin")
    return [f["id"] for f in features]


@pytest.fixture
def site(live_server, days) -> str:
    """Base URL of the live app with the test city and its history."""
    return live_server.rstrip("/")


@pytest.fixture
def page_errors() -> list[str]:
    """Script errors and console errors of the page; a test removes those it provoked."""
    return []


@pytest.fixture
def page(browser, site, page_errors):
    """A fresh page that may talk to 127.0.0.1 only; fails the test on script errors or
    attempts to reach anything else."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    blocked, errors = [], page_errors

    def only_loopback(route):
        host = urlsplit(route.request.url).hostname
        if host == "127.0.0.1" or route.request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not blocked, f"the page tried to leave loopback: {blocked}"
    assert not errors, f"errors in the page: {errors}"


def api(site: str, path: str, **params) -> dict:
    """GET a JSON document from the live API."""
    query = urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{site}{path}?{query}" if query else f"{site}{path}") as response:
        return json.load(response)


def shown(page: Page, **params) -> None:
    """Wait until the page has drawn the figures of exactly this query."""
    query = urlencode(params, doseq=True)
    expect(page.locator("#results")).to_have_attribute("data-query", query, timeout=15_000)


def open_planner(page: Page, site: str) -> None:
    """Load the page and wait for its first figures, so the controls are live."""
    page.goto(f"{site}/planner")
    expect(page.locator("#results[data-query]")).to_be_visible(timeout=15_000)


def choose(page: Page, lots: list[str], first: str, last: str) -> None:
    """Pick lots and days with the keyboard, as someone without a mouse would, and submit."""
    all_box = page.locator("#lot-all")
    if all_box.is_checked():
        all_box.focus()
        page.keyboard.press("Space")
    for lot in lots:
        page.locator(f"#lot-{lot}").focus()
        page.keyboard.press("Space")
    page.get_by_label("First day").fill(first)
    page.get_by_label("Last day").fill(last)
    page.get_by_label("Last day").press("Enter")


def test_page_loads_with_lots_from_the_api_and_the_last_28_days(page: Page, site: str, days: dict):
    page.goto(f"{site}/planner")
    expect(page).to_have_title("Parking utilization – planners")
    expect(page.get_by_role("link", name="Live map")).to_have_attribute("href", "/")
    features = api(site, "/api/lots")["features"]
    boxes = page.locator("#lot-boxes input[type=checkbox]")
    expect(boxes).to_have_count(len(features))
    for feature in features:
        box = page.get_by_label(feature["properties"]["name"], exact=False)
        expect(box).to_be_checked()
        expect(box).to_have_value(feature["id"])
    expect(page.locator("#lot-all")).to_be_checked()
    # The default is the last 28 full days, ending with yesterday in the lots' time zone.
    start = (dt.date.fromisoformat(days["today"]) - dt.timedelta(days=28)).isoformat()
    expect(page.get_by_label("First day")).to_have_value(start)
    expect(page.get_by_label("Last day")).to_have_value(days["last"])
    shown(page, **{"from": start, "to": days["today"]})
    expect(page.locator("#summary tbody tr")).to_have_count(len(features))


def test_choosing_a_lot_and_range_draws_heatmap_chart_and_table(page: Page, site: str, days: dict):
    open_planner(page, site)
    choose(page, ["GARAGE"], days["from"], days["last"])
    query = {"lot": ["GARAGE"], "from": days["from"], "to": days["to"]}
    shown(page, **query)
    assert page.url.endswith("?" + urlencode(query, doseq=True)), "the URL keeps the choice"
    expect(page.locator("#lot-all")).not_to_be_checked()

    pattern = api(site, "/api/reports/pattern", **query)
    rows = page.locator("#heatmap tbody tr")
    expect(rows).to_have_count(7)
    expect(page.locator("#heatmap thead th[scope=col]")).to_have_count(25)
    cells = page.locator("#heatmap tbody td").evaluate_all(
        "tds => tds.map(td => [td.dataset.value ?? null, td.textContent])"
    )
    flat = [v for row in pattern["heatmap"] for v in row]
    assert len(cells) == 7 * 24
    for (value, text), expected in zip(cells, flat):
        if expected is None:
            assert (value, text) == (None, "no data"), "hours with no data are blank"
        else:
            assert float(value) == expected and text == f"{expected:.1f}"
    assert None in flat and any(v is not None and v > 85 for v in flat), "the fixture covers both"
    assert page.locator("#heatmap td.hot").count() == sum(1 for v in flat if v is not None and v > 85)

    chart = page.evaluate(
        """() => { const c = Chart.getChart(document.getElementById('daily'));
                   return {labels: c.data.labels, spanGaps: c.options.spanGaps,
                           data: c.data.datasets.map(d => [d.label, d.data])}; }"""
    )
    assert chart["labels"] == [d["date"] for d in pattern["daily"]]
    assert chart["spanGaps"] is False
    series = dict(chart["data"])
    assert series["Daily mean"] == [d["mean_pct"] for d in pattern["daily"]]
    assert series["Peak hour"] == [d["peak_pct"] for d in pattern["daily"]]
    assert set(series["85 % line"]) == {85}
    assert None in series["Daily mean"], "days without data are gaps"
    expect(page.locator("#daily-table tbody tr")).to_have_count(len(pattern["daily"]))


def test_summary_table_shows_the_apis_numbers(page: Page, site: str, days: dict):
    query = {"lot": ["GARAGE", "PR-WEST", "STREET"], "from": days["from"], "to": days["to"]}
    page.goto(f"{site}/planner?{urlencode(query, doseq=True)}")
    shown(page, **{"from": days["from"], "to": days["to"]})  # every lot chosen means "all lots"
    summary = api(site, "/api/reports/summary", **query)
    table = page.locator("#summary")
    headers = table.locator("thead th").all_text_contents()
    assert headers[0] == "Car park" and "Mean occupancy %" in headers and "Coverage %" in headers
    expect(table.locator("tbody th[scope=row]")).to_have_count(len(summary["lots"]))
    for index, lot in enumerate(summary["lots"]):
        row = table.locator("tbody tr").nth(index)
        expect(row.locator("th")).to_contain_text(lot["name"])
        for key, decimals in SUMMARY_DECIMALS.items():
            cell = row.locator(f'[data-key="{key}"]')
            text = cell.text_content()
            if lot[key] is None:
                assert text == "—no data", (lot["lot"], key)
                continue
            assert float(cell.get_attribute("data-value")) == lot[key], (lot["lot"], key)
            assert float(text.replace(",", "")) == round(lot[key], decimals), (lot["lot"], key, text)
        peak = row.locator('[data-key="peak_hour"]')
        if lot["peak_hour"]:
            assert peak.get_attribute("data-value") == lot["peak_hour"]
            assert lot["peak_hour"][11:16] in peak.text_content(), "the lot's own wall-clock hour"
    street = next(lot for lot in summary["lots"] if lot["lot"] == "STREET")
    assert street["mean_occupancy_pct"] is None, "STREET said nothing: its row shows no data"


def test_csv_and_xlsx_downloads(page: Page, site: str, days: dict):
    open_planner(page, site)
    choose(page, ["GARAGE", "PR-WEST"], days["from"], days["last"])
    shown(page, lot=["GARAGE", "PR-WEST"], **{"from": days["from"], "to": days["to"]})
    with page.expect_download() as csv_download:
        page.get_by_role("link", name="Download CSV").click()
    lines = csv_download.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0] == CSV_HEADER
    assert {line.split(",")[0] for line in lines[1:]} == {"GARAGE", "PR-WEST"}
    assert csv_download.value.suggested_filename.endswith(".csv")
    with page.expect_download() as xlsx_download:
        page.get_by_role("link", name="Download XLSX").click()
    assert xlsx_download.value.path().read_bytes()[:2] == b"PK", "an XLSX is a zip archive"
    assert xlsx_download.value.suggested_filename.endswith(".xlsx")


def test_api_errors_and_bad_input_reach_the_user(page: Page, site: str, days: dict, page_errors: list):
    open_planner(page, site)
    shown(page, **{"from": (dt.date.fromisoformat(days["today"]) - dt.timedelta(days=28)).isoformat(),
                   "to": days["today"]})
    choose(page, ["GARAGE"], days["last"], days["from"])
    expect(page.locator("#status")).to_have_text("The first day must not be after the last day.")
    # The API refuses ranges over three years; its own message is what the planner reads.
    page.get_by_label("First day").fill("2019-01-01")
    page.get_by_label("Last day").fill(days["last"])
    page.get_by_role("button", name="Show").click()
    try:
        api(site, "/api/reports/pattern", lot="GARAGE", **{"from": "2019-01-01", "to": days["to"]})
        pytest.fail("the API accepted a range of more than three years")
    except urllib.error.HTTPError as exc:
        message = json.load(exc)["message"]
    expect(page.locator("#status")).to_have_text(f"Could not load the figures: {message}")
    expect(page.locator("#results")).to_be_hidden()  # no earlier figures passing for these
    expect(page.get_by_role("link", name="Download CSV")).to_have_attribute("aria-disabled", "true")
    # Chromium logs each refused request (pattern and summary); those two are the point here.
    refused = [e for e in page_errors if "status of 400" in e]
    assert len(refused) == 2
    for e in refused:
        page_errors.remove(e)


def box_of(locator) -> dict:
    """The element's bounding box in page pixels (it must be rendered)."""
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return box


def test_summary_fits_its_box_with_every_lot_at_1280_px(page: Page, site: str, days: dict, all_lots):
    page.goto(f"{site}/planner?{urlencode({'from': days['from'], 'to': days['to']})}")
    shown(page, **{"from": days["from"], "to": days["to"]})
    expect(page.locator("#summary tbody tr")).to_have_count(3 + len(all_lots))
    frame = page.locator("#summary").locator("xpath=..")  # the box the table sits in
    sizes = frame.evaluate("f => [f.scrollWidth, f.clientWidth]")
    assert sizes[0] <= sizes[1], f"the table is wider than its box: {sizes}"
    outer = box_of(frame)
    for header in ("Turnover per bay per day", "Coverage %"):
        cell = box_of(page.locator("#summary thead th", has_text=header))
        assert outer["x"] <= cell["x"] and cell["x"] + cell["width"] <= outer["x"] + outer["width"] + 0.5, header
        assert cell["x"] + cell["width"] <= page.viewport_size["width"], f"{header} is off screen"
    # A long name wraps within its cell instead of widening the table.
    name = box_of(page.locator("#summary tbody th", has_text=LONG_NAME))
    assert name["width"] < outer["width"] / 3


def test_a_long_lot_name_keeps_its_checkbox_on_its_first_line(page: Page, site: str, days: dict, all_lots):
    open_planner(page, site)
    labels = page.locator("#lot-boxes label.check")
    expect(labels).to_have_count(3 + len(all_lots))
    for index in range(labels.count()):
        label = labels.nth(index)
        box, name = box_of(label.locator("input")), box_of(label.locator(".name"))
        assert name["y"] < box["y"] + box["height"], f"{label.text_content()}: the name starts below its box"
        assert name["x"] >= box["x"] + box["width"], f"{label.text_content()}: the name is not beside its box"
    long_label = box_of(page.locator("#lot-boxes label.check", has_text=LONG_NAME).locator(".name"))
    one_line = box_of(page.locator("#lot-boxes label.check", has_text="P+R West").locator(".name"))
    assert long_label["height"] > 1.5 * one_line["height"], "the long name wraps (the test shows that case)"


def test_on_a_phone_each_lot_shows_every_figure(page: Page, site: str, days: dict, all_lots):
    page.set_viewport_size(PHONE)
    page.goto(f"{site}/planner?{urlencode({'from': days['from'], 'to': days['to']})}")
    shown(page, **{"from": days["from"], "to": days["to"]})
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    rows = page.locator("#summary tbody tr")
    expect(rows).to_have_count(3 + len(all_lots))
    for index in (0, 1, rows.count() - 1):
        row = rows.nth(index)
        name = box_of(row.locator("th"))
        for key, label in (("mean_occupancy_pct", "Mean occupancy %"), ("coverage_pct", "Coverage %")):
            cell = row.locator(f'[data-key="{key}"]')
            expect(cell).to_be_visible()
            where = box_of(cell)
            assert 0 <= where["x"] and where["x"] + where["width"] <= PHONE["width"], (index, key, where)
            assert where["y"] > name["y"], "the figures follow the name, card-like"
            shown_label = cell.evaluate("td => getComputedStyle(td, '::before').content")
            assert label in shown_label, (key, shown_label)


def test_a_future_range_says_so_instead_of_listing_no_coverage(page: Page, site: str, days: dict):
    open_planner(page, site)
    today = dt.date.fromisoformat(days["today"])
    first, last = (today + dt.timedelta(days=10)).isoformat(), (today + dt.timedelta(days=20)).isoformat()
    choose(page, ["GARAGE"], first, last)
    shown(page, lot=["GARAGE"], **{"from": first, "to": (today + dt.timedelta(days=21)).isoformat()})
    note = page.locator("#range-note")
    expect(note).to_contain_text("This range lies in the future: there are no readings for it yet.")
    expect(note).not_to_contain_text("Data coverage below")
    expect(note).not_to_contain_text("(none)")
    # A past range with one silent lot names it plainly, apart from the lots with thin coverage.
    page.locator("#lot-all").check()
    choose(page, ["GARAGE", "STREET"], days["from"], days["last"])
    shown(page, lot=["GARAGE", "STREET"], **{"from": days["from"], "to": days["to"]})
    expect(note).to_contain_text("No data in this range for Gesandtenstraße.")
    expect(note).to_contain_text(re.compile(r"Data coverage below 90 % for Garage Mitte \(\d+\.\d %\): read"))
    expect(note).not_to_contain_text("(none)")
    expect(note).not_to_contain_text("(0.0 %)")
