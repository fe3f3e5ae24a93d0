"""Forecasts on the pages, in a real browser (Debian's Chromium via Playwright) against the real
app over loopback: the planners' forecast section and accuracy table. History is stored through
the one write path and forecast by the scheduler's own run.

Locally the module skips when there is no Chromium; with CI set it fails instead.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from parking.forecasting import update_forecasts
from parking.ingest import ingest_bulk
from parking.rollup import run_rollup

from .conftest import require_chromium
from .test_forecasting import GARAGE, PRW, history

require_chromium()
SHOTS = os.environ.get("PARKING_SCREENSHOTS")  # a folder: save desktop and phone screenshots there


@pytest.fixture
def backend() -> str:
    """SQLite only: the pages see nothing but JSON, and the API tests cover PostgreSQL."""
    return "sqlite"


@pytest.fixture
def site(live_server, city):
    """The live app with ten days of GARAGE history, two of PR-WEST, and a forecast run."""
    now = float(int(time.time()))
    ingest_bulk(list(history(GARAGE, now - 10 * 86400, now)) + list(history(PRW, now - 2 * 86400, now)))
    run_rollup(now=now)
    update_forecasts(now=now)
    return live_server.rstrip("/")


def new_page(browser, width, height, errors):
    context = browser.new_context(viewport={"width": width, "height": height})
    blocked = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return context, page, blocked


@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_planner_shows_forecast_beside_pattern_and_accuracy(browser, site, width, height):
    errors: list[str] = []
    context, page, blocked = new_page(browser, width, height, errors)
    try:
        page.goto(f"{site}/planner")
        section = page.locator("#forecast-section[data-drawn]")
        expect(section).to_be_visible(timeout=20_000)
        garage = page.locator('.forecast-lot[data-lot="GARAGE"]')
        expect(garage.locator("canvas")).to_be_visible()
        expect(garage).to_contain_text("In an hour: about")
        expect(page.locator('.forecast-lot[data-lot="PR-WEST"]')).to_contain_text("No forecast: not enough history")
        table = page.locator("#forecast-accuracy")
        # Three car parks x three horizons; nothing came due yet, so no figures, honestly shown.
        expect(table.locator("tbody tr")).to_have_count(9)
        expect(table.locator("tbody tr").first).to_contain_text("1 h")
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            section.scroll_into_view_if_needed()
            page.screenshot(path=f"{SHOTS}/planner-forecast-{width}.png", full_page=True)
    finally:
        context.close()
    assert not blocked and not errors, (blocked, errors)
