"""Lot import (file, CLI, admin API) and the current-state API."""
import copy
import json
import time

import pytest
from sqlalchemy import func, select, update

from parking.extensions import db
from parking.ingest import SensorReading, ingest
from parking.lots import LotFileError, import_lots
from parking.models import Bay, Lot
from parking.models import StoredReading as Row

from .conftest import ADMIN_TOKEN, CITY_FILE

CITY = json.loads(CITY_FILE.read_text())


def test_import_creates_lots_and_bays(app):
    counts = import_lots(CITY, "Europe/Berlin")
    assert counts == {"lots_added": 3, "lots_updated": 0, "bays_added": 12}
    garage = db.session.get(Lot, "GARAGE")
    assert garage.lon == pytest.approx(12.0905) and garage.lat == pytest.approx(49.0155)
    street = db.session.get(Lot, "STREET")
    assert street.timezone == "Europe/Berlin"  # default applied


def test_reimport_updates_and_adds_never_drops(city):
    ingest([SensorReading("GAR-001", True, time.time() - 5)])
    doc = copy.deepcopy(CITY)
    garage = doc["features"][1]
    garage["properties"]["name"] = "Garage Mitte (renamed)"
    garage["properties"]["bays"] = ["GAR-001", "GAR-007"]  # GAR-002..006 left out, GAR-007 new
    counts = import_lots(doc, "Europe/Berlin")
    assert counts == {"lots_added": 0, "lots_updated": 3, "bays_added": 1}
    assert db.session.get(Lot, "GARAGE").name == "Garage Mitte (renamed)"
    assert db.session.scalar(select(func.count()).select_from(Bay).where(Bay.lot_id == "GARAGE")) == 7
    assert db.session.scalar(select(func.count()).select_from(Row)) == 1


def _broken(path, value):
    doc = copy.deepcopy(CITY)
    target = doc["features"][1]
    *parents, last = path
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


@pytest.mark.parametrize(
    "doc, expected",
    [
        (_broken(["properties", "name"], ""), "feature 1 (id 'GARAGE'): properties.name"),
        (_broken(["id"], "bad id!"), "feature 1 (id 'bad id!'): id"),
        (_broken(["properties", "bays"], ["ok", "no spaces"]), "properties.bays.1"),
        (_broken(["properties", "category"], "castle"), "properties.category"),
        (_broken(["properties", "timezone"], "Mars/Olympus"), "properties.timezone"),
        (_broken(["properties", "url"], "javascript:alert(1)"), "properties.url"),
        (_broken(["geometry"], {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}), "geometry.type"),
        (_broken(["geometry"], {"type": "Point", "coordinates": [200, 0]}), "geometry.coordinates"),
        # An outline's ring must end where it started (checked by the geojson library).
        (_broken(["geometry"], {"type": "Polygon", "coordinates": [[[12.09, 49.01], [12.1, 49.01], [12.1, 49.02], [12.09, 49.02]]]}),
         "geometry.coordinates: Each linear ring must end where it started"),
        (_broken(["geometry"], {"type": "Polygon", "coordinates": [[[12.09, 49.01], [12.1, 49.01], [12.09, 49.01]]]}),
         "geometry.coordinates: Each linear ring must contain at least 4 positions"),
        (_broken(["geometry"], {"type": "Polygon", "coordinates": [[[12.09, 49.01], [12.1, True], [12.1, 49.02], [12.09, 49.01]]]}),
         "geometry.coordinates: lon and lat must be numbers"),
        (_broken(["properties", "bays"], ["PRW-001"]), "bay PRW-001 is also in lot PR-WEST"),
        (_broken(["properties", "bays"], ["GAR-001", "GAR-002", "GAR-001"]),
         "feature 1 (id 'GARAGE'): properties.bays: duplicate bay ids in this lot: GAR-001"),
        ({**CITY, "features": [*CITY["features"], {**CITY["features"][1], "properties": {"name": "again"}}]},
         "feature 3 (id 'GARAGE'): id: duplicate lot id, also feature 1"),
        # Misspelled keys are refused, naming the feature, the key and the nearest known key.
        (_broken(["properties", "bay"], ["GAR-009"]),
         "feature 1 (id 'GARAGE'): properties.bay: unknown key (did you mean 'bays'?"),
        (_broken(["properties", "park_and_rid"], {"stops": []}),
         "feature 1 (id 'GARAGE'): properties.park_and_rid: unknown key (did you mean 'park_and_ride'?"),
        (_broken(["properties", "park_and_ride"], {"stops": [{"name": "Dom", "line": ["1"]}]}),
         "properties.park_and_ride.stops.0.line: unknown key (did you mean 'lines'?"),
        (_broken(["properties", "park_and_ride"], {"stops": [], "minutes_to_center": 5}),
         "properties.park_and_ride.minutes_to_center: unknown key (did you mean 'minutes_to_centre'?"),
        (_broken(["propertes"], {"name": "x"}), "feature 1 (id 'GARAGE'): propertes: unknown key (did you mean 'properties'?"),
        (_broken(["geometry", "coordinate"], [1, 2]), "geometry.coordinate: unknown key (did you mean 'coordinates'?"),
        (_broken(["properties", "osm:amenity"], "parking"), "properties.osm:amenity: unknown key (keys of your own go under properties.extra)"),
        ({"type": "Feature"}, "FeatureCollection"),
    ],
)
def test_bad_file_refused_whole(app, doc, expected):
    with pytest.raises(LotFileError) as info:
        import_lots(doc, "Europe/Berlin")
    assert expected in info.value.message
    assert db.session.scalar(select(func.count()).select_from(Lot)) == 0


