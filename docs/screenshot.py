"""Screenshots of the drivers' map for the README: docs/map.png (1280×800) and docs/map-phone.png (390×844).

Usage: start the app (`make demo`), then
    .venv/bin/python docs/screenshot.py [URL]        # default http://127.0.0.1:8000/
Needs Playwright for Python and a Chromium at /usr/bin/chromium (Debian package `chromium`;
another path via PARKING_CHROMIUM). Requests to other hosts are blocked, so the pictures show
what the page looks like with no internet.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("PARKING_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = [("map.png", {"width": 1280, "height": 800}), ("map-phone.png", {"width": 390, "height": 844})]


def shoot(browser, url: str, name: str, viewport: dict) -> Path:
    """Open the page at one viewport size, wait for the markers and write the PNG."""
    host = urlsplit(url).hostname
    context = browser.new_context(viewport=viewport, device_scale_factor=2 if viewport["width"] < 600 else 1,
                                  locale="en-GB", timezone_id="Europe/Berlin")
    context.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).hostname == host
                  else route.abort())
    page = context.new_page()
    page.goto(url)
    page.locator(".lot-item").first.wait_for()
    if viewport["width"] >= 600:
        page.locator(".lot-marker").first.wait_for()
    page.wait_for_timeout(800)  # let the fit-to-lots zoom settle
    out = DOCS / name
    page.screenshot(path=str(out))
    context.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Write both screenshots; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000/")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set PARKING_CHROMIUM", file=sys.stderr)
        return 2
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name, viewport in SHOTS:
            print(shoot(browser, args.url, name, viewport))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
