"""The drivers' map in forecast mode, in a real browser (Debian's Chromium via Playwright) against
the real app over loopback: the "arriving" control, the markers and list showing the forecast
that `/api/lots?at=` serves, and a lot's popup with the chart of its next hours. History is
stored through the one write path, rolled up and forecast by the scheduler's own run.

Locally the module skips when there is no Chromium; with CI set it fails instead.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from parking.forecasting import update_forecasts
from parking.ingest import ingest_bulk
from parking.rollup import run_rollup

from .conftest import require_chromium
from .test_forecasting import GARAGE, PRW, history
from .test_map_browser import PHONE, features, icon, marker, open_map, open_popup  # noqa: F401 (open_map: a fixture)

require_chromium()
BERLIN = dt.timezone(dt.timedelta(hours=1))  # the browser's zone in December (Europe/Berlin)


@pytest.fixture
def backend() -> str:
    """SQLite only: the page sees nothing but JSON, and the API tests cover PostgreSQL."""
    return "sqlite"


@pytest.fixture
def site(live_server, city):
    """The live app with ten days of GARAGE history (it forecasts), two of PR-WEST (too
    little), none of STREET, and one forecast run."""
    now = float(int(time.time()))
    ingest_bulk(list(history(GARAGE, now - 10 * 86400, now)) + list(history(PRW, now - 2 * 86400, now)))
    run_rollup(now=now)
    stats = update_forecasts(now=now)
    assert stats.forecasting == 1
    return live_server.rstrip("/")


def shown_instant(page) -> str:
    """The instant the page shows the lots for (the `at` it asked the API for), once it has one."""
    expect(page.locator("#arriving")).not_to_have_attribute("data-at", "")
    return page.locator("#arriving").get_attribute("data-at")


def test_arriving_shows_the_forecast_the_api_serves_then_live_again(open_map, site):
    live = features(site)
    page = open_map().page
    expect(marker(page, "GARAGE").locator(".num")).to_have_text(str(live["GARAGE"]["properties"]["free"]))
    expect(page.get_by_label("Now", exact=True)).to_be_checked()
    page.get_by_label("+1 h").check()
    at = shown_instant(page)
    ahead = dt.datetime.fromisoformat(at).timestamp() - time.time()
    assert 3500 < ahead < 3700, ahead
    served = features(site, "?at=" + quote(at))
    forecast = served["GARAGE"]["properties"]["forecast"]
    assert forecast is not None
    garage = marker(page, "GARAGE")
    expect(garage).to_have_class(re.compile(r"\bforecast\b"))
    expect(garage.locator(".badge.fc .sym")).to_have_text("≈")
    expect(garage.locator(".num")).to_have_text(str(forecast["expected_free"]))
    expect(garage).to_have_attribute("data-free-low", str(forecast["free_low"]))
    expect(garage).to_have_attribute("data-free-high", str(forecast["free_high"]))
    expect(icon(page, "GARAGE")).to_have_accessible_name(re.compile(
        rf"^Garage Mitte: forecast for \d\d:\d\d: about {forecast['expected_free']} free of 6 "
        rf"\({forecast['free_low']} to {forecast['free_high']}\)"))
    band = f"about {forecast['expected_free']} free"
    if forecast["free_low"] != forecast["free_high"]:
        band += f", {forecast['free_low']}–{forecast['free_high']}"
    item = page.locator('.lot-item[data-lot-id="GARAGE"]')
    expect(item.locator(".li-meta")).to_have_text(re.compile(rf"^{re.escape(band)} · at \d\d:\d\d$"))
    expect(item.locator(".li-extra")).to_contain_text(f"Now: {live['GARAGE']['properties']['free']} free of 6")
    expect(page.locator("#arrive-msg")).to_contain_text(re.compile(r"Forecast for \d\d:\d\d \(in (1 h|59 min)\)"))
    expect(page.locator("body")).to_have_class(re.compile(r"\bis-forecast\b"))
    expect(page.locator("#freshness")).to_contain_text("Forecast for")
    fc_legend = page.get_by_role("region", name="Legend").locator(".legend-fc")
    expect(fc_legend).to_be_visible()
    expect(fc_legend).to_contain_text("forecast")
    # Lots with too little history say so, and show no number.
    for lot_id in ("PR-WEST", "STREET"):
        assert served[lot_id]["properties"]["forecast"] is None
        expect(marker(page, lot_id)).to_have_attribute("data-forecast", "none")
        expect(marker(page, lot_id).locator(".num")).to_have_text("?")
    expect(page.locator('.lot-item[data-lot-id="PR-WEST"] .li-meta')).to_contain_text("No forecast: not enough history")
    # Back to now: the live counts, no forecast marks, the plain status line.
    page.get_by_label("Now", exact=True).check()
    expect(page.locator("#arriving")).to_have_attribute("data-at", "")
    for lot_id, f in features(site).items():
        p = f["properties"]
        expect(marker(page, lot_id)).to_have_attribute("data-free", str(p["free"]))
        expect(marker(page, lot_id).locator(".num")).to_have_text("?" if p["status"] == "unknown" else str(p["free"]))
        expect(marker(page, lot_id)).not_to_have_class(re.compile(r"\bforecast\b"))
    expect(page.locator(".badge.fc:not(.legend-list .badge)")).to_have_count(0)
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bis-forecast\b"))
    expect(page.locator("#freshness")).to_contain_text("Live")
    expect(page.locator("#arrive-msg")).to_have_text("")
    expect(page.locator("#arrive-msg")).to_be_hidden()
    expect(fc_legend).to_be_hidden()


def test_a_time_of_day_earlier_than_now_means_tomorrow(open_map, site):
    page = open_map().page
    soon = dt.datetime.now(BERLIN) + dt.timedelta(hours=3)
    page.get_by_label("Arrival time").fill(soon.strftime("%H:%M"))
    expect(page.get_by_label("At", exact=True)).to_be_checked()
    at = dt.datetime.fromisoformat(shown_instant(page))
    assert 3 * 3600 - 120 < at.timestamp() - time.time() < 3 * 3600 + 60
    expect(page.locator("#arrive-msg")).to_contain_text(f"Forecast for {soon:%H:%M}")
    expect(marker(page, "GARAGE").locator(".num")).to_have_text(
        str(features(site, "?at=" + quote(at.isoformat()))["GARAGE"]["properties"]["forecast"]["expected_free"]))
    earlier = dt.datetime.now(BERLIN) - dt.timedelta(hours=1)
    page.get_by_label("Arrival time").fill(earlier.strftime("%H:%M"))
    expect(page.locator("#arrive-msg")).to_contain_text(f"Forecast for tomorrow {earlier:%H:%M}")
    at = dt.datetime.fromisoformat(page.locator("#arriving").get_attribute("data-at"))
    assert 23 * 3600 - 120 < at.timestamp() - time.time() < 23 * 3600 + 60


def test_the_popup_charts_the_next_hours_with_a_band(open_map, site):
    page = open_map().page
    page.get_by_label("+30 min").check()
    shown_instant(page)
    popup = open_popup(page, "GARAGE")
    served = page.evaluate("fetch('/api/lots/GARAGE/forecast?hours=24').then(r => r.json())")
    first = served["rows"][0]
    expect(popup.locator('[data-field="forecast"]')).to_contain_text(re.compile(r"^Arriving \d\d:\d\d: about \d+ free"))
    chart = popup.locator("svg.fc-chart")
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("role", "img")
    expect(chart).to_have_attribute("aria-label", re.compile(r"^Expected free spaces at Garage Mitte over the next 6 hours: \d\d:00 about \d+ free"))
    band = chart.locator("path.band")
    line = chart.locator("path.line")
    expect(band).to_have_count(1)
    expect(line).to_have_count(1)
    # The band is an area around the line: its outline runs there and back (twice the points).
    points = lambda loc: len(re.findall(r"[ML]", loc.get_attribute("d")))  # noqa: E731
    assert points(band) == 2 * points(line) >= 24
    assert band.evaluate("b => b.getBBox().height") >= line.evaluate("l => l.getBBox().height")
    expect(chart.locator("line.mark")).to_have_count(1)  # the arrival time, drawn
    assert 0 <= first["free_low"] <= first["expected_free"] <= first["free_high"] <= 6
    popup.locator(".leaflet-popup-close-button").click()
    expect(popup).to_have_count(0)
    # A lot with too little history says so instead of a chart (opened by keyboard: after the
    # first popup's pan the marker may lie under the legend).
    icon(page, "PR-WEST").focus()
    page.keyboard.press("Enter")
    expect(popup.locator(".outlook")).to_contain_text("No forecast: not enough history")
    expect(popup.locator("svg.fc-chart")).to_have_count(0)


def test_arriving_on_a_phone_by_keyboard(open_map, site):
    page = open_map(viewport=PHONE).page
    control = page.get_by_role("group", name="Arriving")
    expect(control).to_be_visible()
    page.get_by_label("Now", exact=True).focus()
    page.keyboard.press("ArrowRight")  # radios: the arrow keys move the choice
    expect(page.get_by_label("+15 min")).to_be_checked()
    shown_instant(page)
    expect(page.locator('.lot-item[data-lot-id="GARAGE"] .badge.fc')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_role("button", name="Map", exact=True).click()
    expect(control).to_be_visible()
    expect(marker(page, "GARAGE")).to_have_class(re.compile(r"\bforecast\b"))
    page.get_by_label("Now", exact=True).check()
    expect(marker(page, "GARAGE")).not_to_have_class(re.compile(r"\bforecast\b"))


def test_the_detail_panel_keeps_the_forecast_when_its_bays_come(open_map, site):
    """The lot alone (GET /api/lots/<id>, for its bays) carries no forecast: the panel and the
    marker keep the one of the list."""
    page = open_map().page
    page.get_by_label("+1 h").check()
    at = shown_instant(page)
    forecast = features(site, "?at=" + quote(at))["GARAGE"]["properties"]["forecast"]
    page.locator('.lot-item[data-lot-id="GARAGE"]').click()
    expect(page.locator("#bays .bay-grid .bay")).to_have_count(6)  # the lot alone has come
    expect(page.locator('#detail-body [data-field="forecast"]')).to_contain_text(f"about {forecast['expected_free']} free")
    expect(page.locator("#detail-body svg.fc-chart path.band")).to_have_count(1)
    expect(marker(page, "GARAGE")).to_have_attribute("data-expected-free", str(forecast["expected_free"]))


def test_a_chosen_time_that_has_come_goes_back_to_live(open_map, site):
    mp = open_map(clock=True)
    page = mp.page
    soon = dt.datetime.now(BERLIN) + dt.timedelta(minutes=3)
    page.get_by_label("Arrival time").fill(soon.strftime("%H:%M"))
    shown_instant(page)
    expect(marker(page, "GARAGE")).to_have_class(re.compile(r"\bforecast\b"))
    page.clock.fast_forward(5 * 60_000)  # past the chosen time; the 30 s refresh is due
    expect(page.locator("#arriving")).to_have_attribute("data-at", "")
    expect(page.get_by_label("Now", exact=True)).to_be_checked()
    expect(page.locator("#arrive-msg")).to_have_text(f"{soon:%H:%M} has come: live counts again.")
    expect(marker(page, "GARAGE")).not_to_have_class(re.compile(r"\bforecast\b"))