def test_own_keys_under_extra_are_accepted(app):
    doc = _broken(["properties", "extra"], {"osm:amenity": "parking", "osm": {"id": 123, "tags": ["a"]}})
    doc["features"][1]["bbox"] = [12.09, 49.015, 12.091, 49.016]  # GeoJSON's own optional member
    assert import_lots(doc, "Europe/Berlin")["bays_added"] == 12


def test_cli_refuses_a_misspelled_key(runner, tmp_path):
    bad = tmp_path / "typo.geojson"
    bad.write_text(json.dumps(_broken(["properties", "bay"], ["GAR-001"])))
    result = runner.invoke(args=["import-lots", str(bad)])
    assert result.exit_code != 0
    assert "refused, nothing imported" in result.output
    assert "properties.bay: unknown key (did you mean 'bays'?" in result.output
    assert db.session.scalar(select(func.count()).select_from(Lot)) == 0


def test_cli_import_is_idempotent(runner, tmp_path):
    result = runner.invoke(args=["import-lots", str(CITY_FILE)])
    assert result.exit_code == 0, result.output
    assert "lots added 3" in result.output
    result = runner.invoke(args=["import-lots", str(CITY_FILE)])
    assert "lots added 0, updated 3, bays added 0" in result.output


def test_cli_refuses_bad_file(runner, tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(_broken(["properties", "name"], "")))
    result = runner.invoke(args=["import-lots", str(bad)])
    assert result.exit_code != 0
    assert "refused, nothing imported" in result.output and "properties.name" in result.output


