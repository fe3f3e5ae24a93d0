"""The operators' page (`/operators`) in a real browser, with a city of 10,000 sensors, a running
gateway refusing requests, and the admin token; plus its JSON (`/api/operators`).

Locally the module skips when there is no Chromium; with CI set it fails instead.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from playwright.sync_api import expect

from .conftest import ADMIN_TOKEN, require_chromium

require_chromium()
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
HOSTILE = "<img src=x onerror=alert(1)>"
LOTS, BAYS_PER_LOT = 100, 100  # 10,000 sensors


@pytest.fixture
def backend() -> str:
    """SQLite only: the page sees nothing but JSON; the API's queries are the same on both."""
    return "sqlite"


@pytest.fixture
def big_city(city):
    """10,000 bays in 100 lots (one with a hostile name): most reporting, some silent, some low on
    battery, the last 500 never seen; 'sensor-7' holds a credential for bay C000-007."""
    from parking import credentials
    from parking.ingest import SensorReading, ingest_bulk
    from parking.lots import import_lots

    features = [{
        "type": "Feature", "id": f"C{lot:03d}", "geometry": {"type": "Point", "coordinates": [12.0 + lot / 1000, 49.0]},
        "properties": {"name": HOSTILE if lot == 0 else f"Lot {lot:03d}",
                       "bays": [f"C{lot:03d}-{bay:03d}" for bay in range(BAYS_PER_LOT)]},
    } for lot in range(LOTS)]
    import_lots({"type": "FeatureCollection", "features": features}, "Europe/Berlin")
    now = time.time()
    readings = []
    for n in range(LOTS * BAYS_PER_LOT - 500):
        bay = f"C{n // BAYS_PER_LOT:03d}-{n % BAYS_PER_LOT:03d}"
        age = 7200 if n % 10 == 3 else 60  # every tenth is silent
        readings.append(SensorReading(bay, bool(n & 1), now - age - n * 1e-3, battery=5 if n % 50 == 9 else 80))
    readings.sort(key=lambda r: r.ts)
    ingest_bulk(readings, received_at=None)
    credentials.add("sensor-7", ["C000-007"])
    return city


@pytest.fixture
def refusing_gateway(big_city):
    """The deployed gateway in this process, after refusing one unprotected POST from 127.0.0.1."""
    from gateway.server import run_in_thread

    big_city.config["SENSOR_AUTH"] = "oscore"
    handle = run_in_thread(big_city, "127.0.0.1", 0)

    async def post():
        context = await aiocoap.Context.create_client_context()
        try:
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{handle.port}/occupancy",
                              payload=json.dumps({"bay": "C000-001", "occupied": True}).encode(), content_format=50)
            return (await context.request(request).response).code
        finally:
            await context.shutdown()

    # On a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, post()).result(60) == Code.UNAUTHORIZED
    yield handle
    handle.stop()


def test_api_needs_the_token_and_counts_every_sensor(big_city, client, refusing_gateway):
    assert client.get("/api/operators").status_code == 401
    body = client.get("/api/operators", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json
    assert len(body["sensors"]) == LOTS * BAYS_PER_LOT + 12  # and the small test city's 12
    states = {}
    for row in body["sensors"]:
        states[row["status"]] = states.get(row["status"], 0) + 1
    assert states["never_seen"] == 500 + 12
    assert states["silent"] == 950 and states["low_battery"] == 190
    first = next(lot for lot in body["lots"] if lot["lot"] == "C000")
    assert first == {"lot": "C000", "name": HOSTILE, "bays": 100, "reporting": 90, "share": 0.9}
    assert next(r for r in body["sensors"] if r["bay"] == "C000-007")["sensor"] == "sensor-7"
    assert body["refused"]["by_source"] == [{"name": "127.0.0.1", "total": 1, "codes": {"4.01": 1}}]
    assert body["gateway"]["running"] and body["gateway"]["database"] == "ok" and body["gateway"]["queue"] == 0


def test_page_with_10000_sensors(browser, live_server, refusing_gateway, tmp_path):
    context = browser.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="Europe/Berlin")
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live_server + "/operators")
    # No token yet: the page asks for it; a wrong one is refused with the API's message.
    page.fill("#token", "wrong")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Bearer")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    expect(page.locator("#sensor-summary")).to_have_text(f"{950 + 190 + 512} of {LOTS * BAYS_PER_LOT + 12} sensors")
    # One page of rows in the document, never all 10,000.
    assert page.locator("#sensors tbody tr").count() == 100
    expect(page.locator("#gw-state")).to_have_text("storing")
    expect(page.locator("#db-state")).to_have_text("reachable")
    expect(page.locator("#refused-source tbody tr").first).to_contain_text("127.0.0.1")
    # Search finds one bay among 10,000; the hostile lot name is text, not markup.
    page.fill("#q", "C000-007")
    expect(page.locator("#sensor-summary")).to_have_text(f"0 of {LOTS * BAYS_PER_LOT + 12} sensors")
    page.select_option("#status", "")
    expect(page.locator("#sensor-summary")).to_have_text(f"1 of {LOTS * BAYS_PER_LOT + 12} sensors")
    expect(page.locator("#sensors tbody tr td").nth(2)).to_have_text("sensor-7")
    expect(page.locator("#lots tbody")).to_contain_text(HOSTILE)
    assert page.locator("#lots img").count() == 0 and not dialogs
    # Sorting: by battery, lowest first, then highest first.
    page.fill("#q", "")
    page.click("#sensors th button[data-sort=battery]")
    expect(page.locator("#sensors tbody tr").first.locator("td").nth(5)).to_have_text("5 %")
    page.click("#sensors th button[data-sort=battery]")
    expect(page.locator("#sensors tbody tr").first.locator("td").nth(5)).to_have_text("80 %")
    expect(page.locator("#sensors th[aria-sort=descending]")).to_have_text("Battery")
    # Paging through the list.
    page.click("#next")
    expect(page.locator("#page")).to_have_text(f"page 2 of {(LOTS * BAYS_PER_LOT + 12 + 99) // 100}")
    page.select_option("#status", "problems")
    page.evaluate("window.scrollTo(0, 0)")
    shots = Path(os.environ.get("PARKING_SCREENSHOT_DIR", tmp_path))
    page.screenshot(path=str(shots / "operators.png"), full_page=False)
    phone = browser.new_context(viewport=PHONE, locale="en-GB", timezone_id="Europe/Berlin", is_mobile=True)
    phone_page = phone.new_page()
    phone_page.goto(live_server + "/operators")
    phone_page.evaluate(f"localStorage.setItem('parking-admin-token', {json.dumps(ADMIN_TOKEN)})")
    phone_page.reload()
    expect(phone_page.locator("#sensor-summary")).to_contain_text("sensors")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone_page.screenshot(path=str(shots / "operators-phone.png"), full_page=False)
    phone.close()
    context.close()


def test_map_links_to_operators_only_for_admins(browser, live_server):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
    page.goto(live_server + "/")
    expect(page.locator("#operators-link")).to_be_hidden()
    page.evaluate(f"localStorage.setItem('parking-admin-token', {json.dumps(ADMIN_TOKEN)})")
    page.reload()
    expect(page.locator("#operators-link")).to_be_visible()
    page.click("#operators-link")
    expect(page.locator("#sensor-summary")).to_contain_text("sensors")
    context.close()
