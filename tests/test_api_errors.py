"""What broken or hostile HTTP clients get: a JSON 4xx naming the problem, never a 500, never a cut
stream. Dates at the ends of the calendar, JSON nested too deeply, bodies over the size limit,
unsupported methods, non-numbers in a bounding box."""
from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from parking.extensions import db
from parking.models import Lot

from .conftest import ADMIN_TOKEN
from .hypothesis_profiles import examples

RANGE_ENDPOINTS = [
    "/api/lots/GARAGE/utilization",
    "/api/lots/GARAGE/events.csv",
    "/api/reports/utilization.csv",
    "/api/reports/utilization.xlsx",
    "/api/reports/summary",
    "/api/reports/pattern",
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def get(client, url: str):
    """GET, with the (possibly streamed) body read whole and the response closed."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def assert_json_error(response, status: int, *words: str) -> dict:
    """The answer is the contract's JSON error with that status, its message naming each word."""
    assert response.status_code == status, response.data[:300]
    body = response.get_json()
    assert set(body) == {"code", "status", "message"} and body["code"] == status
    for word in words:
        assert word in body["message"], body["message"]
    return body


@pytest.mark.parametrize(
    "query, names",
    [
        ("from=0001-01-01&to=0001-01-03", "from"),
        ("from=1969-12-31&to=1970-01-02", "from"),
        ("from=2026-03-29&to=9999-12-31", "to"),
        ("from=9999-12-30&to=9999-12-31", "from"),
        ("from=9998-12-31&to=9999-12-31T23:00:00-12:00", "to"),  # year 10000 in UTC
        ("from=9998-12-31&to=10000-01-01", "to"),
        ("from=2026-02-29&to=2026-03-01", "from"),  # not a leap year
        ("from=%202026-03-29&to=2026-03-30", "from"),  # no padding
        ("from=2026-03-29T00:00:00%2B24:00&to=2026-03-30", "from"),
    ],
)
def test_out_of_calendar_ranges_are_400(city, client, query, names):
    for endpoint in RANGE_ENDPOINTS:
        assert_json_error(get(client, f"{endpoint}?{query}"), 400, names, "1970 to 9998")


def test_the_calendar_edges_that_are_valid_answer(city, client):
    """The last representable day, to an offset that ends in 9999 UTC: a full answer."""
    for endpoint, query in itertools.product(RANGE_ENDPOINTS,  ("from=9998-12-31&to=9998-12-31T23:59:59.5-23:59", "from=1970-01-01&to=1970-01-02",
                  "from=2000-02-29&to=2000-03-01")):
        response = get(client, f"{endpoint}?{query}")
        assert response.status_code == 200, (query, response.data[:300])


def test_utilization_from_inside_an_hour_means_that_hour(city, client):
    rows = client.get("/api/lots/GARAGE/utilization?from=2026-03-29T08:30:00%2B02:00"
                      "&to=2026-03-29T10:00:00%2B02:00").json["rows"]
    assert [r["hour"] for r in rows] == ["2026-03-29T08:00:00+02:00", "2026-03-29T09:00:00+02:00"]


def test_csv_near_the_end_of_the_calendar_is_refused_before_the_stream_starts(live_server):
    """Over real HTTP: a 400 with the JSON error, not a 200 whose stream breaks off."""
    parts = urlsplit(live_server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/api/reports/utilization.csv?from=9999-12-31&to=9999-12-31T23:00:00-12:00")
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 400 and body["code"] == 400 and "from" in body["message"]
    conn.close()


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
dates = st.dates().map(dt.date.isoformat)
datetimes = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), st.datetimes(), offsets)
texts = st.one_of(dates, datetimes, st.text(max_size=30), st.just(""))


def _near(start, days: int, seconds: int) -> tuple[str, str]:
    """`start` and a `to` a few days from it (shifted across the calendar's end, it stays `start`)."""
    try:
        end = start + dt.timedelta(days=days, seconds=seconds)
    except OverflowError:
        end = start
    return start.isoformat(), end.isoformat()


near_pairs = st.builds(_near, st.one_of(st.dates(), st.datetimes(timezones=offsets)),
                       st.integers(-2, 12), st.integers(0, 86400))