def test_admin_import_needs_token(client):
    assert client.post("/api/lots", json=CITY).status_code == 401
    wrong = client.post("/api/lots", json=CITY, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json["code"] == 401
    ok = client.post("/api/lots", json=CITY, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json["lots_added"] == 3
    bad = client.post("/api/lots", json={"type": "FeatureCollection", "features": [{}]},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status_code == 400 and "feature 0" in bad.json["message"]


def test_admin_writes_off_without_token(app, client):
    app.config["ADMIN_TOKEN"] = None
    response = client.post("/api/lots", json=CITY, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403


def test_lot_list_counts_follow_the_interval_rule(city, client):
    now = time.time()
    ingest([
        SensorReading("PRW-001", True, now - 60),
        SensorReading("PRW-002", False, now - 60),
        SensorReading("PRW-003", True, now - 1900),  # stale: unknown
    ], now=now)
    features = {f["id"]: f for f in client.get("/api/lots").json["features"]}
    assert set(features) == {"PR-WEST", "GARAGE", "STREET"}
    pr = features["PR-WEST"]["properties"]
    assert (pr["total"], pr["free"], pr["occupied"], pr["unknown"]) == (4, 1, 1, 2)
    assert pr["occupancy"] == 0.5 and pr["status"] == "spacesAvailable"
    assert pr["park_and_ride"]["stops"][0]["lines"] == ["6", "12"]
    assert features["GARAGE"]["properties"]["status"] == "unknown"
    assert features["GARAGE"]["properties"]["occupancy"] is None
    assert features["GARAGE"]["geometry"]["type"] == "Point"


@pytest.mark.parametrize(
    "query, expected",
    [
        ("park_and_ride=true", {"PR-WEST"}),
        ("bbox=12.08,49.01,12.10,49.02", {"GARAGE", "STREET"}),
        ("min_free=1", {"PR-WEST"}),
        ("", {"PR-WEST", "GARAGE", "STREET"}),
    ],
)
def test_lot_list_filters(city, client, query, expected):
    ingest([SensorReading("PRW-001", False)])
    ids = {f["id"] for f in client.get(f"/api/lots?{query}").json["features"]}
    assert ids == expected


@pytest.mark.parametrize("query", ["bbox=1,2,3", "bbox=a,b,c,d", "bbox=3,0,1,1", "min_free=-1",
                                   "min_free=x", "park_and_ride=maybe"])
def test_lot_list_bad_filters(city, client, query):
    response = client.get(f"/api/lots?{query}")
    assert response.status_code == 400
    name = query.split("=")[0]
    message = response.json["message"]
    # The message starts with the parameter's name and then says what is wrong with it.
    assert message.startswith(f"{name}: ") and len(message) > len(name) + 10, message


def test_full_and_almost_full(city, client):
    """The almostFull threshold (90 % of the known bays occupied) crossed from both sides."""
    bays = [f"BIG-{i:02d}" for i in range(30)]
    import_lots({"type": "FeatureCollection", "features": [{
        "type": "Feature", "id": "BIG", "geometry": {"type": "Point", "coordinates": [12.1, 49.0]},
        "properties": {"name": "Big", "bays": bays}}]}, "Europe/Berlin")
    now = time.time()

    def status() -> tuple[float, str]:
        listed = {f["id"]: f for f in client.get("/api/lots").json["features"]}["BIG"]["properties"]
        detail = client.get("/api/lots/BIG").json["properties"]
        assert (listed["occupancy"], listed["status"]) == (detail["occupancy"], detail["status"])
        return listed["occupancy"], listed["status"]

    ingest([SensorReading(b, True, now - 60) for b in bays], now=now)
    assert status() == (1.0, "full")
    ingest([SensorReading(b, False, now - 50) for b in bays[:3]], now=now)  # 27 of 30: at the threshold
    assert status() == (0.9, "almostFull")
    ingest([SensorReading(bays[3], False, now - 40)], now=now)  # 26 of 30: under it
    assert status() == (0.867, "spacesAvailable")
    ingest([SensorReading(bays[3], True, now - 30)], now=now)  # back to 27 of 30
    assert status() == (0.9, "almostFull")
    ingest([SensorReading(bays[0], True, now - 3000)], now=now)  # an older reading changes nothing
    assert status() == (0.9, "almostFull")
    # 26 occupied of 29 known (one bay silent past stale_after): 0.8966, just under
    db.session.execute(update(Bay).where(Bay.id == bays[4]).values(last_ts=now - 1900))
    db.session.commit()
    assert status() == (0.897, "spacesAvailable")


def test_lot_detail_lists_bays(city, client):
    now = time.time()
    ingest([SensorReading("STR-001", True, now - 30, battery=55)], now=now)
    body = client.get("/api/lots/STREET").json
    bays = {b["id"]: b for b in body["properties"]["bays"]}
    assert bays["STR-001"]["status"] == "occupied" and bays["STR-001"]["battery"] == 55
    assert bays["STR-001"]["since"].endswith("+00:00")
    assert bays["STR-002"] == {"id": "STR-002", "status": "unknown", "since": None, "last_seen": None, "battery": None}


def test_unknown_lot_is_404_json(city, client):
    response = client.get("/api/lots/NOPE")
    assert response.status_code == 404
    assert response.json == {"code": 404, "status": "Not Found", "message": "unknown lot: NOPE"}


def test_events_csv_lists_state_changes_in_ts_order(city, client):
    base = 1_790_000_000.0
    ingest([SensorReading("GAR-001", False, base - 100)], now=base + 5000)  # before the range
    ingest([
        SensorReading("GAR-001", False, base + 10),   # repeats the state: no event
        SensorReading("GAR-001", True, base + 20),
        SensorReading("GAR-002", True, base + 15),    # first reading of the bay: an event
        SensorReading("GAR-001", True, base + 30),    # heartbeat
    ], now=base + 5000)
    ingest([SensorReading("GAR-001", False, base + 25)], now=base + 5000)  # late, lands in its place
    response = client.get(f"/api/lots/GARAGE/events.csv?from=2026-09-21T14:13:00Z&to=2026-09-22")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.data.decode().splitlines()
    assert lines[0] == "bay_id,ts,occupied"
    assert lines[1:] == [
        "GAR-002,2026-09-21T14:13:35+00:00,true",
        "GAR-001,2026-09-21T14:13:40+00:00,true",
        "GAR-001,2026-09-21T14:13:45+00:00,false",
        "GAR-001,2026-09-21T14:13:50+00:00,true",
    ]


def test_events_csv_streams_every_change_past_its_first_chunk(city, client):
    """2,400 readings of three bays (a change or a heartbeat each): the answer comes in several
    chunks (one per 1,000 readings read) and holds exactly the changes, in ts then storage order."""
    from parking.timefmt import iso_utc

    base = float(int(time.time()) - 86400)
    bays = ["GAR-001", "GAR-002", "GAR-003"]
    readings = [SensorReading(bays[i % 3], (i // 3) % 4 < 2, base + i) for i in range(2400)]
    for start in range(0, len(readings), 600):
        ingest(readings[start:start + 600], now=base + 3000)
    previous, expected = {}, []
    for r in readings:
        if previous.get(r.bay) != r.occupied:
            expected.append(f"{r.bay},{iso_utc(r.ts)},{'true' if r.occupied else 'false'}")
        previous[r.bay] = r.occupied
    assert 1000 < len(expected) < len(readings)  # heartbeats are no changes
    frm, to = iso_utc(base).replace("+", "%2B"), iso_utc(base + 2400).replace("+", "%2B")
    response = client.get(f"/api/lots/GARAGE/events.csv?from={frm}&to={to}", buffered=False)
    chunks = [chunk for chunk in response.response if chunk]
    response.close()
    assert len(chunks) >= 3
    lines = b"".join(chunks).decode().splitlines()
    assert lines[0] == "bay_id,ts,occupied" and lines[1:] == expected


def test_closed_by_opening_hours(city, client):
    lot = db.session.get(Lot, "GARAGE")
    lot.opening_hours = "Mo-Su 00:00-00:01"  # open one minute a day: closed almost always
    db.session.commit()
    props = client.get("/api/lots/GARAGE").json["properties"]
    now = __import__("datetime").datetime.now(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    expected = "unknown" if (now.hour, now.minute) == (0, 0) else "closed"
    assert props["status"] == expected and props["opening_hours"] == "Mo-Su 00:00-00:01"