@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                             HealthCheck.too_slow])
@given(endpoint=st.sampled_from(RANGE_ENDPOINTS),
       pair=st.one_of(st.tuples(texts, texts), near_pairs))
def test_no_range_is_a_server_error(city, client, endpoint, pair):
    """Whatever from and to are, the answer is a complete 200 or the JSON 400."""
    start, end = pair
    response = get(client, f"{endpoint}?from={quote(start, safe='')}&to={quote(end, safe='')}")
    if response.status_code == 200:
        assert response.data  # the whole body was produced (the test client drains the stream)
    else:
        assert_json_error(response, 400)


@pytest.mark.parametrize("body", ["[" * 2000, '{"a":' * 2000, "[" * 100_000])
def test_deeply_nested_import_is_400_and_changes_nothing(city, client, body):
    before = db.session.scalar(select(func.count()).select_from(Lot))
    response = client.post("/api/lots", data=body, content_type="application/json", headers=ADMIN)
    assert_json_error(response, 400, "GeoJSON")
    assert db.session.scalar(select(func.count()).select_from(Lot)) == before


def test_body_over_the_limit_is_413_over_http(live_server, city):
    """The deployed limit (16 MiB): one byte more is refused, with the JSON error naming the limit."""
    limit = city.config["MAX_CONTENT_LENGTH"]
    assert limit == 16 * 1024 * 1024
    parts = urlsplit(live_server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/api/lots", body=b" " * (limit + 1),
                 headers={**ADMIN, "Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 413 and body["code"] == 413 and "16,777,216 bytes" in body["message"]
    conn.close()


def test_chunked_body_over_the_limit_is_413(live_server, city):
    """No Content-Length to check up front: the limit holds while the body is read."""
    city.config["MAX_CONTENT_LENGTH"] = 1000
    parts = urlsplit(live_server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    chunks = (b"[" + b"0," * 100 for _ in range(20))
    conn.request("POST", "/api/lots", body=chunks, encode_chunked=True,
                 headers={**ADMIN, "Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 413 and body["code"] == 413
    conn.close()


def test_405_names_the_allowed_methods(city, client):
    response = client.delete("/api/lots")
    assert_json_error(response, 405)
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    response = client.put("/api/reports/summary?from=2026-03-29&to=2026-03-30")
    assert_json_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_401_says_how_to_authenticate(city, client):
    response = client.post("/api/lots", json={"type": "FeatureCollection", "features": []})
    assert_json_error(response, 401, "Bearer")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_bad_bbox_is_400(city, client):
    for bbox in ["nan,nan,nan,nan", "-inf,-inf,inf,inf", "1e1,4e1,2e1,5e1", "1_0,40,20,50", " 10,40,20,50",
                 "10,40,20", "10,40,20,50,1", "-181,40,20,50", "10,-91,20,50", "20,40,10,50", "10,50,20,40", ""]:
        assert_json_error(client.get(f"/api/lots?bbox={quote(bbox)}"), 400, "bbox")


def test_good_bbox_filters(city, client):
    everything = client.get("/api/lots").json["features"]
    lon, lat = everything[0]["geometry"]["coordinates"]
    found = client.get(f"/api/lots?bbox={lon},{lat},{lon},{lat}").json["features"]
    assert [f["id"] for f in found] == [everything[0]["id"]]
    assert len(client.get("/api/lots?bbox=-180,-90,180,90").json["features"]) == len(everything)


def test_lot_ids_outside_the_id_pattern_never_reach_the_database(city, client):
    """A NUL character is refused by PostgreSQL outright (it was a 500 there): a 400 for a malformed
    `lot` argument, a 404 for a path naming no lot."""
    for url in ("/api/reports/summary?lot=GA%00RAGE&from=2026-03-29&to=2026-03-30",
                "/api/reports/utilization.csv?lot=%00&from=2026-03-29&to=2026-03-30",
                "/api/sensors?lot=%00"):
        assert_json_error(get(client, url), 400, "lot")
    for url in ("/api/lots/GA%00RAGE", "/api/lots/%00/utilization?from=2026-03-29&to=2026-03-30",
                "/api/lots/%00/events.csv?from=2026-03-29&to=2026-03-30"):
        assert_json_error(get(client, url), 404, "unknown lot")
